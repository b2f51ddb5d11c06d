"""Run a checked graph under a thread id with a checkpointer, and keep the run's trace in the store.

A thread whose last run stopped part-way (a crash, a kill, a failed node) resumes from its last completed
step when run again with the same thread id; nothing before that step runs again.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.errors import GraphRecursionError, NodeTimeoutError
from pydantic import ValidationError

from mnemoflow.errors import ConfigError, MnemoflowError, NodeError
from mnemoflow.graphs.compiler import NodeWrapper, compile_graph
from mnemoflow.graphs.loader import LoadedGraph, suggest
from mnemoflow.graphs.outputs import output_values, run_outputs
from mnemoflow.graphs.preview import preview_bounded
from mnemoflow.graphs.settle import LIVE_HEARTBEAT_S, RUN_KIND, STALLED_AFTER_S, process_identity, settle_thread
from mnemoflow.llm import LLM
from mnemoflow.logging import bind_run_context, get_logger
from mnemoflow.memory.protocol import Embedder, GraphStore
from mnemoflow.memory.records import NodeRecord, stable_id
from mnemoflow.nodes.context import ProgressListener, RunContext, Trace
from mnemoflow.nodes.registry import REGISTRY, Registry
from mnemoflow.redaction import redact_urls
from mnemoflow.settings import Settings

if TYPE_CHECKING:
    from mnemoflow.graphs.parts import RunParts

__all__ = [
    "LIVE_HEARTBEAT_S",
    "LIVE_INTERVAL_S",
    "RUN_KIND",
    "STALLED_AFTER_S",
    "GraphRunner",
    "RunResult",
    "check_input",
    "check_preconditions",
    "field_problems",
    "input_problems",
    "run_graph",
    "run_record",
    "step_limit",
]

LIVE_INTERVAL_S = 1.0
"""How often the CLI and the flows refresh a running graph's record (``live_interval``), so the UI follows it."""

INPUT_CHARS = 16_000
"""Characters of JSON a run's record gives its input (previewed: long values folded, vectors summarised)."""
OUTPUT_CHARS = 32_000
"""Characters of JSON a completed run's record gives its outputs."""
_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class RunResult:
    """What a run produced."""

    graph: str
    run_id: str
    thread_id: str
    status: str
    """``completed``; ``failed`` or ``interrupted`` (a cancel, Ctrl-C) only in the saved trace: such a run raises."""
    state: dict[str, Any]
    outputs: dict[str, Any]
    """The graph's declared output fields of ``state`` (every field when it declares none), vectors left out."""
    steps: list[str]
    """Nodes that completed in this run, in order (a resumed run lists only what it ran)."""
    resumed: bool
    duration_s: float
    llm_calls: int = 0
    tokens: int = 0
    llm_usage: dict[str, Any] = field(default_factory=dict)
    """Calls, requests, retries, re-asks, cache hits, tokens and seconds waiting on the model."""
    offline_model: bool = False
    trace: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        resumed = ", resumed" if self.resumed else ""
        offline = " from the offline model" if self.offline_model and self.llm_calls else ""
        return (
            f"{self.graph}: {self.status}{resumed} in {len(self.steps)} steps, {self.duration_s:.2f} s, "
            f"{self.llm_calls} LLM calls{offline}, {self.tokens} tokens (thread {self.thread_id}, run {self.run_id})"
        )


def step_limit(graph: LoadedGraph) -> int:
    """LangGraph's recursion limit for a run: the file's ``max_steps``, or enough for an acyclic graph."""
    return graph.spec.max_steps or 10 + 2 * len(graph.spec.nodes)


def field_problems(
    graph: LoadedGraph, values: Mapping[str, Any], *, state: Mapping[str, Any] | None = None, registry: Registry = REGISTRY
) -> list[tuple[str, str]]:
    """Fields of ``values`` that the graph's state does not have (named with a did-you-mean) or whose value its type
    refuses, as ``(field, message)`` pairs: ``field`` is the top-level field, a place inside its value is named in the
    message (``at 1: ...``), so a form shows each message beside its field. ``state`` holds other values validated
    with them (a checkpoint's, when editing one); fields missing from both are not reported."""
    model = registry.states[graph.spec.state]
    problems: list[tuple[str, str]] = []
    for name in values:
        if name not in model.model_fields:
            hint = suggest(name, model.model_fields)
            problems.append((name, f"not a field of {graph.spec.state}" + (f" ({hint})" if hint else "")))
    known = {name: value for name, value in values.items() if name in model.model_fields}
    try:
        model.model_validate({**(state or {}), **known})
    except ValidationError as exc:
        for error in exc.errors():
            location = [str(part) for part in error["loc"]]
            if error["type"] == "missing" and (not location or location[0] not in known):
                continue
            inside = f"at {'.'.join(location[1:])}: " if len(location) > 1 else ""
            problems.append((location[0] if location else "", f"{inside}{error['msg']} (got {_shown(error.get('input'))})"))
    return problems


def input_problems(graph: LoadedGraph, values: Mapping[str, Any], registry: Registry = REGISTRY) -> list[tuple[str, str]]:
    """What is wrong with an input, as ``(field, message)`` pairs in the order :func:`check_input` lists them: a
    declared input missing, then :func:`field_problems`. No problems, an empty list."""
    missing = [(name, f"required (an input of {graph.spec.name})") for name in graph.spec.input if name not in values]
    return missing + field_problems(graph, values, registry=registry)


def check_input(graph: LoadedGraph, values: Mapping[str, Any], registry: Registry = REGISTRY) -> None:
    """Refuse an input that misses a declared input field, names a field the state does not have, or gives a
    field a value its type refuses: one line per problem (:func:`input_problems`), before anything runs."""
    problems = input_problems(graph, values, registry)
    if problems:
        listed = "\n".join(f"  {name}: {message}" for name, message in problems)
        raise ConfigError(f"input of {graph.spec.name} ({graph.path}) refused:\n{listed}")


async def check_preconditions(
    graph: LoadedGraph, values: Mapping[str, Any], store: GraphStore, namespace: str, registry: Registry = REGISTRY
) -> None:
    """Run the graph's preconditions (``requires``) on the input; the first that fails raises ``PreconditionError``."""
    for name in graph.spec.requires:
        await registry.preconditions[name].function(values, store, namespace)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _error_of(exc: BaseException) -> str:
    """What a failed run's record says went wrong."""
    if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt):
        return "interrupted"
    message = redact_urls(str(exc)) or type(exc).__name__
    return message if isinstance(exc, MnemoflowError) else f"{type(exc).__name__}: {message}"


class GraphRunner:
    """A graph compiled once with its checkpointer and the parts its nodes use, ready to run many times.

    Run records (the traces) are written to the store in batches, like a tracer's batch exporter: a
    failed run's record at once, completed runs' records every ``trace_batch`` runs and when the runner
    is flushed or closed (``async with GraphRunner(...) as runner``). A process that dies loses at most
    the records of its last completed runs, never their memory or checkpoints.

    ``wrap_node`` hands each node's attempts to another executor (see :data:`mnemoflow.graphs.compiler.NodeWrapper`).

    With ``live_interval`` (seconds) a run's record is also written while it runs, with status ``running``
    and the steps so far: at most once per interval when a step has ended, and every ``LIVE_HEARTBEAT_S``
    regardless. The final record is then written at once, so a watcher never sees a finished run as running. A
    process killed mid-run leaves its record ``running``: the next run on its thread, or maintenance once it is
    silent, settles it ``interrupted`` (:mod:`mnemoflow.graphs.settle`).
    ``progress`` hears what nodes report of long work (:meth:`~mnemoflow.nodes.context.RunContext.progress`).
    """

    def __init__(
        self,
        graph: LoadedGraph,
        *,
        store: GraphStore,
        embedder: Embedder,
        llm: LLM,
        settings: Settings,
        checkpointer: BaseCheckpointSaver[Any] | None,
        registry: Registry = REGISTRY,
        trace_batch: int = 32,
        wrap_node: NodeWrapper | None = None,
        live_interval: float | None = None,
        progress: ProgressListener | None = None,
    ) -> None:
        self.graph = graph
        self.store = store
        self.embedder = embedder
        self.llm = llm
        self.settings = settings
        self.checkpointer = checkpointer
        self.registry = registry
        self.compiled = compile_graph(graph, checkpointer=checkpointer, registry=registry, wrap_node=wrap_node)
        self.trace_batch = trace_batch
        self.live_interval = live_interval
        self.progress = progress
        self._unsaved: list[NodeRecord] = []
        self._log = get_logger("mnemoflow.run").bind(graph=graph.spec.name)

    @classmethod
    def from_parts(cls, graph: LoadedGraph, parts: RunParts, **options: Any) -> GraphRunner:
        """A runner over the parts :func:`~mnemoflow.graphs.parts.open_run_parts` opened; ``options`` as for the
        constructor (``wrap_node``, ``live_interval``, ``progress``...)."""
        return cls(
            graph,
            store=parts.store,
            embedder=parts.embedder,
            llm=parts.llm,
            settings=parts.settings,
            checkpointer=parts.checkpointer,
            **options,
        )

    async def __aenter__(self) -> GraphRunner:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.flush()

    async def flush(self) -> None:
        """Write the run records not yet in the store."""
        unsaved, self._unsaved = self._unsaved, []
        if unsaved:
            await self.store.upsert_nodes(unsaved)

    async def resumable(self, thread_id: str) -> bool:
        """Whether the thread's last checkpoint has tasks left to run, so that ``run(None, thread_id=...)`` resumes it
        (a failed, killed or cancelled run; a fork). False for an unknown thread or without a checkpointer.

        A checkpoint's ``next`` leaves out tasks whose writes were saved, so a process killed after a node's writes
        were saved but before the next checkpoint (checkpoints are saved while the next step runs) would look
        finished; its ``tasks`` still list them, and resuming applies the saved writes instead of running the node
        again.
        """
        if self.checkpointer is None:
            return False
        snapshot = await self.compiled.aget_state({"configurable": {"thread_id": thread_id}})
        return bool(snapshot.next or snapshot.tasks)

    async def _take_over(self, namespace: str, thread_id: str, run_id: str, log: Any) -> list[str]:
        """Settle the thread's dead and interrupted runs as taken over by run ``run_id``
        (:func:`~mnemoflow.graphs.settle.settle_thread`); their ids, for its record's ``resumes``. A store failing
        here costs the links, not the run."""
        try:
            resumes = await settle_thread(self.store, namespace, thread_id, resumed_by=run_id)
        except MnemoflowError as exc:
            log.warning("run.settle_failed", error=str(exc))
            return []
        if resumes:
            log.info("run.settled", runs=resumes)
        return resumes

    async def _invoke(self, values: dict[str, Any] | None, config: RunnableConfig, context: RunContext) -> dict[str, Any]:
        graph = self.graph
        try:
            state: dict[str, Any] | None = await self.compiled.ainvoke(values, config, context=context)
        except GraphRecursionError as exc:
            raise NodeError(
                f"{graph.spec.name} took more than {step_limit(graph)} steps (max_steps); the loop did not exit"
            ) from exc
        except NodeTimeoutError as exc:
            context.trace.record(exc.node, "error", time.time() - exc.timeout, exc.timeout, f"timed out after {exc.timeout} s")
            raise NodeError(f"node {exc.node!r} of {graph.spec.name} timed out after {exc.timeout} s (timeout)") from exc
        return dict(state or {})

    async def run(
        self,
        values: dict[str, Any] | None,
        *,
        namespace: str,
        thread_id: str | None = None,
        annotations: Mapping[str, str] | None = None,
        run_id: str | None = None,
        progress: ProgressListener | None = None,
        on_step_end: Callable[[str], None] | None = None,
    ) -> RunResult:
        """Run (or resume) on ``thread_id``; a new thread id is made when none is given.

        The input is checked first (:func:`check_input`), then the graph's preconditions (``requires``); a failure
        of either raises before the first step, the latter with a failed run record that carries its error, as
        every failed run's record does. ``annotations`` (a Prefect flow run's id and link...) are kept on the
        record. ``run_id`` names the run (1 to 64 letters, digits, ``_`` or ``-``; a caller that must link to the
        run before it starts chooses it), else a new one is made. Without a checkpointer every run starts afresh
        and nothing can resume. ``progress`` hears this run's progress instead of the runner's listener, and
        ``on_step_end`` the name of each node whose step ended (a server relaying one request's run to its client).

        The record keeps the ``input`` previewed (:func:`~mnemoflow.graphs.preview.preview_bounded`; null for a
        resumed run, which takes no input and carries on from the thread's checkpoint) and, once completed, the
        ``outputs`` previewed the same way.

        On a named thread, before the first step, the thread's earlier runs this run takes over are settled
        (:func:`~mnemoflow.graphs.settle.settle_thread`): a ``running`` record whose process is gone (or silent for
        ``STALLED_AFTER_S``) becomes ``interrupted``, and each such run and each ``interrupted`` one not yet linked
        gets ``resumed_by`` this run; this run's record lists them in ``resumes``.

        Raises:
            ConfigError: ``run_id`` is malformed, or the input is refused (:func:`check_input`).
        """
        graph = self.graph
        if run_id is not None and not _RUN_ID.fullmatch(run_id):
            raise ConfigError(f"run id {run_id!r} refused: give 1 to 64 letters, digits, '_' or '-'")
        run_id = run_id or uuid.uuid4().hex[:16]
        config: RunnableConfig = {
            "configurable": {"thread_id": thread_id or uuid.uuid4().hex},
            "recursion_limit": step_limit(graph),
        }
        # only a thread the caller names can have a run to resume, or earlier runs to take over
        named = thread_id is not None
        resumed = thread_id is not None and await self.resumable(thread_id)
        thread_id = str(config["configurable"]["thread_id"])
        if not resumed:
            check_input(graph, values or {}, self.registry)
        log = self._log.bind(thread_id=thread_id)
        context = RunContext(
            store=self.store,
            embedder=self.embedder,
            llm=self.llm.fork(),
            settings=self.settings,
            namespace=namespace,
            run_id=run_id,
            thread_id=thread_id,
            log=log,
            on_progress=progress or self.progress,
            trace=Trace(on_step_end=on_step_end),
        )
        started, started_at = time.perf_counter(), time.time()
        status, error = "failed", ""
        shown_input = None if resumed else preview_bounded(values or {}, INPUT_CHARS)
        shown_outputs: Any = None
        resumes = await self._take_over(namespace, thread_id, run_id, log) if named else []

        def record(status: str) -> NodeRecord:
            trace = [event.as_dict() for event in context.trace.events]
            duration = time.perf_counter() - started
            usage = context.llm.usage.as_dict()
            properties = {"error": error, "annotations": dict(annotations or {}), "input": shown_input, "resumes": resumes}
            if status == "completed":
                properties["outputs"] = shown_outputs
            return run_record(
                namespace, graph, run_id, thread_id, status, resumed, started_at, duration, trace, usage, properties
            )

        finished = asyncio.Event()
        publisher = asyncio.create_task(self._publish_live(record, context, finished)) if self.live_interval else None
        with bind_run_context(namespace=namespace, run_id=run_id):
            log.debug("run.start", resumed=resumed)
            try:
                if not resumed:
                    await check_preconditions(graph, values or {}, self.store, namespace, self.registry)
                state = await self._invoke(None if resumed else values, config, context)
                model = self.registry.states[graph.spec.state]
                shown_outputs = preview_bounded(output_values(graph, state, model), OUTPUT_CHARS)
                status = "completed"
            except BaseException as exc:
                error = _error_of(exc)
                if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt):
                    status = "interrupted"  # cut off, not failed: its thread resumes where it stopped
                raise
            finally:
                finished.set()
                if publisher is not None:
                    await publisher  # never cancelled mid-write, so a "running" write cannot land after the final one
                final = record(status)
                duration, trace, usage = final.properties["duration_s"], final.properties["events"], final.properties["llm"]
                self._unsaved.append(final)
                if status != "completed" or publisher is not None or len(self._unsaved) >= self.trace_batch:
                    await self.flush()
                steps = context.trace.steps
                log.info("run.end", status=status, resumed=resumed, steps=len(steps), seconds=round(duration, 3))
        return RunResult(
            graph=graph.spec.name,
            run_id=run_id,
            thread_id=thread_id,
            status=status,
            state=state,
            outputs=run_outputs(graph, state, self.registry.states[graph.spec.state]),
            steps=steps,
            resumed=resumed,
            duration_s=duration,
            llm_calls=context.llm.usage.calls,
            tokens=context.llm.usage.tokens,
            llm_usage=usage,
            offline_model=self.llm.offline,
            trace=trace,
        )

    async def _publish_live(self, record: Callable[[str], NodeRecord], context: RunContext, finished: asyncio.Event) -> None:
        """Until the run has finished, write its record whenever steps have ended since the last write."""
        assert self.live_interval is not None
        written, written_at = -1, 0.0
        while not finished.is_set():
            if len(context.trace.events) != written or time.monotonic() - written_at >= LIVE_HEARTBEAT_S:
                written, written_at = len(context.trace.events), time.monotonic()
                try:
                    await self.store.upsert_nodes([record("running")])
                except MnemoflowError as exc:  # a watcher's view is not worth failing the run for
                    context.log.warning("run.live_record_failed", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(finished.wait(), self.live_interval)


async def run_graph(
    graph: LoadedGraph,
    values: dict[str, Any] | None,
    *,
    store: GraphStore,
    embedder: Embedder,
    llm: LLM,
    settings: Settings,
    checkpointer: BaseCheckpointSaver[Any] | None,
    namespace: str,
    thread_id: str | None = None,
    registry: Registry = REGISTRY,
    live_interval: float | None = None,
) -> RunResult:
    """Compile ``graph``, run it once and save its run record (see :class:`GraphRunner` for many runs)."""
    async with GraphRunner(
        graph,
        store=store,
        embedder=embedder,
        llm=llm,
        settings=settings,
        checkpointer=checkpointer,
        registry=registry,
        live_interval=live_interval,
    ) as runner:
        return await runner.run(values, namespace=namespace, thread_id=thread_id)


def run_record(
    namespace: str,
    graph: LoadedGraph,
    run_id: str,
    thread_id: str,
    status: str,
    resumed: bool,
    started_at: float,
    duration: float,
    trace: list[dict[str, Any]],
    llm_usage: dict[str, Any],
    extra: dict[str, Any],
) -> NodeRecord:
    """The record a run keeps of itself: its graph, thread, status, timing, steps (``trace``), model usage, the
    process writing it (``process``: how another process tells a dead run from a live one, see
    :func:`~mnemoflow.graphs.settle.process_gone`), ``resumed_by`` (empty: a run that takes its thread over once it has
    stopped fills it in, :mod:`~mnemoflow.graphs.settle`) and ``extra`` properties (error, annotations, input, outputs,
    ``resumes``)."""
    return NodeRecord(
        id=stable_id(namespace, RUN_KIND, run_id),
        namespace=namespace,
        kind=RUN_KIND,
        text=f"{graph.spec.name} {status}",
        properties={
            "graph": graph.spec.name,
            "graph_version": graph.spec.version,
            "run_id": run_id,
            "thread_id": thread_id,
            "status": status,
            "resumed": resumed,
            "duration_s": round(duration, 6),
            "started_at": round(started_at, 6),
            "recorded_at": round(time.time(), 6),
            "process": process_identity(),
            "resumed_by": "",
            "steps": sum(event["event"] == "end" for event in trace),
            "events": trace,
            "llm": llm_usage,
            **extra,
        },
    )
