"""The G-Memory namespace view: insights by score with what supports and contradicts them, and the queries (finished
tasks) with their outcome and trajectory.

What G-Memory keeps is described in :mod:`mnemoflow.nodes.gmemory.model`: ``GInsight`` records (text, status,
cached score) linked ``SUPPORTED_BY`` / ``CONTRADICTED_BY`` to ``GQuery`` records and credited by ``GCredit``
records; each query has its ``GUtterance`` messages (``HAS_UTTERANCE``), ``SIMILAR`` links to earlier queries and
the insights its team was given (``INFORMED`` from the insight, or ``USED_INSIGHT`` from a query recorded before
that link existed); a task's lesson is ``DERIVED_FROM`` the insights its team was given. Everything is read through the store API
(``count_nodes_by_kind``, ``list_nodes``, ``get_nodes``, ``neighbours``), so both backends serve the view.

Costs, bounded: the namespace page reads every insight (at most ``MAX_INSIGHTS``, to rank them by score), then the
links of the insights on the page shown (at most ``MAX_LINKS`` relationships each), and one page of queries, newest
first (a query's trajectory shown there is the transcript stored on it). A query's page reads the query's links.

Pages: ``/mechanisms/gmemory?namespace=`` and ``/mechanisms/gmemory/query?namespace=&id=``. APIs, the same data as
JSON: ``/api/mechanisms/gmemory`` and ``/api/mechanisms/gmemory/query``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from mnemoflow.flows.server.state import ServerState, server_state
from mnemoflow.flows.server.ui import pages
from mnemoflow.flows.server.ui.views import MAX_OFFSET, UIError, record_url, store_errors
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import NodeRecord, RelationshipRecord
from mnemoflow.nodes.gmemory.model import (
    CONTRADICTED_BY,
    CREDIT,
    CREDITS,
    DERIVED_FROM,
    HAS_UTTERANCE,
    INFORMED,
    INSIGHT,
    MERGED_INTO,
    MILESTONE,
    MILESTONE_CLAIM,
    ORDER,
    QUERY,
    SIMILAR,
    SUPPORTED_BY,
    USED_INSIGHT,
    UTTERANCE,
    query_id,
)

__all__ = [
    "GRAPHS",
    "InsightStatus",
    "namespace_url",
    "namespace_view",
    "query_url",
    "query_view",
    "record_links",
    "router",
    "run_links",
]

GRAPHS = frozenset({"gmemory-task", "gmemory-retrieve"})
"""The library graphs whose runs read or write a namespace's G-Memory."""
KINDS = (QUERY, UTTERANCE, INSIGHT, CREDIT, MILESTONE)
MAX_INSIGHTS = 5000
"""Insights read to rank a namespace's insights by score."""
MAX_LINKS = 2000
"""Relationships of one record read for its view; counts say "at least" past it."""
LINK_PAGE = 200
"""Relationships read per ``neighbours`` call."""
INSIGHT_PAGE = 50
QUERY_PAGE = 50
MILESTONES = 20
"""The most recent milestones (revisions, merges) shown."""

InsightStatus = Literal["all", "active", "pruned", "merged"]

router = APIRouter(include_in_schema=False)
State = Annotated[ServerState, Depends(server_state)]
Namespace = Annotated[str, Query(min_length=1, max_length=200, description="The namespace the G-Memory graphs ran in.")]
Status = Annotated[InsightStatus, Query(description="Show only insights of this status.")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Records to skip.")]


def namespace_url(namespace: str, **extra: str | int) -> str:
    """The namespace page's address (``extra``: ``status``, ``insight_offset``, ``query_offset``)."""
    return "/mechanisms/gmemory?" + urlencode({"namespace": namespace, **extra})


def query_url(namespace: str, query: str) -> str:
    """A query's page."""
    return "/mechanisms/gmemory/query?" + urlencode({"namespace": namespace, "id": query})


def run_links(run: dict[str, Any]) -> list[dict[str, str]]:
    """``gmemory-task`` and ``gmemory-retrieve`` runs link to their namespace's G-Memory; a completed task run also
    to the query it recorded."""
    namespace = run.get("namespace")
    if run.get("graph") not in GRAPHS or not namespace:
        return []
    links = [{"label": "G-Memory: insights and queries", "url": namespace_url(str(namespace))}]
    recorded = _recorded_query(run, str(namespace))
    if recorded:
        links.append({"label": "G-Memory: the query this task recorded", "url": query_url(str(namespace), recorded)})
    return links


def _recorded_query(run: dict[str, Any], namespace: str) -> str | None:
    """The query a completed ``gmemory-task`` run recorded: its ``query_id`` output, else the id of its task key (the
    input's ``task_key``, or the thread id)."""
    if run.get("graph") != "gmemory-task" or run.get("status") != "completed":
        return None
    outputs, values = run.get("outputs"), run.get("input")
    recorded = outputs.get("query_id") if isinstance(outputs, dict) else None
    if isinstance(recorded, str) and recorded:
        return recorded
    key = values.get("task_key") if isinstance(values, dict) else None
    key = key if isinstance(key, str) and key else run.get("thread_id")
    return query_id(namespace, str(key)) if key else None


def record_links(record: dict[str, Any]) -> list[dict[str, str]]:
    """The view a G-Memory record links to (``record`` as :func:`views.node_json` shapes it): an insight (or a credit
    of one) opens on the namespace page, a query (or one of its messages, or the claim of its number) on its own
    page, a milestone (or its claim) on the namespace page."""
    kind, namespace, node_id = record.get("kind"), record.get("namespace"), record.get("id")
    properties = record.get("properties") or {}
    if not namespace or not isinstance(node_id, str):
        return []
    namespace = str(namespace)
    insight = node_id if kind == INSIGHT else properties.get("insight_id") if kind == CREDIT else None
    query = node_id if kind == QUERY else properties.get("query_id") if kind in (UTTERANCE, ORDER) else None
    if isinstance(insight, str):
        return [
            {
                "label": "G-Memory: this insight, its support and contradictions",
                "url": f"{namespace_url(namespace)}#insight-{insight}",
            }
        ]
    if isinstance(query, str):
        return [{"label": "G-Memory: this task's query and trajectory", "url": query_url(namespace, query)}]
    if kind in (MILESTONE, MILESTONE_CLAIM):
        return [{"label": "G-Memory: insights and queries", "url": namespace_url(namespace)}]
    return []


# -- reading -----------------------------------------------------------------------------------------------


async def _links(
    store: GraphStore, namespace: str, node_id: str
) -> tuple[NodeRecord | None, list[RelationshipRecord], dict[str, NodeRecord], int]:
    """The record, its relationships (the first ``MAX_LINKS``), the records at their other ends by id, and how many
    relationships touch it in all."""
    relationships: list[RelationshipRecord] = []
    others: dict[str, NodeRecord] = {}
    node: NodeRecord | None = None
    total = 0
    with store_errors():
        while True:
            page = await store.neighbours(namespace, node_id, limit=LINK_PAGE, offset=len(relationships))
            node, total = page.node, page.total
            relationships += page.relationships
            others.update((other.id, other) for other in page.nodes)
            if not page.relationships or len(relationships) >= min(total, MAX_LINKS):
                return node, relationships[:MAX_LINKS], others, total


def _ends(
    node_id: str,
    relationships: list[RelationshipRecord],
    others: dict[str, NodeRecord],
    type: str,
    direction: Literal["out", "in"],
    kind: str,
) -> list[tuple[RelationshipRecord, NodeRecord]]:
    """The node's ``type`` links in ``direction`` to records of ``kind``, with those records."""
    found = []
    for link in relationships:
        if link.type != type or (link.source_id if direction == "out" else link.target_id) != node_id:
            continue
        other = others.get(link.target_id if direction == "out" else link.source_id)
        if other is not None and other.kind == kind:
            found.append((link, other))
    return found


def _query_brief(query: NodeRecord) -> dict[str, Any]:
    p = query.properties
    return {
        "id": query.id,
        "task": str(p.get("task") or query.text or ""),
        "status": str(p.get("status", "")),
        "order": p.get("order"),
    }


def _insight_brief(insight: NodeRecord) -> dict[str, Any]:
    p = insight.properties
    return {
        "id": insight.id,
        "text": str(p.get("text") or insight.text or ""),
        "status": str(p.get("status", "active")),
        "score": p.get("score"),
    }


def _score(insight: NodeRecord) -> float:
    score = insight.properties.get("score", 0)
    return float(score) if isinstance(score, int | float) and not isinstance(score, bool) else 0.0


def _credit_json(credit: NodeRecord, tasks: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A credit; ``query`` is the task that gave it (its source) when that task is among ``tasks``, else None (a
    revision or a merge gave it)."""
    source = str(credit.properties.get("source", ""))
    return {
        "id": credit.id,
        "delta": credit.properties.get("delta"),
        "reason": str(credit.properties.get("reason", "")),
        "source": source,
        "query": tasks.get(source),
        "created_at": credit.created_at.timestamp() if credit.created_at else None,
    }


async def _insight_json(store: GraphStore, namespace: str, insight: NodeRecord) -> dict[str, Any]:
    """An insight with its supporting and contradicting queries, credits, merges and earlier texts."""
    _, relationships, others, total = await _links(store, namespace, insight.id)
    supported = [_query_brief(q) for _, q in _ends(insight.id, relationships, others, SUPPORTED_BY, "out", QUERY)]
    contradicted = [_query_brief(q) for _, q in _ends(insight.id, relationships, others, CONTRADICTED_BY, "out", QUERY)]
    tasks = {q["id"]: q for q in (*supported, *contradicted)}
    credits = [_credit_json(credit, tasks) for _, credit in _ends(insight.id, relationships, others, CREDITS, "in", CREDIT)]
    credits.sort(key=lambda credit: (credit["created_at"] or 0.0, credit["source"]))
    history = insight.properties.get("history")
    return {
        **_insight_brief(insight),
        "created_order": insight.properties.get("created_order"),
        "source": str(insight.properties.get("source") or ""),
        "supported_by": sorted(supported, key=lambda q: -int(q["order"] or 0)),
        "contradicted_by": sorted(contradicted, key=lambda q: -int(q["order"] or 0)),
        "used_by": len(
            {q.id for _, q in _ends(insight.id, relationships, others, INFORMED, "out", QUERY)}
            | {q.id for _, q in _ends(insight.id, relationships, others, USED_INSIGHT, "in", QUERY)}
        ),
        "credits": credits,
        "merged_into": [_insight_brief(i) for _, i in _ends(insight.id, relationships, others, MERGED_INTO, "out", INSIGHT)],
        "merged_from": [_insight_brief(i) for _, i in _ends(insight.id, relationships, others, MERGED_INTO, "in", INSIGHT)],
        "derived_from": [_insight_brief(i) for _, i in _ends(insight.id, relationships, others, DERIVED_FROM, "out", INSIGHT)],
        "derived_into": [_insight_brief(i) for _, i in _ends(insight.id, relationships, others, DERIVED_FROM, "in", INSIGHT)],
        "history": [
            {"text": str(entry.get("text", "")), "source": str(entry.get("source", ""))}
            for entry in (history if isinstance(history, list) else [])
            if isinstance(entry, dict)
        ],
        "links_read": len(relationships),
        "links_total": total,
    }


def _query_json(query: NodeRecord) -> dict[str, Any]:
    p = query.properties
    steps = p.get("key_steps")
    return {
        **_query_brief(query),
        "task_key": str(p.get("task_key") or ""),
        "feedback": str(p.get("feedback") or ""),
        "key_steps": [str(step) for step in steps] if isinstance(steps, list) else [],
        "fail_reason": str(p.get("fail_reason") or ""),
        "trajectory": str(p.get("trajectory") or ""),
        "updated_at": query.updated_at.timestamp() if query.updated_at else None,
    }


async def _insights(store: GraphStore, namespace: str) -> list[NodeRecord]:
    """Every insight of the namespace (at most ``MAX_INSIGHTS``), newest first."""
    found: list[NodeRecord] = []
    with store_errors():
        while len(found) < MAX_INSIGHTS:
            page = await store.list_nodes(namespace, kind=INSIGHT, limit=min(1000, MAX_INSIGHTS - len(found)), offset=len(found))
            found += page
            if len(page) < 1000:
                break
    return found


async def namespace_view(
    store: GraphStore, namespace: str, *, status: InsightStatus = "all", insight_offset: int = 0, query_offset: int = 0
) -> dict[str, Any]:
    """A namespace's G-Memory: counts per kind, one page of insights by score (highest first) with their links,
    one page of queries (newest first) with outcome and transcript, and the latest milestones.

    ``{"namespace", "counts": {kind: n}, "status", "insights": {"total", "offset", "limit", "items": [insight]},
    "queries": {"total", "offset", "limit", "items": [query]}, "milestones": [{"id", "name", "status",
    "updated_at"}]}``; 404 when the namespace holds no G-Memory records.
    """
    with store_errors():
        by_kind = await store.count_nodes_by_kind(namespace)
    counts = {kind: by_kind.get(kind, 0) for kind in KINDS}
    if not counts[QUERY] and not counts[INSIGHT]:
        raise UIError(404, f"namespace {namespace!r} holds no G-Memory insights or queries")
    insights = [i for i in await _insights(store, namespace) if status == "all" or i.properties.get("status", "active") == status]
    insights.sort(key=lambda i: (-_score(i), int(i.properties.get("created_order") or 0), i.id))
    page = insights[insight_offset : insight_offset + INSIGHT_PAGE]
    with store_errors():
        queries = await store.list_nodes(namespace, kind=QUERY, limit=QUERY_PAGE, offset=query_offset)
        milestones = await store.list_nodes(namespace, kind=MILESTONE, limit=MILESTONES)
    return {
        "namespace": namespace,
        "counts": counts,
        "status": status,
        "insights": {
            "total": len(insights),
            "offset": insight_offset,
            "limit": INSIGHT_PAGE,
            "items": [await _insight_json(store, namespace, insight) for insight in page],
        },
        "queries": {
            "total": counts[QUERY],
            "offset": query_offset,
            "limit": QUERY_PAGE,
            "items": [_query_json(q) for q in queries],
        },
        "milestones": [
            {
                "id": m.id,
                "name": str(m.properties.get("name", "")),
                "status": str(m.properties.get("status", "")),
                "updated_at": m.updated_at.timestamp() if m.updated_at else None,
            }
            for m in milestones
        ],
    }


async def query_view(store: GraphStore, namespace: str, query: str) -> dict[str, Any]:
    """One query: its outcome, its trajectory (the utterances in order), the insights its team was given (by rank),
    the insights it supports and contradicts, and its similar queries (earlier and later, with their cosine).

    ``{...query, "utterances": [{"id", "order", "round", "speaker", "addressee", "message"}], "used_insights":
    [{...insight, "rank"}], "supports": [insight], "contradicts": [insight], "similar": [{...query, "weight",
    "direction": "earlier"|"later"}], "links_read", "links_total"}``; 404 when there is no such query.
    """
    node, relationships, others, total = await _links(store, namespace, query)
    if node is None or node.kind != QUERY:
        raise UIError(404, f"no G-Memory query {query!r} in namespace {namespace!r}")
    utterances = [
        {
            "id": u.id,
            "order": u.properties.get("order"),
            "round": u.properties.get("round"),
            "speaker": str(u.properties.get("speaker", "")),
            "addressee": str(u.properties.get("addressee", "")),
            "message": str(u.properties.get("message") or u.text or ""),
        }
        for _, u in _ends(query, relationships, others, HAS_UTTERANCE, "out", UTTERANCE)
    ]
    utterances.sort(key=lambda u: int(u["order"] or 0))
    given = {
        i.id: {**_insight_brief(i), "rank": link.properties.get("rank")}
        for link, i in [
            *_ends(query, relationships, others, USED_INSIGHT, "out", INSIGHT),
            *_ends(query, relationships, others, INFORMED, "in", INSIGHT),
        ]
    }
    used = sorted(given.values(), key=lambda i: int(i["rank"] or 0))
    similar = [
        {**_query_brief(q), "weight": link.properties.get("weight"), "direction": direction}
        for direction, links in (
            ("earlier", _ends(query, relationships, others, SIMILAR, "out", QUERY)),
            ("later", _ends(query, relationships, others, SIMILAR, "in", QUERY)),
        )
        for link, q in links
    ]
    similar.sort(key=lambda q: int(q["order"] or 0))
    return {
        **_query_json(node),
        "utterances": utterances,
        "used_insights": used,
        "supports": [_insight_brief(i) for _, i in _ends(query, relationships, others, SUPPORTED_BY, "in", INSIGHT)],
        "contradicts": [_insight_brief(i) for _, i in _ends(query, relationships, others, CONTRADICTED_BY, "in", INSIGHT)],
        "similar": similar,
        "links_read": len(relationships),
        "links_total": total,
    }


# -- pages -------------------------------------------------------------------------------------------------


@router.get("/mechanisms/gmemory")
async def namespace_page(
    request: Request,
    state: State,
    namespace: Namespace,
    status: Status = "all",
    insight_offset: Offset = 0,
    query_offset: Offset = 0,
) -> HTMLResponse:
    view = await namespace_view(state.store, namespace, status=status, insight_offset=insight_offset, query_offset=query_offset)
    return pages.render(
        request,
        "mechanisms/gmemory.html",
        section="memory",
        title=f"G-Memory {namespace}",
        view=view,
        namespace_url=namespace_url,
        query_url=query_url,
        record_url=record_url,
    )


@router.get("/mechanisms/gmemory/query")
async def query_page(
    request: Request, state: State, namespace: Namespace, id: Annotated[str, Query(min_length=1, max_length=512)]
) -> HTMLResponse:
    query = await query_view(state.store, namespace, id)
    return pages.render(
        request,
        "mechanisms/gmemory_query.html",
        section="memory",
        title=f"G-Memory query {query['order']}",
        namespace=namespace,
        query=query,
        namespace_url=namespace_url,
        query_url=query_url,
        record_url=record_url,
    )


# -- APIs --------------------------------------------------------------------------------------------------


@router.get("/api/mechanisms/gmemory")
async def namespace_api(
    state: State, namespace: Namespace, status: Status = "all", insight_offset: Offset = 0, query_offset: Offset = 0
) -> dict[str, Any]:
    """A namespace's G-Memory: insights by score with their links, queries newest first, milestones."""
    return await namespace_view(state.store, namespace, status=status, insight_offset=insight_offset, query_offset=query_offset)


@router.get("/api/mechanisms/gmemory/query")
async def query_api(
    state: State, namespace: Namespace, id: Annotated[str, Query(min_length=1, max_length=512)]
) -> dict[str, Any]:
    """One query with its trajectory, the insights it used, supports and contradicts, and its similar queries."""
    return await query_view(state.store, namespace, id)
