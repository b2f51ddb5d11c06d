"""The UI's server-rendered pages: graphs, runs and memory; their scripts fetch ``/api`` for live parts."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from mnemoflow.flows.server.state import ServerState, server_state
from mnemoflow.flows.server.ui import runs, views

__all__ = ["VENDOR", "router", "templates"]

HERE = Path(__file__).resolve().parent
VENDOR = HERE / "frontend" / "node_modules"
"""Where ``make ui`` installs the front-end libraries (npm, from the lockfile)."""
VENDOR_FILES = {"mermaid": "mermaid/dist/mermaid.esm.min.mjs", "cytoscape": "cytoscape/dist/cytoscape.esm.min.mjs"}

templates = Jinja2Templates(directory=HERE / "templates")


def _when(epoch: object) -> str:
    if not isinstance(epoch, int | float) or isinstance(epoch, bool):
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _seconds(value: object) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _json(value: object, indent: int | None = None) -> str:
    return json.dumps(value, indent=indent, ensure_ascii=False, sort_keys=True, default=str)


templates.env.filters["when"] = _when
templates.env.filters["pretty"] = lambda value: _json(value, 2)
templates.env.filters["compact"] = _json
templates.env.filters["seconds"] = _seconds

router = APIRouter(include_in_schema=False)
State = Annotated[ServerState, Depends(server_state)]


def vendor_missing() -> list[str]:
    """The front-end libraries that are not installed (``make ui`` installs them)."""
    return [name for name, path in VENDOR_FILES.items() if not (VENDOR / path).is_file()]


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A page of the UI; ``section`` (graphs, runs, memory) marks the nav entry."""
    missing = vendor_missing()
    return templates.TemplateResponse(
        request, template, {"vendor_missing": missing, "scripts_ok": not missing, **context}, status_code=status_code
    )


@router.get("/")
def home() -> RedirectResponse:
    return RedirectResponse("/graphs", status_code=303)


@router.get("/graphs")
def graphs_page(request: Request) -> HTMLResponse:
    return render(request, "graphs.html", section="graphs", title="Graphs", graphs=views.graph_summaries())


@router.get("/graphs/{name}")
def graph_page(name: str, request: Request, state: State) -> HTMLResponse:
    graph = views.graph_detail(name, state.settings)
    return render(request, "graph.html", section="graphs", title=graph["name"], graph=graph)


FilterValue = Annotated[str | None, Query(max_length=200)]


@router.get("/runs")
async def runs_page(
    request: Request,
    state: State,
    namespace: FilterValue = None,
    graph: FilterValue = None,
    status: Annotated[str | None, Query(max_length=50)] = None,
    thread: FilterValue = None,
    limit: Annotated[int, Query(ge=1, le=runs.RUN_SCAN_LIMIT)] = 50,
) -> HTMLResponse:
    """Recent runs with filters (an empty field is no filter), a thread's runs grouped under it."""
    chosen = {"namespace": namespace or None, "graph": graph or None, "status": status or None, "thread": (thread or "").strip() or None}
    listing = await runs.run_listing(state.store, limit=limit, **chosen)
    return render(request, "runs.html", section="runs", title="Runs", listing=listing, chosen=chosen, limit=limit)


@router.get("/runs/{run_id}")
async def run_page(
    run_id: str, request: Request, state: State, namespace: Annotated[str, Query(min_length=1, max_length=200)]
) -> HTMLResponse:
    run = await runs.run_detail(state.store, state.settings, namespace, run_id)
    return render(request, "run.html", section="runs", title=f"Run {run_id}", run=run)


@router.get("/memory")
async def memory_page(
    request: Request,
    state: State,
    namespace: Annotated[str | None, Query(max_length=200)] = None,
    q: Annotated[str, Query(max_length=1000)] = "",
    mode: Literal["keyword", "vector"] = "keyword",
    kind: Annotated[str | None, Query(max_length=100)] = None,
    offset: Annotated[int, Query(ge=0, le=views.MAX_OFFSET)] = 0,
) -> HTMLResponse:
    """A namespace's records (newest first, or the hits of a search) and a legend of its kinds: each kind's colour in
    the explorer and how many records of it the namespace holds."""
    names = await views.namespaces(state.store)
    kinds = state.store.registry.kinds
    if namespace is None and names:
        namespace = state.settings.namespace if any(n["name"] == state.settings.namespace for n in names) else names[0]["name"]
    kind = kind or None
    if mode == "vector" and kind is None:
        kind = next((spec.name for spec in kinds if spec.embedded), None)
    hits: list[dict[str, Any]] | None = None
    records: list[dict[str, Any]] = []
    kind_counts: dict[str, int] = {}
    page = 50
    if namespace:
        with views.store_errors():
            kind_counts = await state.store.count_nodes_by_kind(namespace)
        if q.strip():
            hits = await views.search(state.store, state.embedder, namespace, q, mode=mode, kind=kind, k=20)
        else:
            records = await views.recent_records(state.store, namespace, kind=kind, limit=page, offset=offset)
    return render(
        request,
        "memory.html",
        section="memory",
        title="Memory",
        namespaces=names,
        namespace=namespace,
        kinds=kinds,
        q=q,
        mode=mode,
        kind=kind,
        kind_counts=kind_counts,
        hits=hits,
        records=records,
        offset=offset,
        page=page,
    )


@router.get("/memory/record")
async def record_page(
    request: Request,
    state: State,
    namespace: Annotated[str, Query(min_length=1, max_length=200)],
    id: Annotated[str, Query(min_length=1, max_length=512)],
) -> HTMLResponse:
    node = await views.record(state.store, namespace, id)
    with views.store_errors():
        kind_counts = await state.store.count_nodes_by_kind(namespace)
    return render(
        request, "record.html", section="memory", title=f"{node['kind']} {id}", node=node, namespace=namespace, kind_counts=kind_counts
    )


def error_page(request: Request, status: int, message: str) -> Response:
    return render(request, "error.html", status_code=status, section="", title=f"Error {status}", status=status, message=message)
