"""The Neo4j store: official async driver, managed transactions, batched ``UNWIND`` upserts.

A whole upsert call runs in one managed transaction, so after the driver's retries of transient faults
(see :mod:`mnemoflow.memory.neo4j.connection`) it is either fully written or not at all.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, TypeVar

import numpy as np
from neo4j import AsyncManagedTransaction
from neo4j import exceptions as neo4j_errors

from mnemoflow.errors import (
    ConflictError,
    MissingEndpointError,
)
from mnemoflow.memory import traversal
from mnemoflow.memory.batches import (
    PreparedNode,
    PreparedRelationship,
    check_direction,
    check_filters,
    check_ids,
    check_k,
    check_links_limit,
    check_now,
    check_page,
    check_recorded_schema,
    check_vector_query,
    claimed,
    filterable_properties,
    prepare_nodes,
    prepare_relationships,
    query_terms,
    utc_now,
)
from mnemoflow.memory.names import REGISTRY, NameRegistry, validate_namespace
from mnemoflow.memory.neo4j import queries
from mnemoflow.memory.neo4j.connection import Neo4jConnection
from mnemoflow.memory.protocol import SCHEMA_VERSION
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
from mnemoflow.redaction import redact_urls

__all__ = ["VECTOR_POOL_BASE_POPULATION", "VECTOR_POOL_GROWTH", "VECTOR_POOL_PER_HIT", "WRITE_BATCH_ROWS", "Neo4jStore"]

T = TypeVar("T")

WRITE_BATCH_ROWS = 1000
"""Rows per ``UNWIND`` statement of an upsert (``write_chunk_rows``'s default), chosen by ``bench/store.py``'s sweep
of batch sizes (384 dimensions, vector index online); a loader that calls ``upsert_nodes`` in batches of this size
sends one statement per call."""

VECTOR_POOL_PER_HIT = 3.0
"""Candidates asked of the vector index per hit wanted, for an index of up to ``VECTOR_POOL_BASE_POPULATION`` nodes
all of which would survive the namespace and filters. The index is approximate and searches only as wide as the
candidates asked for, so more than ``k`` are asked: ``bench/store.py`` measured recall@10 0.9975 at 10k nodes with 3
per hit (0.98 with 2)."""
VECTOR_POOL_BASE_POPULATION = 10_000
VECTOR_POOL_GROWTH = 5.0
"""Candidates per hit added for each tenfold of the index's population above ``VECTOR_POOL_BASE_POPULATION``: at
100k nodes 3 per hit gave recall@10 0.969, 5 gave 0.9885, 8 gave 0.994 (``bench/store.py``'s data)."""
_MAX_SHARES = 4096
"""Most (namespace, kind, filter keys) survivor shares a store remembers; the oldest are forgotten first."""
_MIGRATIONS: dict[int, Callable[[], list[str]]] = {1: queries.schema_statements}
"""Schema version -> the statements that bring a database from the previous version to it."""


def _node_from_map(values: Mapping[str, Any]) -> NodeRecord:
    return NodeRecord(
        id=values["id"],
        namespace=values["namespace"],
        kind=values["kind"],
        properties=json.loads(values["properties"]),
        text=values.get("text"),
        embedding=values.get("embedding"),
        created_at=datetime.fromisoformat(values["created_at"]),
        updated_at=datetime.fromisoformat(values["updated_at"]),
    )


def _relationship_from_map(values: Mapping[str, Any]) -> RelationshipRecord:
    return RelationshipRecord(
        namespace=values["namespace"],
        type=values["type"],
        source_id=values["source_id"],
        target_id=values["target_id"],
        key=values["key"],
        properties=json.loads(values["properties"]),
        created_at=datetime.fromisoformat(values["created_at"]),
        updated_at=datetime.fromisoformat(values["updated_at"]),
    )


def _vector_pool(k: int, share: float, population: int) -> int:
    """How many candidates to ask an index of ``population`` nodes for, to get ``k`` good hits when a ``share`` of
    the candidates survive the namespace and filters."""
    decades = max(0.0, math.log10(max(population, 1) / VECTOR_POOL_BASE_POPULATION))
    per_hit = VECTOR_POOL_PER_HIT + VECTOR_POOL_GROWTH * decades
    return max(k, math.ceil(k * per_hit / share))


def _node_row(item: PreparedNode) -> dict[str, Any]:
    record = item.record
    values: dict[str, Any] = {
        "namespace": record.namespace,
        "id": record.id,
        "kind": record.kind,
        "properties": item.properties_json,
        "content_hash": item.content_hash,
        "text": record.text,
        "embedding": record.embedding,
    }
    values.update({f"p_{key}": value for key, value in filterable_properties(record.properties).items()})
    return {"values": values}


def _relationship_row(item: PreparedRelationship) -> dict[str, Any]:
    record = item.record
    return {
        "source_id": record.source_id,
        "target_id": record.target_id,
        "values": {
            "namespace": record.namespace,
            "id": record.id,
            "key": record.key,
            "properties": item.properties_json,
            "content_hash": item.content_hash,
        },
    }


def _by(items: Sequence[T], key: Callable[[T], str]) -> dict[str, list[T]]:
    groups: dict[str, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return groups


class Neo4jStore:
    """A :class:`~mnemoflow.memory.protocol.GraphStore` on a Neo4j 5.26+ server.

    Every node carries the label ``MfNode`` (the (namespace, id) key and the text index) and its kind's
    label (the kind's vector index); relationships carry their type.
    """

    backend: Literal["neo4j"] = "neo4j"

    def __init__(
        self,
        uri: str,
        *,
        embedding_model: str,
        embedding_dimension: int,
        auth: tuple[str, str] | None = None,
        database: str = "neo4j",
        registry: NameRegistry = REGISTRY,
        max_transaction_retry_time: float = 30.0,
        connection_timeout: float = 10.0,
        write_chunk_rows: int = WRITE_BATCH_ROWS,
    ) -> None:
        self.uri = uri
        self.database = database
        self.embedding_model = embedding_model
        self.embedding_dimension = embedding_dimension
        self.registry = registry
        self.write_chunk_rows = write_chunk_rows
        self._connection = Neo4jConnection(
            uri,
            auth=auth,
            database=database,
            max_transaction_retry_time=max_transaction_retry_time,
            connection_timeout=connection_timeout,
        )
        self._query = self._connection.query
        self._write = self._connection.write
        self._ready_kinds: set[str] = set()
        self._ready_types: set[str] = set()
        self._schema_lock = asyncio.Lock()
        self._survivor_shares: dict[tuple[str, ...], float] = {}
        """(namespace, kind, filter keys...) -> share of the last vector search's candidates that survived them."""
        self._populations: dict[str, int] = {}
        """Kind -> how many nodes its vector index held at the last search."""

    async def __aenter__(self) -> Neo4jStore:
        await self.setup()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- lifecycle --------------------------------------------------------------------------------------

    async def setup(self) -> None:
        await self._connection.verify()
        meta_rows = await self._query(queries.read_meta())
        meta = meta_rows[0]["meta"] if meta_rows else {}
        stored_version = int(meta.get("schema_version", 0))
        check_recorded_schema(
            location=f"Neo4j at {redact_urls(self.uri)}",
            stored_version=stored_version,
            stored_model=meta.get("embedding_model"),
            stored_dimension=meta.get("embedding_dimension"),
            model=self.embedding_model,
            dimension=self.embedding_dimension,
        )
        for version in range(stored_version + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[version]():
                await self._query(statement, "w")
        async with self._schema_lock:
            self._ready_kinds.clear()
            self._ready_types.clear()
        await self._ensure_schema(
            [spec.name for spec in self.registry.kinds if spec.embedded], self.registry.relationship_type_names
        )
        await self._query(
            queries.write_meta(),
            "w",
            values={
                "schema_version": max(stored_version, SCHEMA_VERSION),
                "embedding_model": self.embedding_model,
                "embedding_dimension": self.embedding_dimension,
            },
        )

    async def _ensure_schema(self, embedded_kinds: Sequence[str], relationship_types: Sequence[str]) -> None:
        """Create the vector index of each embedded kind and the key constraint of each type, once per store."""
        async with self._schema_lock:
            statements = [
                queries.vector_index(kind, self.embedding_dimension) for kind in embedded_kinds if kind not in self._ready_kinds
            ] + [queries.relationship_constraint(type_) for type_ in relationship_types if type_ not in self._ready_types]
            for statement in statements:
                await self._query(statement, "w")
            if statements:
                await self._query("CALL db.awaitIndexes(300)", "w")
            self._ready_kinds.update(embedded_kinds)
            self._ready_types.update(relationship_types)

    async def schema_version(self) -> int:
        rows = await self._query(queries.read_meta())
        return int(rows[0]["meta"].get("schema_version", 0)) if rows else 0

    async def close(self) -> None:
        await self._connection.close()

    # -- writes -----------------------------------------------------------------------------------------

    async def upsert_nodes(self, nodes: Sequence[NodeRecord], *, new: Collection[str] = ()) -> int:
        prepared = prepare_nodes(nodes, self.registry, self.embedding_dimension)
        if not prepared:
            return 0
        claims = [{"namespace": item.record.namespace, "id": item.record.id, "kind": item.record.kind} for item in claimed(prepared, new)]
        await self._ensure_schema(sorted({item.kind.name for item in prepared if item.kind.embedded}), [])
        # sorted keys make concurrent writers lock nodes in the same order, which avoids most deadlocks
        rows_by_kind = {
            kind: [_node_row(item) for item in sorted(group, key=lambda item: (item.record.namespace, item.record.id))]
            for kind, group in sorted(_by(prepared, lambda item: item.record.kind).items())
        }
        return await self._upsert_in_chunks(rows_by_kind, queries.upsert_nodes, self._raise_kind_conflicts, claims=claims)

    async def upsert_relationships(self, relationships: Sequence[RelationshipRecord]) -> int:
        prepared = prepare_relationships(relationships, self.registry)
        if not prepared:
            return 0
        await self._ensure_schema([], sorted({item.record.type for item in prepared}))
        rows_by_type = {
            type_: [_relationship_row(item) for item in sorted(group, key=lambda item: item.record.id)]
            for type_, group in sorted(_by(prepared, lambda item: item.record.type).items())
        }
        return await self._upsert_in_chunks(rows_by_type, queries.upsert_relationships, self._raise_missing_endpoints)

    async def _upsert_in_chunks(
        self,
        rows_by_name: dict[str, list[dict[str, Any]]],
        statement: Callable[[str], str],
        explain_skipped: Callable[[AsyncManagedTransaction, list[dict[str, Any]]], Awaitable[None]],
        *,
        claims: list[dict[str, Any]] | None = None,
    ) -> int:
        """Send every row, a chunk per statement, in one transaction; a skipped row aborts it all.

        ``statement(name)`` is the upsert for one label or type and returns how many rows it wrote;
        ``explain_skipped`` raises the error that says why rows were skipped, which rolls back.
        """
        now = utc_now().isoformat()

        async def work(tx: AsyncManagedTransaction) -> int:
            if claims:
                # CREATE under the (namespace, id) uniqueness constraint: of racing writers, one creates, the others fail
                try:
                    await (await tx.run(queries.claim_nodes(), rows=claims, now=now)).consume()
                except neo4j_errors.ConstraintError as exc:
                    ids = ", ".join(repr(claim["id"]) for claim in claims[:10])
                    raise ConflictError(f"upsert refused, nothing written: ids that must be new exist already (one of {ids})") from exc
            written = 0
            for name, rows in rows_by_name.items():
                for start in range(0, len(rows), self.write_chunk_rows):
                    chunk = rows[start : start + self.write_chunk_rows]
                    record = await (await tx.run(statement(name), rows=chunk, now=now)).single(strict=True)
                    if record["written"] != len(chunk):
                        await explain_skipped(tx, chunk)
                    written += len(chunk)
            return written

        return await self._write(work)

    @staticmethod
    async def _raise_kind_conflicts(tx: AsyncManagedTransaction, rows: list[dict[str, Any]]) -> None:
        conflicts = await (await tx.run(queries.find_kind_conflicts(), rows=rows)).data()
        details = "; ".join(f"{row['id']!r} is a {row['kind']}, not a {row['wanted']}" for row in conflicts)
        raise ConflictError(f"upsert refused, nothing written: {details}")

    @staticmethod
    async def _raise_missing_endpoints(tx: AsyncManagedTransaction, rows: list[dict[str, Any]]) -> None:
        ends = sorted(
            {(row["values"]["namespace"], row[side]) for row in rows for side in ("source_id", "target_id")}
        )
        missing = await (
            await tx.run(queries.find_missing_endpoints(), ends=[{"namespace": ns, "id": node_id} for ns, node_id in ends])
        ).data()
        names = [f"{row['namespace']!r}/{row['id']!r}" for row in missing]
        raise MissingEndpointError(
            f"relationships refer to nodes that do not exist, nothing written: {', '.join(names[:10])}"
            + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        )

    async def delete_nodes(self, namespace: str, ids: Sequence[str]) -> int:
        validate_namespace(namespace)
        ids = check_ids(ids)
        if not ids:
            return 0

        async def work(tx: AsyncManagedTransaction) -> int:
            record = await (await tx.run(queries.delete_nodes(), namespace=namespace, ids=sorted(set(ids)))).single(strict=True)
            return int(record["deleted"])

        return await self._write(work)

    async def delete_expired(self, now: float) -> int:
        cutoff = check_now(now)

        async def work(tx: AsyncManagedTransaction) -> int:
            record = await (await tx.run(queries.delete_expired(), now=cutoff)).single(strict=True)
            return int(record["deleted"])

        return await self._write(work)

    # -- reads ------------------------------------------------------------------------------------------

    async def get_nodes(self, namespace: str, ids: Sequence[str]) -> list[NodeRecord | None]:
        validate_namespace(namespace)
        ids = check_ids(ids)
        rows = await self._query(queries.get_nodes(), namespace=namespace, ids=sorted(set(ids))) if ids else []
        found = {row["node"]["id"]: _node_from_map(row["node"]) for row in rows}
        return [found.get(node_id) for node_id in ids]

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
        return await traversal.neighbourhood(
            self,
            self._hop,
            namespace,
            node_id,
            depth=depth,
            relationship_types=relationship_types,
            direction=direction,
            include_embeddings=include_embeddings,
        )

    async def _hop(
        self, namespace: str, frontier: list[str], types: list[str] | None, direction: str, include_embeddings: bool
    ) -> list[tuple[RelationshipRecord, NodeRecord]]:
        statement = queries.expand(direction, types, include_embeddings=include_embeddings)
        rows = await self._query(statement, namespace=namespace, frontier=frontier)
        return [(_relationship_from_map(row["relationship"]), _node_from_map(row["node"])) for row in rows]

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
        validate_namespace(namespace)
        check_direction(direction)
        check_links_limit(limit)
        ids = list(dict.fromkeys(check_ids(node_ids)))
        types = None if relationship_types is None else self.registry.relationship_types(relationship_types)
        kind_names = None if kinds is None else sorted({self.registry.kind(kind).name for kind in kinds})
        if not ids:
            return {}
        if types == [] or kind_names == []:  # nothing can match: only which nodes exist is left to learn
            rows = await self._query(queries.existing_ids(), namespace=namespace, ids=ids)
            found: dict[str, list[Link]] = {row["id"]: [] for row in rows}
        else:
            statement = queries.neighbours_of(direction, types, by_kind=kind_names is not None)
            rows = await self._query(statement, namespace=namespace, ids=ids, kinds=kind_names, limit=limit)
            found = {
                row["id"]: [
                    Link(relationship=_relationship_from_map(link["relationship"]), node=_node_from_map(link["node"]))
                    for link in row["links"]
                ]
                for row in rows
            }
        return {node_id: found[node_id] for node_id in ids if node_id in found}

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
        """See the protocol. The kind's index is shared by every namespace and filtered after it, so the candidate
        pool is sized from the index's population and the share of its candidates that last survived this namespace
        and filter keys, both as the previous search saw them (:func:`_vector_pool`), and widened until ``k``
        survive or the index has no more to give."""
        validate_namespace(namespace)
        checked_filters = check_vector_query(self.registry, kind, vector, self.embedding_dimension, k, filters)
        await self._ensure_schema([kind], [])
        statement = queries.vector_search(kind, filtered=bool(checked_filters), include_embeddings=include_embeddings)
        share_key = (namespace, kind, *sorted(checked_filters))
        population = self._populations.get(kind, VECTOR_POOL_BASE_POPULATION)
        candidates = _vector_pool(k, self._survivor_shares.get(share_key, 1.0), population)
        plain_vector = np.asarray(vector, dtype=np.float64).tolist()  # plain floats pack fastest
        while True:
            [row] = await self._query(
                statement,
                index=queries.vector_index_name(kind),
                candidates=candidates,
                vector=plain_vector,
                k=k,
                namespace=namespace,
                filters=checked_filters,
            )
            share = max(row["kept"], 1) / max(row["seen"], 1)
            self._populations[kind] = population = row["population"]
            self._survivor_shares.pop(share_key, None)
            self._survivor_shares[share_key] = share
            if len(self._survivor_shares) > _MAX_SHARES:
                del self._survivor_shares[next(iter(self._survivor_shares))]
            enough_hits = len(row["hits"]) >= k
            if row["seen"] < candidates or (enough_hits and candidates >= _vector_pool(k, 1.0, population)):
                return [ScoredNode(node=_node_from_map(hit["node"]), score=hit["score"]) for hit in row["hits"]]
            # too few survived, or the index turned out larger than assumed: search wider
            candidates = max(_vector_pool(k, share, population), candidates if enough_hits else 4 * candidates)

    async def keyword_search(
        self, namespace: str, query: str, *, k: int = 10, kinds: Sequence[str] | None = None
    ) -> list[ScoredNode]:
        """See the protocol. The text index is shared by every namespace and filtered after it: the candidate pool
        grows until ``k`` hits survive the filters or the index has no more to give."""
        validate_namespace(namespace)
        check_k(k)
        kind_names = None if kinds is None else [self.registry.kind(kind).name for kind in kinds]
        terms = query_terms(query)
        if not terms or kind_names == []:
            return []
        candidates = max(4 * k, 40)
        while True:
            [row] = await self._query(
                queries.keyword_search(),
                index=queries.TEXT_INDEX,
                query=" OR ".join(terms),
                namespace=namespace,
                kinds=kind_names,
                candidates=candidates,
                k=k,
            )
            if len(row["hits"]) >= k or row["seen"] < candidates:
                return [ScoredNode(node=_node_from_map(hit["node"]), score=hit["score"]) for hit in row["hits"]]
            candidates *= 4

    async def count_nodes(self, namespace: str, kind: str | None = None) -> int:
        validate_namespace(namespace)
        kind_name = None if kind is None else self.registry.kind(kind).name
        statement = queries.count_nodes(by_kind=kind_name is not None)
        return int((await self._query(statement, namespace=namespace, kind=kind_name))[0]["total"])

    async def count_relationships(self, namespace: str, type: str | None = None) -> int:
        validate_namespace(namespace)
        type_name = None if type is None else self.registry.relationship_type(type)
        return int((await self._query(queries.count_relationships(type_name), namespace=namespace))[0]["total"])

    async def count_nodes_by_kind(self, namespace: str) -> dict[str, int]:
        validate_namespace(namespace)
        rows = await self._query(queries.count_nodes_by_kind(), namespace=namespace)
        return {row["kind"]: int(row["nodes"]) for row in rows}

    # -- browsing ---------------------------------------------------------------------------------------

    async def namespaces(self) -> list[NamespaceSummary]:
        rows = await self._query(queries.namespaces())
        return [NamespaceSummary(name=row["name"], nodes=row["nodes"]) for row in rows]

    async def list_nodes(
        self,
        namespace: str,
        *,
        kind: str | None = None,
        where: Mapping[str, JsonScalar] | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[NodeRecord]:
        validate_namespace(namespace)
        kind_name = None if kind is None else self.registry.kind(kind).name
        checked_where = check_filters(where)
        check_page(limit, offset)
        statement = queries.list_nodes(by_kind=kind_name is not None, filtered=bool(checked_where))
        rows = await self._query(
            statement, namespace=namespace, kind=kind_name, filters=checked_where, limit=limit, offset=offset
        )
        return [_node_from_map(row["node"]) for row in rows]

    async def neighbours(self, namespace: str, node_id: str, *, limit: int = 50, offset: int = 0) -> NeighbourPage:
        validate_namespace(namespace)
        check_page(limit, offset)
        rows = await self._query(queries.neighbours(), namespace=namespace, node_id=node_id, limit=limit, offset=offset)
        if not rows:
            return NeighbourPage(node=None, relationships=[], nodes=[], total=0, offset=offset, limit=limit)
        [row] = rows
        pairs = [(_relationship_from_map(item["relationship"]), _node_from_map(item["node"])) for item in row["page"]]
        return NeighbourPage(
            node=_node_from_map(row["node"]),
            relationships=[relationship for relationship, _ in pairs],
            nodes=list({node.id: node for _, node in pairs}.values()),
            total=row["total"],
            offset=offset,
            limit=limit,
        )
