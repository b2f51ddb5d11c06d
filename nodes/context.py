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

__all__ = ["CALLS_CHARS", "MAX_TRACED_CALLS", "WRITES_CHARS", "ProgressListener", "RunContext", "Trace", "TraceEvent"]

ProgressListener = Callable[[str, int, int], None]
"""Told ``(step, done, total)`` while a node works through a known amount of work (a progress bar, say)."""

MAX_TRACED_CALLS = 60
"""Model calls a run's trace keeps in detail (prompt, reply, figures); later ones are only counted on their step."""
CALLS_CHARS = 130_000
"""Characters of JSON the detailed calls of one run may take in all."""
WRITES_CHARS = 130_000
"""Characters of JSON the state writes of one run's steps may take in all (a step's alone is bounded lower).

A live run's record is rewritten every second, so it must stay small: with these, a run of a hundred steps keeps
a record under 400 KB."""


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
    writes: dict[str, Any] | None = None
    """The state fields the step wrote (``end`` events): ``{field: {"before": ..., "after": ...}}`` previewed, with
    ``"merged": true`` where the field's reducer merged ``after`` into it, ``"unchanged": true`` where the step wrote
    the value the field had; ``{"$omitted": n}`` when even the shortest preview did not fit."""
    calls: list[dict[str, Any]] | None = None
    """The node's model calls (``CallRecord.as_dict()``), as many as the run's trace has room for."""
    calls_omitted: int = 0
    """The node's model calls left out of ``calls`` (the run's or the node's budget of records was spent)."""

    def as_dict(self) -> dict[str, Any]:
        event = {"node": self.node, "event": self.event, "started_at": self.started_at, "duration_s": self.duration_s}
        if self.error is not None:
            event["error"] = self.error
        if self.llm is not None:
            event["llm"] = self.llm
        if self.writes is not None:
            event["writes"] = self.writes
        if self.calls is not None:
            event["calls"] = self.calls
        if self.calls_omitted:
            event["calls_omitted"] = self.calls_omitted
        return event


@dataclass
class Trace:
    """The steps of one run, kept in memory and saved to the store when the run ends or fails.

    It also keeps the run's budgets of detail (:data:`MAX_TRACED_CALLS`, :data:`CALLS_CHARS`, :data:`WRITES_CHARS`):
    the engine asks for room before it puts a call's record or a step's writes on an event.
    """

    events: list[TraceEvent] = field(default_factory=list)
    traced_calls: int = 0
    calls_chars: int = 0
    writes_chars: int = 0
    on_step_end: Callable[[str], None] | None = None
    """Told the name of each node whose step ended (a client following the run, say); called in the run's loop."""

    def record(
        self,
        node: str,
        event: str,
        started_at: float,
        duration_s: float,
        error: str | None = None,
        llm: dict[str, Any] | None = None,
        *,
        writes: dict[str, Any] | None = None,
        calls: list[dict[str, Any]] | None = None,
        calls_omitted: int = 0,
    ) -> None:
        self.events.append(TraceEvent(node, event, started_at, duration_s, error, llm, writes, calls, calls_omitted))
        if event == "end" and self.on_step_end is not None:
            self.on_step_end(node)

    def room_for_call(self, chars: int) -> bool:
        """Whether a call record of ``chars`` characters fits the run's budget; if it does, it is counted in."""
        if self.traced_calls >= MAX_TRACED_CALLS or self.calls_chars + chars > CALLS_CHARS:
            return False
        self.traced_calls += 1
        self.calls_chars += chars
        return True

    @property
    def writes_room(self) -> int:
        """Characters left for the writes of the run's later steps."""
        return max(WRITES_CHARS - self.writes_chars, 0)

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
