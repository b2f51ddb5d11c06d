"""Record models: what the memory layer stores and returns."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from mnemoflow.errors import InvalidRecordError

__all__ = [
    "JsonScalar",
    "Direction",
    "Link",
    "NamespaceSummary",
    "NeighbourPage",
    "NodeRecord",
    "RelationshipRecord",
    "ScoredNode",
    "Subgraph",
    "encode_properties",
    "stable_id",
]

Direction = Literal["out", "in", "both"]
"""Which relationships a traversal follows from a node: outgoing, incoming, or either."""

JsonScalar = str | int | float | bool


def stable_id(*parts: object) -> str:
    """A deterministic id from its parts (namespace, kind and content, or run, node and step).

    The same parts always give the same id, so a retried or resumed write is an update, never a duplicate.
    """
    payload = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


def encode_properties(properties: dict[str, Any], *, where: str) -> str:
    """Serialize properties to canonical JSON, refusing what would not read back the same."""
    try:
        return json.dumps(properties, sort_keys=True, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidRecordError(
            f"{where}: properties must be JSON values (str, int, finite float, bool, None, lists and dicts "
            f"with string keys): {exc}"
        ) from exc


class NodeRecord(BaseModel):
    """A node of memory: one record of a registered kind in one namespace."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(min_length=1, max_length=512)
    """Unique within the namespace; derive it with :func:`stable_id` so that writes are idempotent."""
    namespace: str
    """The tenant or project this record belongs to; every read filters by it."""
    kind: str
    """A kind registered in the store's :class:`~mnemoflow.memory.names.NameRegistry`; becomes the node's label."""
    properties: dict[str, Any] = Field(default_factory=dict)
    """Any JSON value per key; top-level scalars can be used as search filters.

    ``expires_at`` (Unix epoch seconds, int or float) marks a node as temporary: ``GraphStore.delete_expired``
    removes it, with its relationships, once that time has passed.
    """
    text: str | None = None
    """Text indexed for keyword search."""
    embedding: list[float] | None = None
    """Vector indexed for similarity search (kinds registered with ``embedded=True``); finite values only."""
    created_at: datetime | None = None
    """Set by the store when the record is first written."""
    updated_at: datetime | None = None
    """Set by the store whenever the record's content changes."""


class RelationshipRecord(BaseModel):
    """A directed, typed relationship between two nodes of the same namespace.

    Its id is derived from (namespace, type, source, target, key), so an id always names the same ends;
    give distinct ``key`` values for several relationships of one type between the same two nodes.
    """

    model_config = ConfigDict(frozen=True)

    namespace: str
    type: str
    """A relationship type registered in the store's registry."""
    source_id: str = Field(min_length=1, max_length=512)
    target_id: str = Field(min_length=1, max_length=512)
    key: str = Field("", max_length=512)
    """Tells apart relationships of one type between the same two nodes; empty for the usual one."""
    properties: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def id(self) -> str:
        """Stable id of (namespace, type, source, target, key)."""
        return stable_id(self.namespace, self.type, self.source_id, self.target_id, self.key)


class ScoredNode(BaseModel):
    """A search hit: the node and its score (higher is better)."""

    model_config = ConfigDict(frozen=True)

    node: NodeRecord
    score: float
    """Cosine similarity for vector search; the backend's BM25 relevance for keyword search."""


class Subgraph(BaseModel):
    """Nodes and relationships around a start node, as returned by a neighbourhood query."""

    model_config = ConfigDict(frozen=True)

    nodes: list[NodeRecord]
    """The start node first, then by hop distance, then by id."""
    relationships: list[RelationshipRecord]
    """Every relationship followed, sorted by id."""
    distances: dict[str, int]
    """Hop distance of each node from the start node."""


class NamespaceSummary(BaseModel):
    """A namespace that holds nodes, as listed by ``GraphStore.namespaces``."""

    model_config = ConfigDict(frozen=True)

    name: str
    nodes: int
    """How many nodes the namespace holds (at least one)."""


class Link(BaseModel):
    """One relationship of a node with the node at its other end (without its embedding), as ``neighbours_of`` reads it."""

    model_config = ConfigDict(frozen=True)

    relationship: RelationshipRecord
    node: NodeRecord
    """The other end; for a self-loop, the node itself."""


class NeighbourPage(BaseModel):
    """One page of the relationships touching a node, with the nodes at their other ends (no embeddings)."""

    model_config = ConfigDict(frozen=True)

    node: NodeRecord | None
    """The centre node, without its embedding; ``None`` when it does not exist."""
    relationships: list[RelationshipRecord]
    """This page, ordered by (type, other endpoint's id, relationship id); a self-loop appears once."""
    nodes: list[NodeRecord]
    """The distinct other endpoints of this page's relationships, in order of first appearance, without embeddings."""
    total: int
    """How many relationships touch the centre node in all (0 when it does not exist)."""
    offset: int
    limit: int
