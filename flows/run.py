"""The ``run_graph`` flow: load, check, compile and run a graph file, each node a Prefect task (or, with
``MNEMOFLOW_PREFECT_TASKS=graph``, every node in the graph's flow run: see :func:`mnemoflow.flows.tasks.node_wrapper`).

``run_graph`` checks the graph and the input, then runs the graph in a subflow named after it, whose
retries come from the graph file's ``retry`` (``max_attempts``, ``delay``). The thread id defaults to the
``run_graph`` flow run's id, so a retried subflow, or the same flow run rescheduled after its worker died,
resumes from the last checkpoint instead of starting over.

Both flows return the run's summary with the graph's ``outputs`` and keep it as their result, as JSON in Prefect's
result storage (``$PREFECT_HOME/storage`` unless configured), so the answer can be read back from the flow run.
The run's record in the store names the subflow run and links to it in Prefect's UI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import acreate_markdown_artifact
from prefect.context import FlowRunContext
from prefect.utilities.urls import url_for

from mnemoflow.errors import ConfigError
from mnemoflow.flows.artifacts import artifact_key, run_page_url, run_report
from mnemoflow.flows.budget import model_slot
from mnemoflow.flows.resources import Backend, flow_settings
from mnemoflow.flows.tasks import node_wrapper
from mnemoflow.graphs import GraphRunner, load_graph
from mnemoflow.graphs.loader import LoadedGraph
from mnemoflow.graphs.parts import open_run_parts
from mnemoflow.graphs.runner import LIVE_INTERVAL_S, check_input, check_preconditions

__all__ = ["execute_graph", "prefect_annotations", "read_files", "run_graph", "start_graph_run"]


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
    async with (
        open_run_parts(settings, request_slot=model_slot(settings.prefect)) as parts,
        GraphRunner.from_parts(
            loaded, parts, wrap_node=node_wrapper(settings.prefect.tasks), live_interval=LIVE_INTERVAL_S
        ) as runner,
    ):
        result = await runner.run(input, namespace=settings.namespace, thread_id=thread_id, annotations=prefect_annotations())
    run_page = run_page_url(settings.ui.url, result.run_id, settings.namespace) if settings.ui.url else None
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


async def start_graph_run(
    loaded: LoadedGraph,
    input: dict[str, Any],
    thread_id: str | None,
    namespace: str | None,
    store: Backend | None,
    files: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Check the input and the graph's preconditions, then run the graph in its subflow with the graph file's run
    retries (a precondition that fails, a book not indexed, fails here once instead of in every retry)."""
    thread = thread_id or _flow_run_id()
    if thread_id is None or input or files:  # a named thread with no input resumes; the runner checks the rest
        values = {**input, **read_files(files or {})}
        check_input(loaded, values)
        if loaded.spec.requires:
            settings = flow_settings(store=store, namespace=namespace)
            async with open_run_parts(settings, checkpointer=False) as parts:
                await check_preconditions(loaded, values, parts.store, settings.namespace)
    retry = loaded.spec.retry
    subflow = execute_graph.with_options(
        name=loaded.spec.name, retries=retry.max_attempts - 1, retry_delay_seconds=retry.delay, flow_run_name=f"{loaded.spec.name}-{thread[:8]}"
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
