"""G-Memory's insight scores: credits, the score they add up to, pruning, and the active insights.

An insight's true score is the sum of its ``GCredit`` records; the ``score`` property is a cache of it that
:func:`rescore` refreshes whenever an insight is touched, pruning an active insight at 0 or below. Callers that
read and rewrite insights hold the namespace's ``gmemory`` lock.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mnemoflow.memory.paging import all_nodes
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import NodeRecord, RelationshipRecord
from mnemoflow.nodes.gmemory.links import linked
from mnemoflow.nodes.gmemory.model import CREDIT, CREDITS, INSIGHT, credit_id

__all__ = ["active_insights", "credit_record", "insight_links", "insight_scores", "new_insight", "rescore"]


async def insight_scores(store: GraphStore, namespace: str, insights: Iterable[str]) -> dict[str, int]:
    """Each insight's sum of credits (its true score; ``score`` on the insight is a cache of it), read in one query."""
    credits = await linked(store, namespace, list(insights), CREDITS, "in")
    return {insight: sum(int(c.properties.get("delta", 0)) for c in found if c.kind == CREDIT) for insight, found in credits.items()}


def new_insight(
    namespace: str, id: str, text: str, *, score: int, created_order: int, source: str, **extra: Any
) -> NodeRecord:
    """A new active ``GInsight`` stating ``text`` (a revision's ``ADD``, a task's lesson, a merge's consolidation);
    ``extra`` properties go beside the common ones. Its score still needs the matching credit record."""
    properties = {"text": text, "status": "active", "score": score, "created_order": created_order, "source": source}
    return NodeRecord(id=id, namespace=namespace, kind=INSIGHT, text=text, properties={**properties, **extra})


def credit_record(
    namespace: str, source: str, insight: str, delta: int, reason: str
) -> tuple[NodeRecord, RelationshipRecord]:
    """The credit ``source`` gives ``insight`` (``delta`` points, for ``reason``) and its ``CREDITS`` link."""
    record = NodeRecord(
        id=credit_id(namespace, source, insight),
        namespace=namespace,
        kind=CREDIT,
        properties={"insight_id": insight, "delta": delta, "reason": reason, "source": source},
    )
    return record, RelationshipRecord(namespace=namespace, type=CREDITS, source_id=record.id, target_id=insight)


def insight_links(namespace: str, type: str, insight: str, queries: Iterable[str]) -> list[RelationshipRecord]:
    """``(insight)-[type]->(query)`` for each query, once each (``SUPPORTED_BY`` or ``CONTRADICTED_BY``)."""
    return [RelationshipRecord(namespace=namespace, type=type, source_id=insight, target_id=q) for q in dict.fromkeys(queries)]


async def rescore(store: GraphStore, namespace: str, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Recompute the touched insights' scores from their credits; prune an active one at <= 0.

    Returns ``{insight id: {"score", "status"}}`` for each insight found."""
    ids = list(dict.fromkeys(ids))
    result: dict[str, dict[str, Any]] = {}
    updated: list[NodeRecord] = []
    insights = [insight for insight in await store.get_nodes(namespace, ids) if insight is not None and insight.kind == INSIGHT]
    scores = await insight_scores(store, namespace, [insight.id for insight in insights])
    for insight in insights:
        score = scores[insight.id]
        status = insight.properties.get("status", "active")
        if status == "active" and score <= 0:
            status = "pruned"
        result[insight.id] = {"score": score, "status": status}
        if insight.properties.get("score") != score or insight.properties.get("status") != status:
            updated.append(insight.model_copy(update={"properties": {**insight.properties, "score": score, "status": status}}))
    if updated:
        await store.upsert_nodes(updated)
    return result


async def active_insights(store: GraphStore, namespace: str) -> list[NodeRecord]:
    """The namespace's active insights, oldest first (the order the model sees them numbered in)."""
    insights = [i for i in await all_nodes(store, namespace, INSIGHT) if i.properties.get("status", "active") == "active"]
    return sorted(insights, key=lambda i: (int(i.properties.get("created_order", 0)), i.id))
