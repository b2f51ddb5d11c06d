"""Checks and encodings shared by every backend, applied before any query is built."""

from __future__ import annotations

import hashlib
import math
import re
import struct
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from mnemoflow.errors import (
    EmbeddingDimensionError,
    InvalidNameError,
    InvalidQueryError,
    InvalidRecordError,
    SchemaError,
)
from mnemoflow.memory.names import KindSpec, NameRegistry, validate_identifier, validate_namespace
from mnemoflow.memory.protocol import SCHEMA_VERSION
from mnemoflow.memory.records import JsonScalar, NodeRecord, RelationshipRecord, encode_properties

__all__ = [
    "MAX_DEPTH",
    "MAX_K",
    "MAX_LINKS",
    "MAX_PAGE",
    "PreparedNode",
    "PreparedRelationship",
    "check_depth",
    "check_direction",
    "check_dimension",
    "check_recorded_schema",
    "check_vector_query",
    "check_filters",
    "check_ids",
    "check_k",
    "check_links_limit",
    "check_page",
    "filterable_properties",
    "prepare_nodes",
    "prepare_relationships",
    "query_terms",
    "utc_now",
]

MAX_DEPTH = 10
MAX_K = 10_000
MAX_PAGE = 1000
MAX_LINKS = 10_000
"""Most links ``neighbours_of`` returns per node."""
_WORD = re.compile(r"\w+", re.UNICODE)


def utc_now() -> datetime:
    """The timestamp written as ``created_at``/``updated_at``, always in UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class PreparedNode:
    """A validated node with its encodings, ready for any backend."""

    record: NodeRecord
    kind: KindSpec
    properties_json: str
    embedding_bytes: bytes | None
    """The embedding as little-endian float64, for hashing and for stores that keep vectors as blobs."""
    content_hash: str
    """Hash of what the caller controls (kind, properties, text, embedding): same content, same hash."""


@dataclass(frozen=True)
class PreparedRelationship:
    """A validated relationship with its encodings."""

    record: RelationshipRecord
    properties_json: str
    content_hash: str


def check_dimension(vector: Sequence[float], dimension: int, *, where: str) -> None:
    """Refuse a vector whose length is not the store's dimension, naming both."""
    if len(vector) != dimension:
        raise EmbeddingDimensionError(
            f"{where}: vector has dimension {len(vector)} but the store's vector indexes have dimension {dimension}"
        )


def prepare_nodes(nodes: Sequence[NodeRecord], registry: NameRegistry, dimension: int) -> list[PreparedNode]:
    """Validate a batch (namespaces, kinds, vectors, properties); the last record wins for a repeated id."""
    latest: dict[tuple[str, str], NodeRecord] = {}
    namespaces: set[str] = set()
    for node in nodes:
        if not isinstance(node, NodeRecord):
            raise InvalidRecordError(f"expected NodeRecord, got {type(node).__name__}")
        if node.namespace not in namespaces:
            validate_namespace(node.namespace)
            namespaces.add(node.namespace)
        latest[(node.namespace, node.id)] = node
    prepared = []
    for node in latest.values():
        where = f"node {node.id!r} of kind {node.kind!r}"
        kind = registry.kind(node.kind)
        embedding_bytes = None
        if node.embedding is not None:
            if not kind.embedded:
                raise InvalidRecordError(f"{where} has an embedding but the kind is not registered with embedded=True")
            check_dimension(node.embedding, dimension, where=where)
            # struct packs a list of floats about twice as fast as building an array from it
            embedding_bytes = struct.pack(f"<{dimension}d", *node.embedding)
            if not np.isfinite(np.frombuffer(embedding_bytes, dtype="<f8")).all():
                raise InvalidRecordError(f"{where}: embedding contains NaN or infinity")
        properties_json = encode_properties(node.properties, where=where)
        digest = hashlib.sha256()
        for part in (node.kind, properties_json, "\x00" if node.text is None else "\x01" + node.text):
            digest.update(part.encode("utf-8") + b"\x1f")
        digest.update(embedding_bytes or b"")
        prepared.append(PreparedNode(node, kind, properties_json, embedding_bytes, digest.hexdigest()))
    return prepared


def prepare_relationships(relationships: Sequence[RelationshipRecord], registry: NameRegistry) -> list[PreparedRelationship]:
    """Validate a batch of relationships; the last record wins for a repeated id."""
    latest: dict[tuple[str, str], RelationshipRecord] = {}
    for relationship in relationships:
        if not isinstance(relationship, RelationshipRecord):
            raise InvalidRecordError(f"expected RelationshipRecord, got {type(relationship).__name__}")
        validate_namespace(relationship.namespace)
        registry.relationship_type(relationship.type)
        latest[(relationship.namespace, relationship.id)] = relationship
    prepared = []
    for record in latest.values():
        properties_json = encode_properties(record.properties, where=f"relationship {record.id!r}")
        content_hash = hashlib.sha256(f"{record.id}\x1f{properties_json}".encode()).hexdigest()
        prepared.append(PreparedRelationship(record, properties_json, content_hash))
    return prepared


def filterable_properties(properties: Mapping[str, Any]) -> dict[str, JsonScalar]:
    """Top-level properties a search can filter on: identifier keys with str, int, float or bool values."""
    return {
        key: value
        for key, value in properties.items()
        if isinstance(value, str | int | float | bool) and re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,62}", key)
    }


def check_vector_query(
    registry: NameRegistry,
    kind: str,
    vector: Sequence[float],
    dimension: int,
    k: int,
    filters: Mapping[str, JsonScalar] | None,
) -> dict[str, JsonScalar]:
    """Validate a vector search; returns the checked filters."""
    if not registry.kind(kind).embedded:
        raise InvalidNameError(f"node kind {kind!r} is not registered with embedded=True, so it has no vector index")
    check_dimension(vector, dimension, where=f"vector search on {kind!r}")
    check_k(k)
    return check_filters(filters)


def check_filters(filters: Mapping[str, JsonScalar] | None) -> dict[str, JsonScalar]:
    """Validate search filters: identifier keys, scalar values."""
    checked: dict[str, JsonScalar] = {}
    for key, value in (filters or {}).items():
        validate_identifier(key, what="filter property")
        if not isinstance(value, str | int | float | bool) or (isinstance(value, float) and not math.isfinite(value)):
            raise InvalidQueryError(f"filter {key!r}: value {value!r} must be a string, a number or a boolean")
        if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
            raise InvalidQueryError(f"filter {key!r}: integer {value!r} is outside the 64-bit range the stores keep")
        checked[key] = value
    return checked


def check_ids(ids: Sequence[str]) -> list[str]:
    """Validate a list of ids given to a read."""
    if isinstance(ids, str):
        raise InvalidQueryError("ids must be a sequence of strings, not a single string")
    for value in ids:
        if not isinstance(value, str) or not value:
            raise InvalidQueryError(f"id {value!r} must be a non-empty string")
    return list(ids)


def check_k(k: int) -> int:
    """Validate a result count."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise InvalidQueryError(f"k={k!r} must be an integer from 1 to {MAX_K}")
    return k


def check_page(limit: int, offset: int) -> tuple[int, int]:
    """Validate one page of a listing: ``limit`` records (1 to ``MAX_PAGE``) after skipping ``offset``."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise InvalidQueryError(f"limit={limit!r} must be an integer from 1 to {MAX_PAGE}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise InvalidQueryError(f"offset={offset!r} must be an integer of 0 or more")
    return limit, offset


def check_links_limit(limit: int) -> int:
    """Validate ``neighbours_of``'s per-node ``limit`` (1 to ``MAX_LINKS``)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LINKS:
        raise InvalidQueryError(f"limit={limit!r} must be an integer from 1 to {MAX_LINKS}")
    return limit


def check_now(now: float) -> float:
    """Validate a moment given as Unix epoch seconds (the expiry cut-off)."""
    if isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now):
        raise InvalidQueryError(f"now={now!r} must be a finite number of Unix epoch seconds")
    return float(now)


def check_depth(depth: int) -> int:
    """Validate a traversal depth."""
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= MAX_DEPTH:
        raise InvalidQueryError(f"depth={depth!r} must be an integer from 1 to {MAX_DEPTH}")
    return depth


def check_direction(direction: str) -> str:
    """Validate a traversal direction."""
    if direction not in ("out", "in", "both"):
        raise InvalidQueryError(f"direction {direction!r} must be 'out', 'in' or 'both'")
    return direction


def query_terms(query: str) -> list[str]:
    """Split a keyword query into lower-case words; every backend searches for any of them."""
    return _WORD.findall(query.lower())


def check_recorded_schema(
    *, location: str, stored_version: int, stored_model: str | None, stored_dimension: int | None, model: str, dimension: int
) -> None:
    """Refuse a store written by a newer mnemoflow, or built with another embedding model or dimension."""
    if stored_version > SCHEMA_VERSION:
        raise SchemaError(
            f"{location} has schema version {stored_version} but this mnemoflow writes version {SCHEMA_VERSION}; "
            "upgrade mnemoflow"
        )
    if stored_model is not None and (stored_model, stored_dimension) != (model, dimension):
        raise SchemaError(
            f"{location} holds vectors of model {stored_model!r} (dimension {stored_dimension}) but the configured "
            f"embedder is {model!r} (dimension {dimension}); use the same embedder or another store"
        )


def claimed(prepared: list[PreparedNode], new: Collection[str]) -> list[PreparedNode]:
    """The prepared nodes whose ids must be new; each id of ``new`` must be one of the batch's."""
    by_id = {item.record.id: item for item in prepared}
    missing = sorted(set(new) - by_id.keys())
    if missing:
        raise InvalidQueryError(f"new names ids that are not in the batch: {', '.join(map(repr, missing[:10]))}")
    return [by_id[node_id] for node_id in sorted(set(new))]
