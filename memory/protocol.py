"""The ``GraphStore`` contract every memory backend fulfils, and the ``Embedder`` contract.

The conformance suite in ``tests/conformance/`` checks each guarantee written here against every backend.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Literal, Protocol, runtime_checkable

from mnemoflow.memory.names import NameRegistry
from mnemoflow.memory.records import (
    Direction,
    JsonScalar,
    Link,
    NamespaceSummary,
    NeighbourPage,
    NodeRecord,
    RelationshipRecord,
    ScoredNode,
    Subgraph,
)

__all__ = ["Embedder", "GraphStore", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1
"""The schema version this code writes; ``setup()`` migrates older stores up to it."""


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into vectors of a fixed dimension."""

    @property
    def model(self) -> str:
        """Name of the model; stores record it so that vectors of two models are never mixed."""
        ...

    @property
    def dimension(self) -> int:
        """Length of every vector returned."""
        ...

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Return one vector per text, in input order. Raises ``EmbeddingError``."""
        ...


@runtime_checkable
class GraphStore(Protocol):
    """An async store of namespaced nodes and relationships with vector and keyword search.

    Guarantees shared by every method:

    - **Namespaces.** Every read takes a namespace and returns only records of that namespace; a record
      written in one namespace is invisible from every other. A blank namespace raises
      ``InvalidNamespaceError``.
    - **Names.** Kinds and relationship types must be registered in ``registry`` and be plain identifiers;
      anything else raises ``InvalidNameError`` before a query is built. Values are always query parameters.
    - **Errors.** Driver errors are translated: ``StoreUnavailableError`` when the database cannot be
      reached (after the driver's own retries of transient faults), ``StoreError`` otherwise.

    Lifecycle: construct, ``await setup()``, use, ``await close()`` (or ``async with``).
    """

    @property
    def backend(self) -> Literal["sqlite", "neo4j"]:
        """Which backend this is; for messages and reports, never for branching in upper layers."""
        ...

    @property
    def registry(self) -> NameRegistry:
        """The kinds and relationship types this store accepts."""
        ...

    async def setup(self) -> None:
        """Create constraints and indexes and migrate the schema to ``SCHEMA_VERSION``; idempotent.

        Records the embedding model and dimension on first use; raises ``SchemaError`` when the store was
        built with another model or dimension, or by a newer mnemoflow.
        """
        ...

    async def schema_version(self) -> int:
        """The schema version stored (0 before ``setup()``)."""
        ...

    async def close(self) -> None:
        """Release connections; the store cannot be used afterwards."""
        ...

    async def upsert_nodes(self, nodes: Sequence[NodeRecord], *, new: Collection[str] = ()) -> int:
        """Insert or update nodes by (namespace, id), all in one transaction: all are written or none.

        Writing the same batch twice leaves the same graph (``created_at`` is kept; ``updated_at`` changes
        only when content changes). Raises ``ConflictError`` if an id exists with another kind,
        ``EmbeddingDimensionError`` for a vector of the wrong length, ``InvalidRecordError`` for properties
        that cannot be stored faithfully. Returns the number of records written.

        ``new`` names ids of ``nodes`` that must not exist yet: if one does, ``ConflictError`` and nothing is
        written. Of writers racing to create the same new id, exactly one succeeds (a claim, for
        compare-and-set: write the next version's record as new).
        """
        ...

    async def upsert_relationships(self, relationships: Sequence[RelationshipRecord]) -> int:
        """Insert or update relationships by (namespace, id), in one transaction: all or none.

        Both endpoints must exist in the relationship's namespace, else ``MissingEndpointError`` naming them.
        Returns the number of records written.
        """
        ...

    async def get_nodes(self, namespace: str, ids: Sequence[str]) -> list[NodeRecord | None]:
        """The nodes with these ids, in input order, ``None`` where a node does not exist."""
        ...

    async def neighbourhood(
        self,
        namespace: str,
        node_id: str,
        *,
        depth: int = 1,
        relationship_types: Sequence[str] | None = None,
        direction: Direction = "both",
        include_embeddings: bool = True,
    ) -> Subgraph:
        """Nodes within ``depth`` hops (1 to 10) of a node, following only the given types and direction.

        Returns an empty subgraph when the start node does not exist. With ``include_embeddings=False`` the
        nodes reached come without their vectors (much less to read when only the shape is wanted).
        """
        ...

    async def neighbours_of(
        self,
        namespace: str,
        node_ids: Sequence[str],
        *,
        relationship_types: Sequence[str] | None = None,
        direction: Direction = "both",
        kinds: Sequence[str] | None = None,
        limit: int = 1000,
    ) -> dict[str, list[Link]]:
        """The links of many nodes at once, in one query: for each node, its relationships of ``relationship_types``
        (all types if ``None``; an empty list matches none) in ``direction`` ("out": the node is the source; "in": the
        target; "both") whose other end is in the namespace and, if ``kinds`` is given, of one of those kinds (an
        empty list matches none).

        Keys are the ids of ``node_ids`` that exist, once each, in input order (a missing id has no key; an existing
        node without matching links maps to ``[]``). Each node's links are ordered by (type, other end's id,
        relationship id), at most ``limit`` (1 to ``MAX_LINKS``) of them: ask for one more than you need to learn
        whether any were left. A self-loop counts once. Nodes come without embeddings. Unknown types or kinds raise
        ``InvalidNameError``; a bad limit or direction ``InvalidQueryError``.
        """
        ...

    async def vector_search(
        self,
        namespace: str,
        vector: Sequence[float],
        *,
        kind: str,
        k: int = 10,
        filters: Mapping[str, JsonScalar] | None = None,
        include_embeddings: bool = False,
    ) -> list[ScoredNode]:
        """The ``k`` nodes of ``kind`` most similar to ``vector`` (cosine), best first.

        ``filters`` keeps only nodes whose top-level property equals the value. The kind must be registered
        with ``embedded=True``; the vector must have the store's dimension (``EmbeddingDimensionError``).
        Hits come without their vectors unless ``include_embeddings`` asks for them (a vector is most of a
        hit's bytes). Scores are exact cosines; candidates may come from an approximate index, so on a large kind a
        true neighbour can be missed (recall@10 is measured by ``bench/store.py``).
        """
        ...

    async def keyword_search(
        self, namespace: str, query: str, *, k: int = 10, kinds: Sequence[str] | None = None
    ) -> list[ScoredNode]:
        """The ``k`` nodes whose text best matches any word of ``query`` (BM25), best first.

        The query is plain words: operators and punctuation are not interpreted.
        """
        ...

    async def delete_nodes(self, namespace: str, ids: Sequence[str]) -> int:
        """Delete nodes and every relationship touching them; returns the number of nodes deleted."""
        ...

    async def delete_expired(self, now: float) -> int:
        """Delete every node, in every namespace, whose ``expires_at`` property is <= ``now``, with its relationships.

        ``now`` and ``expires_at`` are Unix epoch seconds; only a top-level int or float ``expires_at`` counts
        (a node without one, or with another type, never expires). One transaction; returns the number of
        nodes deleted.
        """
        ...

    async def count_nodes(self, namespace: str, kind: str | None = None) -> int:
        """Number of nodes in the namespace, optionally of one kind."""
        ...

    async def count_relationships(self, namespace: str, type: str | None = None) -> int:
        """Number of relationships in the namespace, optionally of one type."""
        ...

    async def count_nodes_by_kind(self, namespace: str) -> dict[str, int]:
        """Number of nodes of each kind in the namespace, by kind name in order; kinds with none are absent.

        Reads every kind stored, registered in this process or not (what ``mnemoflow store info`` lists).
        """
        ...

    # -- browsing: bounded reads for a UI ------------------------------------------------------------------

    async def namespaces(self) -> list[NamespaceSummary]:
        """Every namespace holding at least one node, sorted by name, with its node count."""
        ...

    async def list_nodes(
        self,
        namespace: str,
        *,
        kind: str | None = None,
        where: Mapping[str, JsonScalar] | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[NodeRecord]:
        """One page of the namespace's nodes (optionally of one kind), without their embeddings.

        ``where`` keeps only nodes whose top-level property equals the value, for every key (as the filters of
        :meth:`vector_search`: keys are plain identifiers, else ``InvalidNameError``; values are JSON scalars,
        else ``InvalidQueryError``; a node without the property never matches). Newest first: by ``updated_at``,
        then ``created_at``, then id, all descending, so pages are stable. ``limit`` (1 to 1000) and ``offset``
        (0 or more) are checked (``InvalidQueryError``); the filtering and the paging happen in the query.
        """
        ...

    async def neighbours(self, namespace: str, node_id: str, *, limit: int = 50, offset: int = 0) -> NeighbourPage:
        """One page of the relationships touching a node, in either direction, with their other endpoints.

        Ordered by (type, other endpoint's id, relationship id); a self-loop counts once. Nodes come without
        embeddings. When the node does not exist the page has ``node=None``, no relationships and ``total=0``.
        ``limit`` and ``offset`` are checked as in :meth:`list_nodes`; the paging happens in the query.
        """
        ...
