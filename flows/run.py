"""The ``run_graph`` flow: load, check, compile and run a graph file, each node a Prefect task.

``run_graph`` checks the graph and the input, then runs the graph in a subflow named after it, whose
retries come from the graph file's ``retry`` (``max_attempts``, ``delay``). The thread id defaults to the
``run_graph`` flow run's id, so a retried subflow, or the same flow run rescheduled after its worker died,
resumes from the last checkpoint instead of starting over.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import acreate_markdown_artifact
from prefect.context import FlowRunContext

from mnemoflow.errors import ConfigError
from mnemoflow.flows.artifacts import artifact_key, run_report
from mnemoflow.flows.budget import model_slot
from mnemoflow.flows.resources import Backend, flow_settings
from mnemoflow.flows.tasks import run_node_as_task
from mnemoflow.graphs import GraphRunner, load_graph
from mnemoflow.graphs.loader import LoadedGraph
from mnemoflow.graphs.parts import open_run_parts
from mnemoflow.graphs.runner import LIVE_INTERVAL_S, check_input

__all__ = ["execute_graph", "read_files", "run_graph", "start_graph_run"]


def _flow_run_id() -> str:
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        raise RuntimeError("not inside a Prefect flow run")
    return str(context.flow_run.id)


def read_files(files: dict[str, str]) -> dict[str, str]:
    """Input fields whose values are UTF-8 files (field -> path), read."""
    values = {}
    for field, source in files.items():
        try:
            values[field] = Path(source).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"input field {field!r}: cannot read {source!r}: {exc}") from exc
    return values


@flow(name="execute-graph", persist_result=False)
async def execute_graph(
    graph: str,
    input: dict[str, Any],
    thread_id: str,
    namespace: str | None = None,
    store: Backend | None = None,
    files: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run (or resume) a checked graph file on ``thread_id``, publish its report, return its summary.

    ``files`` names input fields read from files here, so that a book's text is not a flow run parameter.
    """
    settings = flow_settings(store=store, namespace=namespace)
    loaded = load_graph(Path(graph))
    input = {**input, **read_files(files or {})}
    async with (
        open_run_parts(settings, request_slot=model_slot(settings.prefect)) as parts,
        GraphRunner.from_parts(loaded, parts, wrap_node=run_node_as_task, live_interval=LIVE_INTERVAL_S) as runner,
    ):
        result = await runner.run(input, namespace=settings.namespace, thread_id=thread_id)
    await acreate_markdown_artifact(run_report(loaded, result), key=artifact_key(loaded), description=result.summary())
    return {
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
    """Check the input, then run the graph in its subflow with the graph file's run retries."""
    thread = thread_id or _flow_run_id()
    if thread_id is None or input or files:  # a named thread with no input resumes; the runner checks the rest
        check_input(loaded, {**input, **read_files(files or {})})
    retry = loaded.spec.retry
    subflow = execute_graph.with_options(
        name=loaded.spec.name, retries=retry.max_attempts - 1, retry_delay_seconds=retry.delay, flow_run_name=f"{loaded.spec.name}-{thread[:8]}"
    )
    summary: dict[str, Any] = await subflow(str(loaded.path), input, thread, namespace, store, files)
    return summary


@flow(name="run_graph", persist_result=False)
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
    """
    flow_settings(store=store, namespace=namespace)  # checks the overrides, imports MNEMOFLOW_NODE_MODULES
    return await start_graph_run(load_graph(graph), input or {}, thread_id, namespace, store)
