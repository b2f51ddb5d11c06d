"""The UI's JSON APIs under ``/api``: what the pages' scripts fetch for live updates and exploration."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query

from mnemoflow.flows.server.state import ServerState, server_state
from mnemoflow.flows.server.ui import runs as run_views
from mnemoflow.flows.server.ui import views

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["ui"])

State = Annotated[ServerState, Depends(server_state)]
Namespace = Annotated[str, Query(min_length=1, max_length=200, description="The namespace to read.")]
RecordId = Annotated[str, Query(min_length=1, max_length=512, description="A record's id.")]
Limit = Annotated[int, Query(ge=1, le=1000, description="Page size.")]
Offset = Annotated[int, Query(ge=0, le=views.MAX_OFFSET, description="Records to skip.")]


@router.get("/graphs")
def graphs() -> list[dict[str, Any]]:
    """Every library graph with its description."""
    return views.graph_summaries()


@router.get("/graphs/{name}")
def graph(name: str, state: State) -> dict[str, Any]:
    """A graph's Mermaid diagram and its nodes: what each reads and writes, and its config."""
    return views.graph_detail(name, state.settings)


@router.get("/runs")
async def runs(
    state: State,
    namespace: Annotated[str | None, Query(min_length=1, max_length=200, description="Only this namespace's runs.")] = None,
    graph: Annotated[str | None, Query(min_length=1, max_length=200, description="Only runs of this graph.")] = None,
    status: Annotated[str | None, Query(min_length=1, max_length=50, description="Only runs with this status.")] = None,
    thread: Annotated[str | None, Query(min_length=1, max_length=200, description="Only runs of this thread.")] = None,
    limit: Annotated[int, Query(ge=1, le=run_views.RUN_SCAN_LIMIT)] = 50,
) -> list[dict[str, Any]]:
    """Recent runs, newest first, of one namespace or all, narrowed by graph, status and thread; a filter searches at
    most the ``RUN_SCAN_LIMIT`` most recent runs of each namespace."""
    return await run_views.run_summaries(state.store, namespace=namespace, graph=graph, status=status, thread=thread, limit=limit)


@router.get("/runs/{run_id}")
async def run(run_id: str, namespace: Namespace, state: State) -> dict[str, Any]:
    """One run: status, input and outputs, steps with the fields they wrote, their model calls and errors, LLM usage,
    where its thread came from, links to mechanism views, and its diagram with the visited nodes marked."""
    return await run_views.run_detail(state.store, state.settings, namespace, run_id)


@router.get("/namespaces")
async def namespaces(state: State) -> list[dict[str, Any]]:
    """Every namespace holding records, with its record count."""
    return await views.namespaces(state.store)


@router.get("/memory/records")
async def records(
    namespace: Namespace,
    state: State,
    kind: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> list[dict[str, Any]]:
    """One page of a namespace's records, newest first."""
    return await views.recent_records(state.store, namespace, kind=kind, limit=limit, offset=offset)


@router.get("/memory/search")
async def search(
    namespace: Namespace,
    q: Annotated[str, Query(min_length=1, max_length=1000, description="Words to search for.")],
    state: State,
    mode: Literal["keyword", "vector"] = "keyword",
    kind: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    k: Annotated[int, Query(ge=1, le=100)] = 20,
) -> list[dict[str, Any]]:
    """Keyword or vector search of a namespace, best first."""
    return await views.search(state.store, state.embedder, namespace, q, mode=mode, kind=kind, k=k)


@router.get("/memory/record")
async def record(namespace: Namespace, id: RecordId, state: State) -> dict[str, Any]:
    """One record (without its embedding) and how many relationships touch it."""
    return await views.record(state.store, namespace, id)


@router.get("/memory/neighbours")
async def neighbours(namespace: Namespace, id: RecordId, state: State, limit: Limit = 25, offset: Offset = 0) -> dict[str, Any]:
    """One page of a record's relationships and the records at their other ends, with the total."""
    return await views.neighbours(state.store, namespace, id, limit=limit, offset=offset)
