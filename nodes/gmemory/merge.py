"""G-Memory's periodic merge of the insights (``gmemory.merge``).

Every ``every`` recorded tasks (milestone ``merge-<n>``, claimed once), the queries that support an active
insight are clustered by their task embeddings: with FINCH (cosine first neighbours, as the paper; of its
partitions, the one with the best cosine silhouette, as the reference keeps one partition) or agglomeratively
(cosine, average linkage, cut at ``distance``). Each active insight joins the cluster holding most of its
supporters, and the model consolidates each cluster's insights in batches. A consolidated insight replaces those
it merges (they become ``merged``, linked ``MERGED_INTO`` it), keeps the union of their ``SUPPORTED_BY`` and
``CONTRADICTED_BY`` links and the highest of their scores (as one credit from ``merge-<n>``). The clustering
libraries load only when a merge clusters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from mnemoflow.errors import LLMOutputError
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import NodeRecord, RelationshipRecord
from mnemoflow.nodes.context import RunContext
from mnemoflow.nodes.gmemory.agents import TEMPERATURE, Consolidation, merge_messages
from mnemoflow.nodes.gmemory.insights import active_insights, credit_record, insight_links, insight_scores, new_insight, rescore
from mnemoflow.nodes.gmemory.links import linked
from mnemoflow.nodes.gmemory.milestones import run_due
from mnemoflow.nodes.gmemory.model import CONTRADICTED_BY, INSIGHT, MERGED_INTO, QUERY, SUPPORTED_BY, merged_insight_id
from mnemoflow.nodes.gmemory.state import TaskState
from mnemoflow.nodes.locks import keyed_lock
from mnemoflow.nodes.registry import node

__all__ = ["MAX_CLUSTERED", "MIN_FINCH", "MergeConfig", "clusters"]


Method = Literal["finch", "agglomerative"]
"""How a merge clusters tasks."""

MAX_CLUSTERED = 2000
"""At most this many supporting queries are clustered at a merge (the pairwise distances are quadratic)."""
MIN_FINCH = 3
"""FINCH links each task to its first neighbour: with fewer tasks there is one cluster at most, so they form one."""


class MergeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    every: int = Field(20, ge=1, description="Merge the insights each time this many more tasks have been recorded.")
    method: Method = Field(
        "finch",
        description="How tasks are clustered: FINCH (the paper; the partition with the best silhouette) or agglomerative.",
    )
    distance: float = Field(
        0.5, gt=0.0, le=2.0, description="Agglomerative only: cosine distance under which tasks join (average linkage)."
    )
    batch: int = Field(10, ge=2, le=30, description="Insights consolidated per model call.")


def clusters(embeddings: Sequence[Sequence[float]], method: Method = "finch", distance: float = 0.5) -> tuple[list[int], str]:
    """Cluster labels of the embeddings, and how they were found (``finch``, ``agglomerative``, or why all went to
    one cluster). FINCH keeps, of its partitions with 2 clusters or more, the one with the best cosine silhouette
    (ties: the finer); agglomerative clustering cuts average linkage at cosine ``distance``."""
    points = np.asarray(embeddings, dtype=float)
    if method == "agglomerative":
        if len(points) < 2:
            return [0] * len(points), "agglomerative"
        from sklearn.cluster import AgglomerativeClustering  # type: ignore[import-untyped]

        model = AgglomerativeClustering(n_clusters=None, metric="cosine", linkage="average", distance_threshold=distance)
        return [int(label) for label in model.fit_predict(points)], "agglomerative"
    if len(points) < MIN_FINCH:
        return [0] * len(points), f"one cluster: FINCH needs {MIN_FINCH} tasks, {len(points)} support insights"
    from finch import FINCH  # type: ignore[import-untyped]
    from sklearn.metrics import silhouette_score  # type: ignore[import-untyped]

    try:
        partitions, counts, _ = FINCH(points, distance="cosine", verbose=False)
    except (ValueError, FloatingPointError, IndexError) as exc:  # e.g. a value that is not a number
        return [0] * len(points), f"one cluster: FINCH failed ({type(exc).__name__}: {exc})"
    usable = [column for column, count in enumerate(counts) if 2 <= count < len(points)]
    if not usable:
        return [0] * len(points), "finch"
    best = max(usable, key=lambda column: (silhouette_score(points, partitions[:, column], metric="cosine"), -column))
    return [int(label) for label in partitions[:, best]], "finch"


async def _merge(context: RunContext, config: MergeConfig, n: int) -> dict[str, Any]:
    store, namespace = context.store, context.namespace
    # only queries that support an active insight decide where insights go: cluster those (the most recent
    # MAX_CLUSTERED of them), never the whole namespace, whose pairwise distances would not fit in memory
    active = await active_insights(store, namespace)
    supports = await linked(store, namespace, [insight.id for insight in active], SUPPORTED_BY, "out")
    supporting = {
        q.id: q for linked in supports.values() for q in linked if q.kind == QUERY and int(q.properties.get("order", 0)) <= n
    }
    recent = sorted(supporting.values(), key=lambda q: -int(q.properties.get("order", 0)))[:MAX_CLUSTERED]
    queries = [q for q in await store.get_nodes(namespace, [q.id for q in recent]) if q is not None and q.embedding is not None]
    labels, how = clusters([q.embedding or [] for q in queries], config.method, config.distance)
    cluster_of = {q.id: label for q, label in zip(queries, labels, strict=True)}
    # each active insight joins the cluster holding most of its supporting queries
    members: dict[int, list[NodeRecord]] = {}
    for insight in active:
        support = [q.id for q in supports.get(insight.id, []) if q.id in cluster_of]
        if support:
            votes = [cluster_of[q] for q in support]
            members.setdefault(max(sorted(set(votes)), key=votes.count), []).append(insight)
    report: dict[str, Any] = {"clustering": how, "clusters": len(set(labels)), "merged": {}, "dropped": [], "errors": []}
    for label in sorted(members):
        group = members[label]
        for start in range(0, len(group), config.batch):
            batch = group[start : start + config.batch]
            if len(batch) < 2:
                continue
            try:
                reply = await context.llm.structured(
                    merge_messages([i.text or "" for i in batch]), Consolidation, temperature=TEMPERATURE
                )
            except LLMOutputError as exc:
                report["errors"].append(f"cluster {label}: the reply could not be read, nothing merged: {exc}")
                continue
            taken: set[int] = set()
            for index, item in enumerate(reply.insights):
                numbers = list(dict.fromkeys(item.merges))
                missing = [m for m in numbers if not 1 <= m <= len(batch)]
                if missing:
                    report["dropped"].append(f"cluster {label} #{index}: no listed insight {missing} (listed: 1-{len(batch)})")
                    continue
                if taken.intersection(numbers):
                    report["dropped"].append(
                        f"cluster {label} #{index}: insight {sorted(taken.intersection(numbers))} already merged by this reply"
                    )
                    continue
                async with keyed_lock("gmemory", namespace):
                    merged = await _consolidate(
                        store, namespace, [batch[m - 1].id for m in numbers], item.text.strip(), n, f"{label}.{start}.{index}"
                    )
                if merged is None:
                    report["dropped"].append(f"cluster {label} #{index}: an insight it merges is no longer active")
                    continue
                taken.update(numbers)
                report["merged"][merged] = [batch[m - 1].id for m in numbers]
    return report


async def _consolidate(store: GraphStore, namespace: str, originals: list[str], text: str, n: int, key: str) -> str | None:
    """One consolidated insight replacing ``originals``: the highest of their scores, the union of their links."""
    found = await store.get_nodes(namespace, originals)
    if any(o is None or o.properties.get("status", "active") != "active" for o in found):
        return None
    scores = list((await insight_scores(store, namespace, originals)).values())
    supports = await linked(store, namespace, originals, SUPPORTED_BY, "out")
    contradictions = await linked(store, namespace, originals, CONTRADICTED_BY, "out")
    supported = [q.id for original in originals for q in supports[original]]
    contradicted = [q.id for original in originals for q in contradictions[original]]
    new_id = merged_insight_id(namespace, n, key, text)
    created = await store.count_nodes(namespace, INSIGHT) + 1
    score = max(scores)
    merged = new_insight(namespace, new_id, text, score=score, created_order=created, source=f"merge-{n}", merged_from=originals)
    credit, credit_link = credit_record(namespace, f"merge-{n}", new_id, score, "merged")
    retired = [
        o.model_copy(update={"properties": {**o.properties, "status": "merged", "merged_into": new_id}})
        for o in found
        if o is not None
    ]
    await store.upsert_nodes([merged, credit])
    await store.upsert_relationships(
        [
            credit_link,
            *insight_links(namespace, SUPPORTED_BY, new_id, supported),
            *insight_links(namespace, CONTRADICTED_BY, new_id, contradicted),
        ]
        + [RelationshipRecord(namespace=namespace, type=MERGED_INTO, source_id=o, target_id=new_id) for o in originals]
    )
    await store.upsert_nodes(retired)
    await rescore(store, namespace, [new_id])
    return new_id


@node("gmemory.merge", state=TaskState, reads={"evolution"}, writes={"evolution"}, config=MergeConfig)
async def merge(state: TaskState, config: MergeConfig, context: RunContext) -> dict[str, Any]:
    """Every ``every`` tasks: cluster the queries and consolidate each cluster's insights with the model."""
    reports = await run_due(context, "merge", config.every, lambda n: _merge(context, config, n))
    return state.with_evolution("merge", reports) if reports else {}
