"""The veridical layer's knowledge graph as records: entities, facts and their links, and synonym pairs.

Pure functions: the model's NER and triples per chunk in, records with stable ids out (embeddings are
added by the caller), so the same extraction always gives the same graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from mnemoflow.memory.records import NodeRecord, RelationshipRecord
from mnemoflow.nodes.comorag.model import ENTITY, FACT, entity_id, fact_id, normalize_name

__all__ = ["GraphRecords", "build_graph_records", "synonym_pairs"]

Extraction = tuple[list[str], list[list[str]]]
"""One chunk's named entities and (subject, predicate, object) triples."""


@dataclass
class GraphRecords:
    """Entity and Fact nodes (without embeddings) and every MENTIONS, SUBJECT, OBJECT, EXTRACTED_FROM link."""

    entities: list[NodeRecord] = field(default_factory=list)
    facts: list[NodeRecord] = field(default_factory=list)
    relationships: list[RelationshipRecord] = field(default_factory=list)


def build_graph_records(
    namespace: str, book_id: str, chunk_ids: Sequence[str], extractions: Sequence[Extraction], generation: str = ""
) -> GraphRecords:
    """Records of the entities and facts extracted from each chunk (``extractions[i]`` is chunk ``i``'s), of the
    index ``generation`` (see :mod:`~mnemoflow.nodes.comorag.model`).

    An entity is a normalized name (:func:`~mnemoflow.nodes.comorag.model.normalize_name`) named by NER or by a
    triple; it keeps the spelling of its first mention and counts the chunks mentioning it (``num_chunks``).
    A fact is a normalized triple, linked to every chunk it was extracted from.
    """
    names: dict[str, str] = {}
    mentions: dict[str, list[int]] = {}
    facts: dict[tuple[str, str, str], tuple[list[str], list[int]]] = {}
    for order, (entities, triples) in enumerate(extractions):
        for triple in triples:
            parts = (normalize_name(triple[0]), normalize_name(triple[1]), normalize_name(triple[2]))
            if all(parts):
                facts.setdefault(parts, (triple, []))[1].append(order)
        for name in [
            *entities,
            *(part for triple in triples if all(map(normalize_name, triple)) for part in (triple[0], triple[2])),
        ]:
            key = normalize_name(name)
            if not key:
                continue
            names.setdefault(key, name.strip())
            chunks = mentions.setdefault(key, [])
            if order not in chunks:
                chunks.append(order)
    records = GraphRecords()
    ids = {key: entity_id(namespace, book_id, key, generation) for key in names}

    def link(type_: str, source: str, target: str) -> None:
        records.relationships.append(RelationshipRecord(namespace=namespace, type=type_, source_id=source, target_id=target))

    for key, name in names.items():
        properties = {"book_id": book_id, "generation": generation, "name": name, "num_chunks": len(mentions[key])}
        records.entities.append(NodeRecord(id=ids[key], namespace=namespace, kind=ENTITY, text=name, properties=properties))
        for order in mentions[key]:
            link("MENTIONS", chunk_ids[order], ids[key])
    for parts, (triple, orders) in facts.items():
        subject, predicate, object_ = triple
        node_id = fact_id(namespace, book_id, subject, predicate, object_, generation)
        properties = {"book_id": book_id, "generation": generation, "subject": subject, "predicate": predicate, "object": object_}
        records.facts.append(
            NodeRecord(id=node_id, namespace=namespace, kind=FACT, text=f"{subject} {predicate} {object_}", properties=properties)
        )
        link("SUBJECT", node_id, ids[parts[0]])
        link("OBJECT", node_id, ids[parts[2]])
        for order in dict.fromkeys(orders):
            link("EXTRACTED_FROM", node_id, chunk_ids[order])
    return records


def synonym_pairs(
    vectors: NDArray[np.float64], *, threshold: float = 0.8, max_neighbours: int = 100, block: int = 1024
) -> list[tuple[int, int, float]]:
    """Pairs ``(i, j, cosine)`` with ``i < j`` whose cosine is at least ``threshold``.

    Each row keeps its ``max_neighbours`` most similar rows; a pair is kept when either side keeps it.
    Similarities are computed ``block`` rows at a time, so memory stays bounded for many entities.
    """
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms == 0, 1.0, norms)
    pairs: dict[tuple[int, int], float] = {}
    for start in range(0, len(unit), block):
        scores = unit[start : start + block] @ unit.T
        for offset, row in enumerate(scores):
            index = start + offset
            row[index] = -np.inf
            candidates = np.flatnonzero(row >= threshold)
            best = candidates[np.argsort(-row[candidates], kind="stable")][:max_neighbours]
            for other in best:
                pair = (min(index, int(other)), max(index, int(other)))
                pairs[pair] = round(float(row[other]), 6)
    return sorted((left, right, score) for (left, right), score in pairs.items())
