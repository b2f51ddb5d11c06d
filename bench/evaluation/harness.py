"""The harness: load an evaluation's data, run each system on each item with the same model, measure every attempt.

An :class:`Evaluation` says what its items are (:meth:`~Evaluation.load`, which refuses malformed data naming the
file and the item before any model is called), how a system is set up (:meth:`~Evaluation.prepare`: index a book,
say) and how one system attempts one item (:meth:`~Evaluation.attempt`). The harness runs the items in their order,
every system on an item before the next item, each system in its own namespace of a throwaway SQLite store, so a
system with memory builds it from the earlier items only and no system sees another's memory. Calls and tokens are
counted where requests leave the process (:class:`~mnemoflow.evaluation.meter.MeteredBackend`), so a baseline's
own calls, a graph's and every re-ask count alike.
"""

from __future__ import annotations

import functools
import statistics
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from mnemoflow.errors import ConfigError, LLMOutputError, LLMRequestError, LLMTimeoutError, NodeError, ToolArgumentError
from mnemoflow.evaluation.meter import MeteredBackend, Reading
from mnemoflow.llm.backends import Backend
from mnemoflow.settings import Settings, StoreSettings

if TYPE_CHECKING:
    from mnemoflow.graphs.loader import LoadedGraph
    from mnemoflow.graphs.parts import RunParts
    from mnemoflow.graphs.runner import RunResult
    from mnemoflow.llm.endpoint import Endpoint
    from mnemoflow.nodes.context import ProgressListener

__all__ = ["Attempt", "Bench", "EvalDataError", "EvalOptions", "Evaluation", "Item", "Outcome", "evaluate"]

T = TypeVar("T")

FAILED_ATTEMPT = (NodeError, LLMOutputError, LLMRequestError, LLMTimeoutError, ToolArgumentError)
"""What ends one attempt as a failure (scored 0, the error kept) rather than the whole evaluation: a graph that gave
up, a reply that never validated, a request the server refused (a prompt longer than its context). A model server
that went away, or a store fault, stops the evaluation instead."""


class EvalDataError(ConfigError):
    """Raised when an evaluation's data is malformed; the message names the file and the item."""

    code = "eval-data"


@dataclass(frozen=True)
class EvalOptions:
    """What the command line chose: the quick variant, a cap on items, other data files than the bundled ones."""

    quick: bool = False
    limit: int | None = None
    """At most this many items (the first ones); ``quick`` means :attr:`Evaluation.quick_items`."""
    book: Path | None = None
    questions: Path | None = None
    data: Path | None = None
    """Another data file or folder than the bundled one (scenarios, tasks, repositories, specifications)."""
    seed: int | None = None
    """ExpeRepair: issues of each repository run in the seed phase (None: the evaluation's default)."""
    systems: tuple[str, ...] = ()
    """Run only these of the evaluation's systems, in its order (empty: all of them)."""


@dataclass(frozen=True)
class Item:
    """One thing to attempt: a question, a conversation turn, a task, a bug, a specification."""

    id: str
    data: Any
    group: str = ""
    """What the item belongs to (a question's kind, a task's family, a turn's scenario), for scores by group."""


@dataclass
class Outcome:
    """How one system did on one item: the main score in 0..1, other scores, and what a reader needs to check it."""

    score: float
    scores: dict[str, float] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Attempt:
    """One system on one item, measured."""

    item: Item
    system: str
    outcome: Outcome
    usage: Reading
    seconds: float
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "item": self.item.id,
            "group": self.item.group,
            "system": self.system,
            "score": round(self.outcome.score, 4),
            "scores": {name: round(value, 4) for name, value in self.outcome.scores.items()},
            "calls": self.usage.calls,
            "prompt_tokens": self.usage.prompt_tokens,
            "completion_tokens": self.usage.completion_tokens,
            "seconds": round(self.seconds, 3),
            "detail": self.outcome.detail,
        }
        if self.error is not None:
            entry["error"] = self.error
        return entry


@dataclass
class Bench:
    """What an evaluation works with: the run's parts (a throwaway store, the embedder, the model), the endpoint, a
    scratch folder, and a namespace per system."""

    mechanism: str
    parts: RunParts
    endpoint: Endpoint
    workdir: Path

    @property
    def small_model(self) -> bool:
        """Whether the model is the local server's small one, which the evaluations fit their budgets to."""
        return self.endpoint.kind == "local"

    def namespace(self, system: str) -> str:
        return f"eval-{self.mechanism}-{system}".replace("_", "-")

    async def run(self, graph: LoadedGraph, values: dict[str, Any], *, system: str, thread_id: str | None = None) -> RunResult:
        """Run ``graph`` on ``values`` in ``system``'s namespace (no checkpointer: nothing here resumes)."""
        from mnemoflow.graphs.runner import GraphRunner

        parts = self.parts
        runner = GraphRunner(
            graph, store=parts.store, embedder=parts.embedder, llm=parts.llm, settings=parts.settings, checkpointer=None
        )
        async with runner:
            return await runner.run(values, namespace=self.namespace(system), thread_id=thread_id)


class Evaluation(ABC):
    """One mechanism against its baseline(s). Subclasses set the class variables and implement :meth:`load` and
    :meth:`attempt`; the first of :attr:`systems` is the mechanism."""

    mechanism: ClassVar[str]
    systems: ClassVar[tuple[str, ...]]
    score_name: ClassVar[str]
    """What ``score`` is for this mechanism (``accuracy``, ``1 - stale-answer rate``...)."""
    quick_items: ClassVar[int] = 3

    def __init__(self, options: EvalOptions) -> None:
        self.options = options
        unknown = [system for system in options.systems if system not in self.systems]
        if unknown:
            raise ConfigError(f"{self.mechanism} has no system {', '.join(map(repr, unknown))}; its systems: {', '.join(self.systems)}")

    @property
    def chosen_systems(self) -> tuple[str, ...]:
        """The systems this run compares: those the options name, in the evaluation's order, else all."""
        return tuple(system for system in self.systems if not self.options.systems or system in self.options.systems)

    @abstractmethod
    def load(self) -> list[Item]:
        """Every item, checked; raises :class:`EvalDataError` naming the file and the item of the first problem.
        Called before any model call."""

    def select(self, items: list[Item]) -> list[Item]:
        """The items to run: all of them, the first ``quick_items`` with ``quick``, the first ``limit`` with a limit."""
        limit = self.quick_items if self.options.quick else self.options.limit
        return items if limit is None else items[:limit]

    async def prepare(self, bench: Bench, system: str) -> None:  # noqa: B027 - most evaluations need no set-up
        """Set ``system`` up before its first item (index a book into its namespace, say); measured apart."""

    @abstractmethod
    async def attempt(self, bench: Bench, system: str, item: Item) -> Outcome:
        """``system`` on ``item``. Raising one of :data:`FAILED_ATTEMPT` scores it 0 with the error kept."""

    def failure(self, item: Item, system: str) -> Outcome:
        """The outcome of ``system``'s failed attempt on ``item``: the worst on the main score and on every score
        the item would have had."""
        return Outcome(0.0)

    def score(self, system: str, attempts: list[Attempt]) -> float:
        """``system``'s main score: the mean of its attempts' scores, unless the claim is about some items only."""
        return mean([attempt.outcome.score for attempt in attempts])

    def summarize(self, system: str, attempts: list[Attempt]) -> dict[str, Any]:
        """Scores of ``system`` beyond the per-item means (success by position in the sequence, say)."""
        return {}

    def describe(self) -> dict[str, Any]:
        """What a reader needs to know about the data and budgets, recorded with the result."""
        return {}


async def evaluate(
    evaluation: Evaluation,
    items: list[Item],
    settings: Settings,
    workdir: Path,
    *,
    progress: ProgressListener | None = None,
) -> dict[str, Any]:
    """Run every system of ``evaluation`` on ``items`` with the model ``settings`` name, in a throwaway SQLite store
    under ``workdir``; the result in the shape of :mod:`mnemoflow.evaluation.report`."""
    from mnemoflow.graphs.parts import open_run_parts
    from mnemoflow.llm.endpoint import resolve_endpoint
    from mnemoflow.nodes import load_builtin_nodes

    load_builtin_nodes()
    store = StoreSettings(backend="sqlite", sqlite_path=workdir / "memory.db")
    settings = settings.model_copy(update={"store": store, "llm": settings.llm.model_copy(update={"cache": False})})
    endpoint = resolve_endpoint(settings)
    if endpoint.kind == "offline":
        raise ConfigError("an evaluation on the offline stand-in measures nothing: start the local model or set OPENAI_BASE_URL")
    meters: list[MeteredBackend] = []

    def metered(backend: Backend) -> Backend:
        meters.append(MeteredBackend(backend))
        return meters[-1]

    systems = evaluation.chosen_systems
    attempts: list[Attempt] = []
    setup: dict[str, dict[str, Any]] = {}
    started_at = datetime.now(UTC)
    async with open_run_parts(settings, checkpointer=False, wrap_backend=metered) as parts:
        bench = Bench(evaluation.mechanism, parts, endpoint, workdir)
        meter = meters[0]

        async def measured(work: Callable[[], Awaitable[T]]) -> tuple[T, Reading, float]:
            before, clock = meter.reading, time.perf_counter()
            value = await work()
            return value, meter.reading - before, time.perf_counter() - clock

        total = len(items) * len(systems)
        for system in systems:
            if progress is not None:
                progress(f"{evaluation.mechanism}: setting up {system}", 0, total)
            _, usage, seconds = await measured(functools.partial(evaluation.prepare, bench, system))
            setup[system] = {**_usage(usage), "seconds": round(seconds, 3)}
        for number, item in enumerate(items):
            for offset, system in enumerate(systems):
                if progress is not None:
                    progress(f"{evaluation.mechanism}: {system} on {item.id}", number * len(systems) + offset, total)
                attempts.append(await _attempt(evaluation, bench, system, item, measured))
        if progress is not None:
            progress(evaluation.mechanism, total, total)
    from mnemoflow.evaluation.report import result_of

    return result_of(evaluation, endpoint, settings, started_at, items, attempts, setup)


async def _attempt(
    evaluation: Evaluation,
    bench: Bench,
    system: str,
    item: Item,
    measured: Callable[[Callable[[], Awaitable[Outcome]]], Awaitable[tuple[Outcome, Reading, float]]],
) -> Attempt:
    failure: list[str] = []

    async def work() -> Outcome:
        try:
            return await evaluation.attempt(bench, system, item)
        except FAILED_ATTEMPT as exc:
            failure.append(f"{type(exc).__name__}: {exc}"[:2000])
            failed = evaluation.failure(item, system)
            failed.detail["failed"] = True
            return failed

    outcome, usage, seconds = await measured(work)
    return Attempt(item, system, outcome, usage, seconds, failure[0] if failure else None)


def _usage(reading: Reading) -> dict[str, int]:
    return {"calls": reading.calls, "prompt_tokens": reading.prompt_tokens, "completion_tokens": reading.completion_tokens}


def mean(values: list[float]) -> float:
    """The mean of ``values``, 0 for none."""
    return statistics.fmean(values) if values else 0.0
