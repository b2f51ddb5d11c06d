"""The ``ingest`` flow: index a text file with a mechanism's ingest graph (ComoRAG's by default)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from mnemoflow.flows.resources import Backend, flow_settings
from mnemoflow.flows.run import start_graph_run
from mnemoflow.graphs import load_graph

__all__ = ["ingest"]


@flow(name="ingest", persist_result=True, result_serializer="json")
async def ingest(
    source: str,
    input: dict[str, Any] | None = None,
    graph: str = "comorag-ingest",
    text_field: str = "text",
    thread_id: str | None = None,
    namespace: str | None = None,
    store: Backend | None = None,
) -> dict[str, Any]:
    """Read the UTF-8 file ``source`` into the input field ``text_field`` and run the ingest ``graph``.

    ``input`` gives the graph's other fields (ComoRAG: ``book_id``, and optionally ``title``, ``kg``,
    ``chunk_tokens``). Ingest graphs are idempotent: running one again over the same text changes nothing.
    Returns (and keeps as the flow run's result) the graph's ``outputs`` with the run's summary.
    """
    flow_settings(store=store, namespace=namespace)  # checks the overrides, imports MNEMOFLOW_NODE_MODULES
    files = {text_field: str(Path(source).resolve())}
    return await start_graph_run(load_graph(graph), input or {}, thread_id, namespace, store, files)
