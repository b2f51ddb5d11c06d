"""The ``run_graph`` flow: load, check, compile and run a graph file, each node a Prefect task (or, with
``MNEMOFLOW_PREFECT_TASKS=graph``, every node in the graph's flow run: see :func:`mnemoflow.flows.tasks.node_wrapper`).

``run_graph`` checks the graph and the input, then runs the graph in a subflow named after it, whose
retries come from the graph file's ``retry`` (``max_attempts``, ``delay``). The thread id defaults to the
``run_graph`` flow run's id, so a retried subflow, or the same flow run rescheduled after its worker died,
resumes from the last checkpoint instead of starting over.

Both flows return the run's summary with the graph's ``outputs`` and keep it as their result, as JSON in Prefect's
result storage (``$PREFECT_HOME/storage`` unless configured), so the answer can be read back from the flow run.
The run's record in the store names the subflow run and links to it in Prefect's UI. A run that fails publishes its
failure (the step, the error, the steps done) as its report.

After a crash: when the automation of ``mnemoflow prefect setup`` reschedules a run whose worker died, Prefect takes
the dead attempt's subflow run back and runs it again; the task runs the dead attempt left unfinished in it are
marked Crashed before it does. A run rescheduled more than ``MNEMOFLOW_PREFECT_MAX_RESCHEDULES`` times ends Failed
instead of starting again (:class:`RescheduleLimitError`); its thread keeps its last checkpoint.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
from prefect import flow, get_client
from prefect.artifacts import acreate_markdown_artifact
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
    TaskRunFilter,
    TaskRunFilterState,
    TaskRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.context import FlowRunContext
from prefect.states import Crashed
from prefect.utilities.urls import url_for

from mnemoflow.errors import ConfigError, MnemoflowError, StoreError
from mnemoflow.flows.artifacts import artifact_key, failure_report, run_page_url, run_report
from mnemoflow.flows.budget import model_slot
from mnemoflow.flows.resources import Backend, flow_settings
from mnemoflow.flows.setup import reschedules
from mnemoflow.flows.tasks import node_wrapper
from mnemoflow.graphs import GraphRunner, load_graph
from mnemoflow.graphs.loader import LoadedGraph
from mnemoflow.graphs.parts import open_run_parts
from mnemoflow.graphs.runner import LIVE_INTERVAL_S, RUN_KIND, check_input, check_preconditions
from mnemoflow.logging import get_logger
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import stable_id
from mnemoflow.settings import Settings

__all__ = [
    "ABANDONED",
    "RescheduleLimitError",
    "execute_graph",
    "prefect_annotations",
    "publish_failure",
    "read_files",
    "run_graph",
    "settle_dead_attempt",
    "start_graph_run",
]

UNFINISHED = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.PAUSED, StateType.CANCELLING]
ABANDONED = "its worker died: the flow run was rescheduled and resumed the graph from its last checkpoint"
"""The message of a task run a dead attempt left unfinished, once it is marked Crashed."""


class RescheduleLimitError(MnemoflowError):
    """A run whose worker died was rescheduled more often than ``MNEMOFLOW_PREFECT_MAX_RESCHEDULES`` allows."""

    code = "reschedule-limit"


def _flow_run_id() -> str:
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        raise RuntimeError("not inside a Prefect flow run")
    return str(context.flow_run.id)


def prefect_annotations() -> dict[str, str]:
    """What a run record keeps of the flow run it runs in: its id and, when Prefect's UI address is known
    (``PREFECT_UI_URL``, by default the API's address without ``/api``), a link to it there."""
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return {}
    flow_run_id = str(context.flow_run.id)
    url = url_for("flow-run", obj_id=flow_run_id)
    return {"prefect_flow_run_id": flow_run_id, **({"prefect_flow_run_url": url} if url else {})}


async def publish_failure(
    loaded: LoadedGraph, error: str, *, record: Mapping[str, Any] | None = None, run_page: str | None = None
) -> None:
    """Publish a failed run's report (:func:`~mnemoflow.flows.artifacts.failure_report`) under the key of its
    graph's reports. A server that cannot take it is logged, not raised: the run's own error must stay its error."""
    report = failure_report(loaded, error, record=record, run_page=run_page)
    try:
        await acreate_markdown_artifact(report, key=artifact_key(loaded), description=f"{loaded.spec.name}: failed")
    except httpx.HTTPError as exc:
        get_logger("mnemoflow.flows").warning("run.failure_report_lost", graph=loaded.spec.name, error=str(exc))


async def _failed_record(store: GraphStore, namespace: str, run_id: str) -> Mapping[str, Any] | None:
    """The properties of a failed run's record (its trace and error), or None when it wrote none or the store that
    failed it cannot be read."""
    try:
        [node] = await store.get_nodes(namespace, [stable_id(namespace, RUN_KIND, run_id)])
    except StoreError:
        return None
    return node.properties if node is not None else None


def read_files(files: dict[str, str]) -> dict[str, str]:
    """Input fields whose values are UTF-8 files (field -> path), read."""
    values = {}
    for field, source in files.items():
        try:
            values[field] = Path(source).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"input field {field!r}: cannot read {source!r}: {exc}") from exc
    return values


@flow(name="execute-graph", persist_result=True, result_serializer="json")
async def execute_graph(
    graph: str,
    input: dict[str, Any],
    thread_id: str,
    namespace: str | None = None,
    store: Backend | None = None,
    files: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run (or resume) a checked graph file on ``thread_id``, publish its report, return its summary and outputs.

    ``files`` names input fields read from files here, so that a book's text is not a flow run parameter.
    """
    settings = flow_settings(store=store, namespace=namespace)
    loaded = load_graph(Path(graph))
    input = {**input, **read_files(files or {})}
    run_id = uuid.uuid4().hex[:16]  # chosen here, so that a failure's report can read the run's record
    run_page = run_page_url(settings.ui.url, run_id, settings.namespace) if settings.ui.url else None
    async with (
        open_run_parts(settings, request_slot=model_slot(settings.prefect)) as parts,
        GraphRunner.from_parts(
            loaded, parts, wrap_node=node_wrapper(settings.prefect.tasks), live_interval=LIVE_INTERVAL_S
        ) as runner,
    ):
        try:
            result = await runner.run(
                input, namespace=settings.namespace, thread_id=thread_id, annotations=prefect_annotations(), run_id=run_id
            )
        except Exception as exc:
            record = await _failed_record(parts.store, settings.namespace, run_id)
            error = (record or {}).get("error") or f"{type(exc).__name__}: {exc}"
            await publish_failure(loaded, error, record=record, run_page=run_page if record else None)
            raise
    await acreate_markdown_artifact(
        run_report(loaded, result, run_page=run_page), key=artifact_key(loaded), description=result.summary()
    )
    return {
        "outputs": result.outputs,
        "graph": result.graph,
        "status": result.status,
        "thread_id": result.thread_id,
        "run_id": result.run_id,
        "resumed": result.resumed,
        "steps": result.steps,
        "llm": result.llm_usage,
        "namespace": settings.namespace,
        "backend": settings.store.backend,
    }


async def settle_dead_attempt(loaded: LoadedGraph, settings: Settings, thread: str) -> None:
    """On a flow run's second start or later, a reschedule after its worker died (or a retry): mark Crashed the task
    runs the dead attempt left unfinished in its subflow runs (Prefect runs the subflow run again but leaves them
    ``Running``), then refuse to start a run rescheduled more than ``MNEMOFLOW_PREFECT_MAX_RESCHEDULES`` times.

    Raises:
        RescheduleLimitError: past the cap, after publishing the failure as the run's report.
    """
    context = FlowRunContext.get()
    if context is None or context.flow_run is None or context.flow_run.run_count <= 1:
        return  # a first start: no attempt before it
    flow_run_id = context.flow_run.id
    async with get_client() as client:
        left = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])),
            task_run_filter=TaskRunFilter(state=TaskRunFilterState(type=TaskRunFilterStateType(any_=UNFINISHED))),
        )
        for task_run in left:
            await client.set_task_run_state(task_run.id, Crashed(message=ABANDONED), force=True)
        count = reschedules(await client.read_flow_run_states(flow_run_id))
    cap = settings.prefect.max_reschedules
    if count > cap:
        error = RescheduleLimitError(
            f"rescheduled {count} times after its worker died, more than MNEMOFLOW_PREFECT_MAX_RESCHEDULES={cap} "
            f"allows: not started again. Thread {thread} keeps its last checkpoint: run it again with that thread_id "
            "and no input to resume it."
        )
        await publish_failure(loaded, str(error))
        raise error


async def start_graph_run(
    loaded: LoadedGraph,
    input: dict[str, Any],
    thread_id: str | None,
    namespace: str | None,
    store: Backend | None,
    files: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Settle what a dead attempt of this flow run left (:func:`settle_dead_attempt`), check the input and the
    graph's preconditions, then run the graph in its subflow with the graph file's run retries (a precondition that
    fails, a book not indexed, fails here once instead of in every retry). A check that fails is published as the
    run's report."""
    settings = flow_settings(store=store, namespace=namespace)
    thread = thread_id or _flow_run_id()
    await settle_dead_attempt(loaded, settings, thread)
    if thread_id is None or input or files:  # a named thread with no input resumes; the runner checks the rest
        try:
            values = {**input, **read_files(files or {})}
            check_input(loaded, values)
            if loaded.spec.requires:
                async with open_run_parts(settings, checkpointer=False) as parts:
                    await check_preconditions(loaded, values, parts.store, settings.namespace)
        except MnemoflowError as exc:
            await publish_failure(loaded, str(exc))
            raise
    retry = loaded.spec.retry
    subflow = execute_graph.with_options(
        name=loaded.spec.name,
        retries=retry.max_attempts - 1,
        retry_delay_seconds=retry.delay,
        flow_run_name=f"{loaded.spec.name}-{thread[:8]}",
    )
    summary: dict[str, Any] = await subflow(str(loaded.path), input, thread, namespace, store, files)
    return summary


@flow(name="run_graph", persist_result=True, result_serializer="json")
async def run_graph(
    graph: str,
    input: dict[str, Any] | None = None,
    thread_id: str | None = None,
    namespace: str | None = None,
    store: Backend | None = None,
) -> dict[str, Any]:
    """Run a graph: ``graph`` is a library name (``comorag-qa``) or a path to a graph file.

    ``input`` holds the graph's input fields; ``thread_id`` defaults to this flow run's id; ``namespace``
    and ``store`` (sqlite or neo4j) default to the worker's MNEMOFLOW_NAMESPACE and MNEMOFLOW_STORE_BACKEND.
    Returns (and keeps as the flow run's result) the graph's ``outputs`` with the run's summary.
    """
    flow_settings(store=store, namespace=namespace)  # checks the overrides, imports MNEMOFLOW_NODE_MODULES
    return await start_graph_run(load_graph(graph), input or {}, thread_id, namespace, store)
