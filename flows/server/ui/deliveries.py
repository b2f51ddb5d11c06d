"""The webhook deliveries page (``/deliveries``) and its JSON (``/api/deliveries``): what each hook received and
what became of it, with links to the runs the deliveries started.

Deliveries are the ``WebhookDelivery`` records the receiver keeps in the hooks namespace
(:class:`~mnemoflow.flows.server.hooks.deliveries.DeliveryLog`). A triggered delivery names the Prefect flow run it
created; that links to Prefect's UI when its address is known (``PREFECT_UI_URL``, by default the API's address
without ``/api``), and to mnemoflow's own run page when a recent run record names that flow run.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, get_args
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from prefect.utilities.urls import url_for

from mnemoflow.flows.server.hooks.deliveries import Outcome, RecordedDelivery
from mnemoflow.flows.server.state import ServerState, server_state
from mnemoflow.flows.server.ui import runs as run_views
from mnemoflow.flows.server.ui import views
from mnemoflow.flows.server.ui.pages import render

__all__ = [
    "DELIVERY_SCAN_LIMIT",
    "DELIVERY_SCAN_PAGE",
    "OUTCOMES",
    "RUN_MATCH_SCAN",
    "delivery_listing",
    "prefect_flow_run_url",
    "router",
    "runs_by_flow_run",
]

router = APIRouter()

OUTCOMES: tuple[str, ...] = get_args(Outcome)
"""What can become of a delivery, in the order the filter offers them."""

DELIVERY_SCAN_LIMIT = 1000
"""At most this many of the most recent deliveries are read to answer a filtered list.

The store has no query by a delivery's hook or outcome (they are properties of its record), so a filter reads
deliveries newest first, :data:`DELIVERY_SCAN_PAGE` at a time, and stops once it has enough or has read this many."""

DELIVERY_SCAN_PAGE = 200
"""Deliveries read per store call while scanning."""

RUN_MATCH_SCAN = 100
"""How many of the most recent runs (of every namespace) are read, once per listing, to find the runs the listed
deliveries started: a delivery older than those runs links to Prefect only."""

State = Annotated[ServerState, Depends(server_state)]
HookFilter = Annotated[str | None, Query(max_length=200, description="Only this hook's deliveries.")]
OutcomeFilter = Annotated[str | None, Query(max_length=50, description="Only deliveries with this outcome.")]
Limit = Annotated[int, Query(ge=1, le=500, description="How many deliveries to list.")]


def prefect_flow_run_url(flow_run_id: str) -> str:
    """The flow run's page in Prefect's UI, or ``""`` when Prefect's address is unknown (or not a web address)."""
    url = url_for("flow-run", obj_id=flow_run_id) or ""
    return url if urlsplit(url).scheme in ("http", "https") else ""


def runs_by_flow_run(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The runs (summaries, newest first) by the Prefect flow runs that started them: the flow run a run record's
    annotations name, and its thread, which ``run_graph`` names after its own flow run unless told otherwise (the
    annotations name the graph's subflow run, the delivery the ``run_graph`` run it created). The newest run of a
    resumed thread wins."""
    found: dict[str, dict[str, Any]] = {}
    for run in runs:
        prefect = run.get("prefect") or {}
        for key in (prefect.get("id"), run.get("thread_id")):
            if key and key not in found:
                found[key] = run
    return found


def _delivery_json(delivery: RecordedDelivery, runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    shown = asdict(delivery)
    flow_run_id = delivery.flow_run_id
    shown["flow_run"] = {"id": flow_run_id, "url": prefect_flow_run_url(flow_run_id)} if flow_run_id else None
    run = runs.get(flow_run_id) if flow_run_id else None
    shown["run"] = (
        {key: run[key] for key in ("namespace", "run_id", "url", "graph", "status", "thread_id")} if run is not None else None
    )
    return shown


async def _scan(state: ServerState, hook: str | None, outcome: str | None, wanted: int) -> tuple[list[RecordedDelivery], bool]:
    """The deliveries that pass the filters, newest first, until ``wanted`` are found, the deliveries run out or
    :data:`DELIVERY_SCAN_LIMIT` are read; the flag says the bound stopped the scan with deliveries left unread."""
    narrows = hook is not None or outcome is not None
    found: list[RecordedDelivery] = []
    read = 0
    while read < DELIVERY_SCAN_LIMIT:
        size = min(DELIVERY_SCAN_PAGE if narrows else wanted, DELIVERY_SCAN_LIMIT - read)
        page = await state.deliveries.recent(limit=size, offset=read)
        read += len(page)
        found += [item for item in page if (hook is None or item.hook == hook) and (outcome is None or item.outcome == outcome)]
        if len(page) < size or len(found) >= wanted:
            return found[:wanted], False
    return found[:wanted], True


async def delivery_listing(
    state: ServerState, *, hook: str | None = None, outcome: str | None = None, limit: int = 100
) -> dict[str, Any]:
    """The deliveries list: the ``limit`` most recent deliveries (of one hook, with one outcome, when given), each with
    its dates as Unix epoch seconds, its Prefect flow run (``flow_run``: id and Prefect UI ``url``, ``""`` when
    unknown) and the mnemoflow run it started (``run``, when a recent run record names that flow run); whether the
    scan stopped at its bound (``partial``); the filters' choices (``hooks``: the served hooks and any listed,
    ``outcomes``); the namespace the deliveries are kept in and for how long."""
    with views.store_errors():
        deliveries, partial = await _scan(state, hook, outcome, limit)
        started = any(delivery.flow_run_id for delivery in deliveries)
        runs = runs_by_flow_run(await run_views.run_summaries(state.store, limit=RUN_MATCH_SCAN)) if started else {}
    hooks = set(state.hooks) | {delivery.hook for delivery in deliveries} | ({hook} if hook else set())
    return {
        "deliveries": [_delivery_json(delivery, runs) for delivery in deliveries],
        "partial": partial,
        "scan_limit": DELIVERY_SCAN_LIMIT,
        "hooks": sorted(hooks),
        "outcomes": list(OUTCOMES) + ([outcome] if outcome and outcome not in OUTCOMES else []),
        "served_hooks": sorted(state.hooks),
        "namespace": state.deliveries.namespace,
        "retention_days": state.settings.hooks.retention_days,
    }


@router.get("/deliveries", include_in_schema=False)
async def deliveries_page(
    request: Request, state: State, hook: HookFilter = None, outcome: OutcomeFilter = None, limit: Limit = 100
) -> HTMLResponse:
    """Recent webhook deliveries, newest first, filtered by hook and outcome (an empty field is no filter)."""
    chosen = {"hook": hook or None, "outcome": outcome or None}
    listing = await delivery_listing(state, limit=limit, **chosen)
    return render(
        request, "deliveries.html", section="deliveries", title="Deliveries", listing=listing, chosen=chosen, limit=limit
    )


@router.get("/api/deliveries", tags=["ui"])
async def deliveries_api(
    state: State, hook: HookFilter = None, outcome: OutcomeFilter = None, limit: Limit = 100
) -> dict[str, Any]:
    """Recent webhook deliveries, newest first, with the flow runs and runs they started; a filter searches at most
    the ``DELIVERY_SCAN_LIMIT`` most recent deliveries."""
    return await delivery_listing(state, hook=hook or None, outcome=outcome or None, limit=limit)
