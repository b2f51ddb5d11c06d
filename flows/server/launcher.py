"""Runs started, resumed and forked from the UI: in the server's own process, or as Prefect deployment runs.

The launcher owns what those runs share: the run parts opened with the app (store, model gateway, checkpointer),
one :class:`~mnemoflow.graphs.runner.GraphRunner` per library graph, and the asyncio tasks of the runs under way.
At most ``max_runs`` run at once; past that a start is refused (:class:`LaunchError`, 429) rather than queued, so
nobody waits on a run that has not started. A run's id is chosen here and a first record (``running``, no steps) is
written before its task starts, so its page opens at once; the runner then keeps the record live and writes the
final one. When the app stops, the runs under way are cancelled: the runner records each as interrupted, and its
thread resumes from its last checkpoint.

When ``PREFECT_API_URL`` is set and the graph is deployed (``run_graph/<graph>``, as ``prefect.yaml`` deploys every
library graph), a start creates a flow run of the deployment instead; its worker makes the run's id, so only the
thread is known here.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL

from mnemoflow.errors import ConfigError, MnemoflowError, PreconditionError
from mnemoflow.flows.server.hooks.trigger import TriggerRefused, TriggerUnavailable, create_flow_run
from mnemoflow.graphs import GraphRunner, library_graphs, load_graph
from mnemoflow.graphs.loader import LoadedGraph
from mnemoflow.graphs.parts import RunParts
from mnemoflow.graphs.runner import LIVE_INTERVAL_S, RUN_KIND, STALLED_AFTER_S, input_problems, run_record
from mnemoflow.graphs.threads import CheckpointView, edit_problems, fork_thread, thread_checkpoints
from mnemoflow.memory.names import validate_namespace
from mnemoflow.memory.records import NodeRecord, stable_id
from mnemoflow.nodes import import_node_modules, load_builtin_nodes
from mnemoflow.nodes.registry import REGISTRY, Registry
from mnemoflow.redaction import redact_urls

__all__ = ["LaunchError", "Launched", "RunLauncher", "RunRef", "new_run_id"]


PREFECT_TIMEOUT_S = 10.0
"""How long a start waits on the Prefect API to say whether a graph is deployed."""


class LaunchError(MnemoflowError):
    """A start, resume or fork refused: ``status`` is the HTTP status that says why, ``fields`` names the input fields
    at fault (field -> message) when the problem is theirs."""

    code = "launch"

    def __init__(self, status: int, message: str, fields: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.fields = dict(fields or {})


@dataclass(frozen=True)
class Launched:
    """A run the launcher started (or handed to Prefect)."""

    run_id: str | None
    """``None`` for a Prefect flow run: its worker makes the run's id."""
    thread_id: str
    namespace: str
    prefect_flow_run_id: str | None = None


@dataclass(frozen=True)
class RunRef:
    """What a resume or a fork needs of an earlier run: its graph and thread, from its record."""

    run_id: str
    namespace: str
    graph: str
    thread_id: str
    status: str
    recorded_at: float | None


def new_run_id() -> str:
    """A run id as the runner makes them: 16 hex digits."""
    return uuid.uuid4().hex[:16]


@dataclass
class _Graph:
    loaded: LoadedGraph
    modified: float
    runner: GraphRunner


@dataclass
class _Running:
    thread_id: str
    task: asyncio.Task[None] | None = None
    """``None`` until the run's first record is written."""


@dataclass
class RunLauncher:
    """Starts, resumes and forks runs of the library's graphs over ``parts`` (opened with a checkpointer)."""

    parts: RunParts
    max_runs: int
    """Runs at once in this process (``MNEMOFLOW_UI_MAX_RUNS``)."""
    registry: Registry = REGISTRY
    _graphs: dict[str, _Graph] = field(default_factory=dict, init=False)
    _running: dict[str, _Running] = field(default_factory=dict, init=False)
    """By run id: the runs under way (or about to start), and the threads they hold."""
    _nodes_loaded: bool = field(default=False, init=False)

    # -- graphs ----------------------------------------------------------------------------------------------

    def graph(self, name: str) -> LoadedGraph:
        """The library graph ``name`` (reloaded when its file changed); 404 when the library has none."""
        return self._graph(name).loaded

    def _graph(self, name: str) -> _Graph:
        path = next((path for path in library_graphs() if path.stem == name), None)
        if path is None:
            raise LaunchError(404, f"no graph named {name!r} in the library")
        modified = path.stat().st_mtime
        cached = self._graphs.get(name)
        if cached is not None and cached.modified == modified:
            return cached
        try:
            self._load_nodes()
            loaded = load_graph(path)
        except MnemoflowError as exc:
            raise LaunchError(500, f"graph {name!r} does not load: {exc}") from exc
        runner = GraphRunner.from_parts(loaded, self.parts, registry=self.registry, live_interval=LIVE_INTERVAL_S)
        self._graphs[name] = _Graph(loaded, modified, runner)
        return self._graphs[name]

    def _load_nodes(self) -> None:
        if not self._nodes_loaded:
            load_builtin_nodes()
            import_node_modules(self.parts.settings.node_module_names)
            self._nodes_loaded = True

    async def deployment(self, graph: str) -> str | None:
        """The Prefect deployment a start of ``graph`` creates a flow run of (``run_graph/<graph>``), or ``None`` when
        ``PREFECT_API_URL`` is unset or the graph is not deployed; 503 when the Prefect API does not answer."""
        if not PREFECT_API_URL.value():
            return None
        name = f"run_graph/{graph}"
        try:
            async with get_client() as client:
                await asyncio.wait_for(client.read_deployment_by_name(name), PREFECT_TIMEOUT_S)
        except ObjectNotFound:
            return None
        except Exception as exc:  # unreachable, timed out, or a reply that is not Prefect's
            where = redact_urls(str(PREFECT_API_URL.value()))
            raise LaunchError(
                503,
                f"the Prefect API at {where} (PREFECT_API_URL) did not answer: {type(exc).__name__}: {redact_urls(str(exc))[:300]}",
            ) from exc
        return name

    # -- runs ------------------------------------------------------------------------------------------------

    @property
    def running(self) -> int:
        """Runs under way in this process."""
        return len(self._running)

    async def start(self, graph: str, values: Mapping[str, Any], namespace: str, thread_id: str | None = None) -> Launched:
        """Start ``graph`` on ``values`` (checked first: 422 naming each field at fault, a failed precondition too) in
        ``namespace``, on ``thread_id`` or a new thread; as a flow run of its Prefect deployment when there is one."""
        loaded = self.graph(graph)
        namespace = _namespace(namespace)
        problems = _by_field(input_problems(loaded, values, self.registry))
        if problems:
            raise LaunchError(422, f"the input of {graph} was refused: {len(problems)} field(s) to fix", problems)
        if thread_id is not None and self._thread_running(thread_id):
            message = f"thread {thread_id} is running in this server: wait for its run to end, or start on another thread"
            raise LaunchError(409, message, {"thread_id": message})
        if thread_id is not None and await self._graph(graph).runner.resumable(thread_id):
            message = f"thread {thread_id} has a run to finish: resume it from that run's page, or start on another thread"
            raise LaunchError(409, message, {"thread_id": message})
        await self._check_preconditions(loaded, values, namespace)
        thread_id = thread_id or uuid.uuid4().hex
        deployment = await self.deployment(graph)
        if deployment is not None:
            return await self._start_on_prefect(deployment, values, namespace, thread_id)
        return await self._launch(loaded, dict(values), namespace, thread_id, {})

    async def resume(self, run_id: str, namespace: str) -> Launched:
        """Run the rest of the thread of run ``run_id``, from its last checkpoint: 404 for an unknown run, 409 when the
        thread has nothing left to run or is running."""
        ref = await self.run_ref(run_id, namespace)
        graph = self._graph_of(ref)
        self._refuse_if_live(ref)
        if self._thread_running(ref.thread_id):
            raise LaunchError(409, f"thread {ref.thread_id} is running in this server: wait for its run to end")
        if not await graph.runner.resumable(ref.thread_id):
            raise LaunchError(409, f"thread {ref.thread_id} of run {run_id} has nothing left to run: its last run finished")
        return await self._launch(graph.loaded, None, ref.namespace, ref.thread_id, {"resumed_from_run": run_id})

    async def checkpoints(self, run_id: str, namespace: str) -> tuple[LoadedGraph, list[CheckpointView]]:
        """The graph of run ``run_id`` and the checkpoints of its thread, oldest first."""
        ref = await self.run_ref(run_id, namespace)
        graph = self._graph_of(ref)
        return graph.loaded, await thread_checkpoints(graph.runner, ref.thread_id)

    async def fork(self, run_id: str, namespace: str, checkpoint_id: str, edits: Mapping[str, Any]) -> Launched:
        """Copy the thread of run ``run_id`` at ``checkpoint_id`` into a new thread with ``edits`` applied (as the step
        that made the checkpoint would have written them), and run the rest of the new thread. Bad edits are a 422
        naming each field, an unknown checkpoint a 422 on ``checkpoint_id``; a checkpoint that cannot be forked (a
        run's input, a run's end) a 422 that says why."""
        ref = await self.run_ref(run_id, namespace)
        graph = self._graph_of(ref)
        found = await thread_checkpoints(graph.runner, ref.thread_id)
        chosen = next((view for view in found if view.checkpoint_id == checkpoint_id), None)
        if chosen is None:
            message = f"the thread of run {run_id} has no checkpoint {checkpoint_id!r}"
            raise LaunchError(422, message, {"checkpoint_id": message})
        problems = _by_field(edit_problems(graph.loaded, edits, chosen.values, self.registry))
        if problems:
            raise LaunchError(422, f"the edits were refused: {len(problems)} field(s) to fix", problems)
        try:
            thread = await fork_thread(graph.runner, ref.thread_id, checkpoint_id, dict(edits))
        except ConfigError as exc:
            raise LaunchError(422, str(exc)) from exc
        annotations = {"forked_from_run": run_id, "forked_from_thread": ref.thread_id, "forked_from_checkpoint": checkpoint_id}
        return await self._launch(graph.loaded, None, ref.namespace, thread, annotations)

    async def run_ref(self, run_id: str, namespace: str) -> RunRef:
        """What the record of run ``run_id`` says of its graph and thread; 404 when there is no such run."""
        namespace = _namespace(namespace)
        [node] = await self.parts.store.get_nodes(namespace, [stable_id(namespace, RUN_KIND, run_id)])
        if node is None or node.kind != RUN_KIND:
            raise LaunchError(404, f"no run {run_id!r} in namespace {namespace!r}")
        properties = node.properties
        graph, thread_id = str(properties.get("graph") or ""), str(properties.get("thread_id") or "")
        if not graph or not thread_id:
            raise LaunchError(409, f"run {run_id!r} has no graph or thread on its record: there is nothing to go on from")
        recorded_at = properties.get("recorded_at")
        recorded = float(recorded_at) if isinstance(recorded_at, int | float) and not isinstance(recorded_at, bool) else None
        return RunRef(run_id, namespace, graph, thread_id, str(properties.get("status", "")), recorded)

    def _graph_of(self, ref: RunRef) -> _Graph:
        """The library graph a run ran; 409 when the library has none of that name (a graph file run with the CLI)."""
        try:
            return self._graph(ref.graph)
        except LaunchError as exc:
            if exc.status != 404:
                raise
            raise LaunchError(
                409,
                f"run {ref.run_id} ran graph {ref.graph!r}, which is not in the library: resume or fork it where it ran "
                f"(mnemoflow run <graph file> --thread {ref.thread_id})",
            ) from exc

    def _thread_running(self, thread_id: str) -> bool:
        """Whether a run of this server holds ``thread_id`` (threads are global: checkpoints know no namespace)."""
        return any(run.thread_id == thread_id for run in self._running.values())

    def _refuse_if_live(self, ref: RunRef) -> None:
        """409 for a run whose record says it is running and was written lately (in another process, perhaps)."""
        if ref.status == "running" and ref.recorded_at is not None and time.time() - ref.recorded_at < STALLED_AFTER_S:
            raise LaunchError(
                409,
                f"run {ref.run_id} is still running (its record changed {time.time() - ref.recorded_at:.0f} s ago); if its "
                f"process died, it can be resumed once its record is {STALLED_AFTER_S:.0f} s old",
            )

    async def _check_preconditions(self, graph: LoadedGraph, values: Mapping[str, Any], namespace: str) -> None:
        """The graph's preconditions (``requires``), as the runner checks them; a failure is a 422 on the field the
        precondition reads when it reads one (a book not indexed: ``book_id``)."""
        for name in graph.spec.requires:
            definition = self.registry.preconditions[name]
            try:
                await definition.function(values, self.parts.store, namespace)
            except PreconditionError as exc:
                fields = dict.fromkeys(definition.reads, str(exc)) if len(definition.reads) == 1 else {}
                raise LaunchError(422, str(exc), fields) from exc

    async def _start_on_prefect(self, deployment: str, values: Mapping[str, Any], namespace: str, thread_id: str) -> Launched:
        parameters = {"input": dict(values), "thread_id": thread_id, "namespace": namespace}
        try:
            flow_run_id = await create_flow_run(
                deployment, parameters, idempotency_key=f"ui-{uuid.uuid4().hex}", tags=["mnemoflow", "ui"]
            )
        except TriggerRefused as exc:
            raise LaunchError(422, str(exc)) from exc
        except TriggerUnavailable as exc:
            raise LaunchError(503, str(exc)) from exc
        self.parts.log.info("ui.run.prefect", deployment=deployment, thread_id=thread_id, flow_run_id=flow_run_id)
        return Launched(None, thread_id, namespace, flow_run_id)

    async def _launch(
        self, graph: LoadedGraph, values: dict[str, Any] | None, namespace: str, thread_id: str, annotations: dict[str, str]
    ) -> Launched:
        """Claim a slot and the thread, write the run's first record, then run it in a task of its own."""
        if self.running >= self.max_runs:
            raise LaunchError(
                429,
                f"{self.max_runs} runs started from the UI are under way, the most this server runs at once "
                "(MNEMOFLOW_UI_MAX_RUNS): try again when one has ended",
            )
        if self._thread_running(thread_id):
            raise LaunchError(409, f"thread {thread_id} is running in this server: wait for its run to end")
        run_id = new_run_id()
        runner = self._graph(graph.spec.name).runner
        running = self._running[run_id] = _Running(thread_id)  # the slot and the thread, before any wait
        try:
            await self.parts.store.upsert_nodes(
                [_first_record(graph, namespace, run_id, thread_id, annotations, resumed=values is None)]
            )
        except BaseException:
            del self._running[run_id]
            raise
        running.task = asyncio.create_task(
            self._run(runner, values, namespace, thread_id, run_id, annotations), name=f"run-{run_id}"
        )
        running.task.add_done_callback(lambda _: self._running.pop(run_id, None))
        self.parts.log.info("ui.run.start", graph=graph.spec.name, run_id=run_id, thread_id=thread_id, resumed=values is None)
        return Launched(run_id, thread_id, namespace)

    async def _run(
        self,
        runner: GraphRunner,
        values: dict[str, Any] | None,
        namespace: str,
        thread_id: str,
        run_id: str,
        annotations: dict[str, str],
    ) -> None:
        """One run, in its own task: the runner records how it ends (a cancel as interrupted); a failure or a cancel
        before the runner's first record replaces the launcher's, so no run stays ``running`` for ever."""
        try:
            await runner.run(values, namespace=namespace, thread_id=thread_id, annotations=annotations, run_id=run_id)
        except asyncio.CancelledError:
            await self._fail_unstarted(runner.graph, namespace, run_id, thread_id, annotations, "interrupted")
            raise
        except MnemoflowError as exc:
            self.parts.log.info("ui.run.failed", run_id=run_id, error=str(exc))
            await self._fail_unstarted(runner.graph, namespace, run_id, thread_id, annotations, str(exc))
        except Exception as exc:  # a background task has no caller to raise to: log it, keep the server up
            self.parts.log.exception("ui.run.crashed", run_id=run_id)
            await self._fail_unstarted(runner.graph, namespace, run_id, thread_id, annotations, f"{type(exc).__name__}: {exc}")

    async def _fail_unstarted(
        self, graph: LoadedGraph, namespace: str, run_id: str, thread_id: str, annotations: dict[str, str], error: str
    ) -> None:
        try:
            [node] = await self.parts.store.get_nodes(namespace, [stable_id(namespace, RUN_KIND, run_id)])
            if node is not None and node.properties.get("status") == "running" and not node.properties.get("events"):
                failed = _first_record(
                    graph, namespace, run_id, thread_id, annotations, resumed=bool(node.properties.get("resumed")), error=error
                )
                await self.parts.store.upsert_nodes([failed])
        except MnemoflowError as exc:
            self.parts.log.warning("ui.run.record_failed", run_id=run_id, error=str(exc))

    async def close(self) -> None:
        """Cancel the runs under way and wait for the runner to record them as interrupted; write pending records."""
        tasks = [run.task for run in self._running.values() if run.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for graph in self._graphs.values():
            try:
                await graph.runner.flush()
            except MnemoflowError as exc:
                self.parts.log.warning("ui.run.flush_failed", graph=graph.loaded.spec.name, error=str(exc))


def _by_field(problems: list[tuple[str, str]]) -> dict[str, str]:
    """Problems as a form shows them: the first message per top-level field; a value inside a field (``notes.0``)
    is that field's problem, its place named in the message."""
    fields: dict[str, str] = {}
    for name, message in problems:
        field_name, _, inside = name.partition(".")
        fields.setdefault(field_name, f"at {inside}: {message}" if inside else message)
    return fields


def _namespace(namespace: str) -> str:
    try:
        return validate_namespace(namespace)
    except MnemoflowError as exc:
        raise LaunchError(422, str(exc), {"namespace": str(exc)}) from exc


def _first_record(
    graph: LoadedGraph,
    namespace: str,
    run_id: str,
    thread_id: str,
    annotations: dict[str, str],
    *,
    resumed: bool,
    error: str = "",
) -> NodeRecord:
    """The record of a run before the runner writes its own: ``running`` with no steps yet, or ``failed`` with
    ``error`` when the run ended before the runner wrote anything. ``resumed``: the run goes on from a checkpoint."""
    now = time.time()
    status = "failed" if error else "running"
    extra = {"error": error, "annotations": dict(annotations)}
    return run_record(namespace, graph, run_id, thread_id, status, resumed, now, 0.0, [], {}, extra)
