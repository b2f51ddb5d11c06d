"""The run context: everything a node may use besides its state, handed to it by the engine.

LangGraph passes it as the runtime context, so nothing is global and a test can build one with other parts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mnemoflow.llm import LLM
from mnemoflow.memory.protocol import Embedder, GraphStore
from mnemoflow.settings import Settings

__all__ = ["ProgressListener", "RunContext", "Trace", "TraceEvent"]

ProgressListener = Callable[[str, int, int], None]
"""Told ``(step, done, total)`` while a node works through a known amount of work (a progress bar, say)."""


@dataclass(slots=True)
class TraceEvent:
    """One step of a run: a node that ended or failed, when it started and how long it took."""

    node: str
    event: str
    """``end`` or ``error``."""
    started_at: float
    """Seconds since the epoch."""
    duration_s: float
    error: str | None = None
    llm: dict[str, Any] | None = None
    """The node's model usage (calls, tokens, retries, cache hits...), when it called the model."""

    def as_dict(self) -> dict[str, Any]:
        event = {"node": self.node, "event": self.event, "started_at": self.started_at, "duration_s": self.duration_s}
        if self.error is not None:
            event["error"] = self.error
        if self.llm is not None:
            event["llm"] = self.llm
        return event


@dataclass
class Trace:
    """The steps of one run, kept in memory and saved to the store when the run ends or fails."""

    events: list[TraceEvent] = field(default_factory=list)

    def record(
        self,
        node: str,
        event: str,
        started_at: float,
        duration_s: float,
        error: str | None = None,
        llm: dict[str, Any] | None = None,
    ) -> None:
        self.events.append(TraceEvent(node, event, started_at, duration_s, error, llm))

    @property
    def steps(self) -> list[str]:
        """Nodes that completed, in order."""
        return [event.node for event in self.events if event.event == "end"]


@dataclass
class RunContext:
    """What a node receives besides its state and config."""

    store: GraphStore
    embedder: Embedder
    llm: LLM
    """The LLM gateway; each node gets its own fork, so its usage is counted apart and added to the run's."""
    settings: Settings
    namespace: str
    """The namespace every memory write and read of this run uses."""
    run_id: str
    thread_id: str
    log: Any
    """A structlog logger bound to the namespace, run id and graph."""
    trace: Trace = field(default_factory=Trace)
    on_progress: ProgressListener | None = None
    """Who wants to hear of progress: the CLI's progress bar; nobody under the server and workers."""

    def progress(self, step: str, done: int, total: int) -> None:
        """Report that ``done`` of ``total`` units of ``step`` are finished."""
        if self.on_progress is not None:
            self.on_progress(step, done, total)
