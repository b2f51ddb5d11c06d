"""Tri-layer retrieval over one book's index (see :mod:`mnemoflow.nodes.comorag.model`), for a question or a probe.

- **veridical**: the top facts by vector search, one fact-filter call, then personalized PageRank (damping 0.5,
  numpy power iteration) over the local Entity/Chunk/Fact graph around the surviving facts' entities, seeded
  with the facts' scores (divided by each entity's ``num_chunks``) and a small share of each chunk's dense
  score. When no fact survives the filter, dense chunk retrieval stands in.
- **semantic**: vector search over ``SemanticSummary`` (similarity order).
- **episodic**: vector search over ``EpisodicSummary``.

Veridical and episodic evidence is re-sorted into narrative order. Evidence whose id is in ``exclude`` (what
the memory pool already holds) is dropped before the top k are taken and the token budget is spent, so the
next best fills its place; each layer keeps texts greedily
until the next one would overflow its budget. Tokens are approximated from words: ``ceil(words * 4 / 3)``,
about right for English with BPE tokenizers, and needing no tokenizer. The caller embeds the query once and
passes the vector, so every search of one retrieval shares it.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from mnemoflow.memory.batches import MAX_LINKS
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import Link, NodeRecord, ScoredNode, Subgraph
from mnemoflow.nodes.comorag.agents import FactSelection, fact_filter_messages
from mnemoflow.nodes.comorag.model import CHUNK, EPISODIC_SUMMARY, FACT, SEMANTIC_SUMMARY
from mnemoflow.nodes.comorag.state import EvidenceItem
from mnemoflow.nodes.context import RunContext

__all__ = ["RetrievalConfig", "approx_tokens", "personalized_pagerank", "tri_retrieve"]

LOCAL_GRAPH = ["MENTIONS", "SYNONYM", "SUBJECT", "OBJECT", "EXTRACTED_FROM"]


class RetrievalConfig(BaseModel):
    """How much each layer retrieves and keeps."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fact_top_k: int = Field(5, ge=1, le=50, description="Facts given to the fact filter.")
    ver_top_k: int = Field(20, ge=1, le=200, description="Chunks ranked for the veridical layer.")
    sem_top_k: int = Field(10, ge=1, le=200, description="Semantic summaries retrieved.")
    epi_top_k: int = Field(10, ge=1, le=200, description="Episodic summaries retrieved.")
    ver_tokens: int = Field(3600, ge=1, description="Token budget of the veridical layer (the paper's 8 of 13 parts of 6k).")
    sem_tokens: int = Field(900, ge=1, description="Token budget of the semantic layer.")
    epi_tokens: int = Field(900, ge=1, description="Token budget of the episodic layer.")
    damping: float = Field(0.5, gt=0, lt=1, description="PageRank damping.")
    passage_weight: float = Field(0.05, ge=0, le=1, description="Share of a chunk's dense score in the PPR seeds.")


def approx_tokens(text: str) -> int:
    """Tokens of a text, approximated from its words (``ceil(words * 4 / 3)``)."""
    return math.ceil(len(text.split()) * 4 / 3)


def _budget(items: list[EvidenceItem], tokens: int) -> list[EvidenceItem]:
    kept, used = [], 0
    for item in items:
        cost = approx_tokens(item.text)
        if used + cost > tokens:
            break
        kept.append(item)
        used += cost
    return kept


def _item(node: NodeRecord, score: float, order_key: str) -> EvidenceItem:
    order = node.properties.get(order_key, 0)
    return EvidenceItem(
        id=node.id, text=node.text or "", order=float(order) if isinstance(order, int | float) else 0.0, score=score
    )


def _wider(k: int, exclude: set[str]) -> int:
    """How many hits to ask for so that ``k`` remain after dropping the excluded ones."""
    return min(k + len(exclude), 1000)


def _normalized(hits: Sequence[ScoredNode]) -> list[float]:
    """Min-max normalized scores (all 1.0 when they are equal)."""
    scores = [hit.score for hit in hits]
    low, high = min(scores, default=0.0), max(scores, default=0.0)
    return [1.0 if high == low else (score - low) / (high - low) for score in scores]


def personalized_pagerank(
    nodes: list[str], edges: dict[tuple[str, str], float], seeds: dict[str, float], damping: float, *, iterations: int = 100
) -> dict[str, float]:
    """Personalized PageRank over an undirected weighted graph by power iteration (edge lists, O(edges) a step).

    ``r = (1 - d) * s + d * P^T r``, P row-normalized; a dangling node's mass returns to the seeds.
    """
    index = {node: i for i, node in enumerate(nodes)}
    size = len(nodes)
    seed = np.zeros(size)
    for node, mass in seeds.items():
        if node in index:
            seed[index[node]] += mass
    if size == 0 or seed.sum() <= 0:
        return {}
    seed /= seed.sum()
    pairs = [
        (index[left], index[right], strength)
        for (left, right), strength in edges.items()
        if left in index and right in index and left != right
    ]
    source = np.array([left for left, _, _ in pairs] + [right for _, right, _ in pairs], dtype=np.int64)
    target = np.array([right for _, right, _ in pairs] + [left for left, _, _ in pairs], dtype=np.int64)
    weight = np.array([w for _, _, w in pairs] * 2, dtype=float)
    degree = np.bincount(source, weights=weight, minlength=size)
    share = weight / degree[source] if len(pairs) else weight
    dangling = degree == 0
    rank = seed.copy()
    for _ in range(iterations):
        spread = np.bincount(target, weights=rank[source] * share, minlength=size)
        following = damping * (spread + rank[dangling].sum() * seed) + (1 - damping) * seed
        converged = np.abs(following - rank).sum() < 1e-10
        rank = following
        if converged:
            break
    return {node: float(rank[i]) for node, i in index.items()}


async def _local_links(store: GraphStore, namespace: str, node_ids: list[str]) -> dict[str, list[Link]]:
    """The nodes' LOCAL_GRAPH links, either direction, in one query (none for no nodes)."""
    if not node_ids:
        return {}
    return await store.neighbours_of(namespace, node_ids, relationship_types=LOCAL_GRAPH, direction="both", limit=MAX_LINKS)


async def _fact_graphs(
    store: GraphStore, namespace: str, fact_ids: list[str]
) -> tuple[list[list[NodeRecord]], dict[str, Subgraph]]:
    """Each fact's entities, and each entity's local graph (two hops over LOCAL_GRAPH), without vectors.

    Three queries whatever the number of facts: the facts' entities, then one hop over the whole frontier at a
    time; each entity's subgraph is then cut from the links read, as ``neighbourhood(depth=2)`` would give it. A
    node's links are read up to ``MAX_LINKS``.
    """
    around = await store.neighbours_of(namespace, fact_ids, relationship_types=["SUBJECT", "OBJECT"], direction="out", limit=MAX_LINKS)
    entities = [
        sorted({link.node.id: link.node for link in around.get(fact, []) if link.node.id != fact}.values(), key=lambda n: n.id)
        for fact in fact_ids
    ]
    unique = {entity.id: entity for found in entities for entity in found}
    # the union of every entity's two hops: the entities' links, then their neighbours' (each node read once)
    links = await _local_links(store, namespace, sorted(unique))
    links.update(await _local_links(store, namespace, sorted({link.node.id for found in links.values() for link in found} - links.keys())))
    locals_: dict[str, Subgraph] = {}
    for entity_id, entity in sorted(unique.items()):
        distances, nodes = {entity_id: 0}, {entity_id: entity}
        relationships = {link.relationship.id: link.relationship for link in links.get(entity_id, [])}
        for link in links.get(entity_id, []):
            if link.node.id not in distances:
                distances[link.node.id], nodes[link.node.id] = 1, link.node
        for near in [node for node, distance in distances.items() if distance == 1]:
            for link in links.get(near, []):
                relationships[link.relationship.id] = link.relationship
                if link.node.id not in distances:
                    distances[link.node.id], nodes[link.node.id] = 2, link.node
        locals_[entity_id] = Subgraph(
            nodes=sorted(nodes.values(), key=lambda node: (distances[node.id], node.id)),
            relationships=sorted(relationships.values(), key=lambda relationship: relationship.id),
            distances=distances,
        )
    return entities, locals_


async def _veridical(
    context: RunContext, book_id: str, query: str, vector: list[float], exclude: set[str], config: RetrievalConfig
) -> list[EvidenceItem]:
    store, namespace, where = context.store, context.namespace, {"book_id": book_id}
    chunks, facts = await asyncio.gather(
        store.vector_search(namespace, vector, kind=CHUNK, k=_wider(config.ver_top_k, exclude), filters=where),
        store.vector_search(namespace, vector, kind=FACT, k=config.fact_top_k, filters=where),
    )
    scored = [_item(hit.node, score, "order") for hit, score in zip(chunks, _normalized(chunks), strict=True)]
    dense = [item for item in scored if item.id not in exclude][: config.ver_top_k]
    if not facts:
        return dense
    # read every candidate fact's graph while the model filters them: the reads leave the critical path
    graphs = asyncio.ensure_future(_fact_graphs(store, namespace, [hit.node.id for hit in facts]))
    try:
        selection = await context.llm.structured(
            fact_filter_messages(query, [hit.node.text or "" for hit in facts]), FactSelection
        )
    except BaseException:
        graphs.cancel()
        raise
    entities_of, local_graphs = await graphs
    fact_scores = _normalized(facts)
    kept = sorted({number - 1 for number in selection.keep if 1 <= number <= len(facts)})
    if not kept:
        return dense
    seeds: dict[str, float] = {}
    texts: dict[str, NodeRecord] = {}
    edges: dict[tuple[str, str], float] = {}
    for position in kept:
        for entity in entities_of[position]:
            chunks_of = entity.properties.get("num_chunks", 1)
            weight = fact_scores[position] / max(float(chunks_of) if isinstance(chunks_of, int | float) else 1.0, 1.0)
            seeds[entity.id] = seeds.get(entity.id, 0.0) + weight
    for entity_id in list(seeds):
        local = local_graphs[entity_id]
        for node in local.nodes:
            if node.properties.get("book_id") == book_id:
                texts[node.id] = node
        for link in local.relationships:
            score = link.properties.get("score", 1.0)
            edges[(link.source_id, link.target_id)] = float(score) if isinstance(score, int | float) else 1.0
    missing = [item.id for item in dense if item.id not in texts]
    for record in await store.get_nodes(namespace, missing) if missing else []:
        if record is not None:
            texts[record.id] = record
    for item in dense:
        seeds[item.id] = seeds.get(item.id, 0.0) + config.passage_weight * item.score
    ranks = personalized_pagerank(sorted(texts), edges, seeds, config.damping)
    ranked = sorted(
        (node for node in texts.values() if node.kind == CHUNK and node.id not in exclude),
        key=lambda node: (-ranks.get(node.id, 0.0), node.id),
    )
    return [_item(node, ranks.get(node.id, 0.0), "order") for node in ranked[: config.ver_top_k]]


async def tri_retrieve(
    context: RunContext,
    *,
    book_id: str,
    query: str,
    vector: list[float],
    exclude: set[str],
    config: RetrievalConfig,
) -> dict[str, list[EvidenceItem]]:
    """Evidence per layer (``veridical``, ``semantic``, ``episodic``) for ``query`` embedded as ``vector``."""
    store, namespace, where = context.store, context.namespace, {"book_id": book_id}
    # the summary layers need no model call: search them while the veridical layer waits on its fact filter
    veridical, semantic_hits, episodic_hits = await asyncio.gather(
        _veridical(context, book_id, query, vector, exclude, config),
        store.vector_search(namespace, vector, kind=SEMANTIC_SUMMARY, k=_wider(config.sem_top_k, exclude), filters=where),
        store.vector_search(namespace, vector, kind=EPISODIC_SUMMARY, k=_wider(config.epi_top_k, exclude), filters=where),
    )
    semantic = [_item(hit.node, hit.score, "level") for hit in semantic_hits]
    episodic = [_item(hit.node, hit.score, "first_order") for hit in episodic_hits]

    def fresh(items: list[EvidenceItem], k: int) -> list[EvidenceItem]:
        return [item for item in items if item.id not in exclude and item.text.strip()][:k]

    return {
        "veridical": sorted(_budget(fresh(veridical, config.ver_top_k), config.ver_tokens), key=lambda item: item.order),
        "semantic": _budget(fresh(semantic, config.sem_top_k), config.sem_tokens),
        "episodic": sorted(_budget(fresh(episodic, config.epi_top_k), config.epi_tokens), key=lambda item: item.order),
    }
