"""The veridical layer's graph as HippoRAG 2 builds it, read whole from a book's index, and personalized PageRank on it.

Nodes are the book's chunks and the entities they mention. Edges are undirected; a pair joined several ways
(two entities that share facts and are synonyms) gets the sum of the weights:

- entity-entity for the facts linking two entities (subject and object): weight = how many facts link them,
  HippoRAG 2's co-occurrence count;
- chunk-entity for every ``MENTIONS``: weight 1;
- entity-entity for every ``SYNONYM {score}``: weight = the cosine.

The facts' edges are derived when the graph is read, from the ``SUBJECT`` and ``OBJECT`` links of the Fact records
(facts are not nodes), so every book the ingestion has written, before or after this reading, gives the same graph
with nothing to add. Reading it takes two queries whatever the book's size: the chunks' mentions, then the
entities' facts and synonyms (each node's links up to ``MAX_LINKS``).

Seeds, as HippoRAG 2's retrieval sets them: each kept fact's score goes to its subject and object; an entity's
weight is the mean score of the kept facts naming it, divided by the number of chunks mentioning it (a rare
entity says more), and only the ``top_k`` entities of highest mean score are seeded. The caller adds every
chunk's dense score times the passage weight.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from mnemoflow.memory.batches import MAX_LINKS
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import Direction, Link, NodeRecord
from mnemoflow.nodes.comorag.model import ENTITY

__all__ = ["BookGraph", "entity_seeds", "personalized_pagerank", "read_book_graph"]

Edges = dict[tuple[str, str], float]
"""Undirected weighted edges, each pair once under its two ids in sorted order."""


@dataclass(frozen=True)
class BookGraph:
    """One book's graph for personalized PageRank (see the module docstring)."""

    chunks: list[str]
    """The chunks' ids, in reading order."""
    entities: dict[str, NodeRecord]
    """The entities the chunks mention, by id (records without vectors)."""
    facts: dict[str, tuple[str, str]]
    """Every fact linking two of those entities: its (subject id, object id)."""
    edges: Edges

    @property
    def nodes(self) -> list[str]:
        """Every node's id: the chunks, then the entities."""
        return [*self.chunks, *self.entities]


def _join(edges: Edges, left: str, right: str, weight: float) -> None:
    """Add ``weight`` to the undirected edge between two distinct nodes."""
    if left != right:
        pair = (left, right) if left < right else (right, left)
        edges[pair] = edges.get(pair, 0.0) + weight


async def _links(
    store: GraphStore, namespace: str, ids: list[str], types: list[str], direction: Direction, *, kinds: list[str] | None = None
) -> dict[str, list[Link]]:
    """The nodes' links of ``types`` (none for no nodes), up to ``MAX_LINKS`` each."""
    if not ids:
        return {}
    return await store.neighbours_of(namespace, ids, relationship_types=types, direction=direction, kinds=kinds, limit=MAX_LINKS)


async def read_book_graph(store: GraphStore, namespace: str, chunk_ids: Sequence[str]) -> BookGraph:
    """The graph of these chunks (a whole book's) and of the entities they mention, in two queries."""
    chunks = list(dict.fromkeys(chunk_ids))
    edges: Edges = {}
    entities: dict[str, NodeRecord] = {}
    for chunk, links in (await _links(store, namespace, chunks, ["MENTIONS"], "out", kinds=[ENTITY])).items():
        for link in links:
            entities[link.node.id] = link.node
            _join(edges, chunk, link.node.id, 1.0)
    around = await _links(store, namespace, sorted(entities), ["SUBJECT", "OBJECT", "SYNONYM"], "both")
    roles: dict[str, dict[str, str]] = {}
    synonyms: dict[tuple[str, str], float] = {}
    for links in around.values():
        for link in links:  # a fact's link is read from its entity, a synonym's from both of its ends
            relationship = link.relationship
            if relationship.type == "SYNONYM":
                score = relationship.properties.get("score", 1.0)
                synonyms[(relationship.source_id, relationship.target_id)] = float(score) if isinstance(score, int | float) else 1.0
            else:
                roles.setdefault(relationship.source_id, {})[relationship.type] = relationship.target_id
    for (left, right), score in synonyms.items():
        if left in entities and right in entities:
            _join(edges, left, right, score)
    facts = {
        fact: (ends["SUBJECT"], ends["OBJECT"])
        for fact, ends in sorted(roles.items())
        if ends.get("SUBJECT") in entities and ends.get("OBJECT") in entities
    }
    for subject, object_ in facts.values():
        _join(edges, subject, object_, 1.0)
    return BookGraph(chunks=chunks, entities=entities, facts=facts, edges=edges)


def entity_seeds(kept: Sequence[tuple[str, float]], graph: BookGraph, top_k: int) -> dict[str, float]:
    """Seed weights of the entities of the kept facts, given as (fact id, score): the mean score of the kept facts
    naming an entity, divided by its ``num_chunks``; the ``top_k`` entities of highest mean score (ties by id)."""
    scores: dict[str, list[float]] = {}
    for fact, score in kept:
        for entity in dict.fromkeys(graph.facts.get(fact, ())):
            scores.setdefault(entity, []).append(score)
    means = {entity: sum(found) / len(found) for entity, found in scores.items()}
    chosen = sorted(means, key=lambda entity: (-means[entity], entity))[:top_k]

    def chunks_of(entity: str) -> float:
        count = graph.entities[entity].properties.get("num_chunks", 1)
        return max(float(count) if isinstance(count, int | float) else 1.0, 1.0)

    return {entity: means[entity] / chunks_of(entity) for entity in chosen}


def personalized_pagerank(
    nodes: Sequence[str], edges: Mapping[tuple[str, str], float], seeds: Mapping[str, float], damping: float, *, iterations: int = 100
) -> dict[str, float]:
    """Personalized PageRank over an undirected weighted graph by power iteration (edge lists, O(edges) a step).

    ``r = (1 - d) * s + d * P^T r``, P row-normalized; a dangling node's mass returns to the seeds.
    """
    index = {node: i for i, node in enumerate(nodes)}
    size = len(index)
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
