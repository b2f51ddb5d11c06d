"""The embedded SQLite store: one file, WAL mode, safe for several processes, zero set-up.

Every operation runs as one function on a single worker thread that owns the connection, so each is a
whole transaction and concurrent tasks never interleave statements. Writes take ``BEGIN IMMEDIATE``;
other processes wait up to ``busy_timeout`` seconds. The statements live beside this class: writes in
:mod:`~mnemoflow.memory.sqlite.writes`, reads and searches in :mod:`~mnemoflow.memory.sqlite.reads`, the
vector indexes in :mod:`~mnemoflow.memory.sqlite.vectors`.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np

from mnemoflow.errors import MnemoflowError, StoreError
from mnemoflow.memory import traversal
from mnemoflow.memory.batches import (
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
    prepare_nodes,
    prepare_relationships,
    query_terms,
    utc_now,
)
from mnemoflow.memory.names import REGISTRY, NameRegistry, validate_namespace
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
from mnemoflow.memory.sqlite import reads, writes
from mnemoflow.memory.sqlite.connection import open_connection, transaction
from mnemoflow.memory.sqlite.index_files import IndexFiles
from mnemoflow.memory.sqlite.rows import sqlite_error
from mnemoflow.memory.sqlite.schema import DERIVED, MIGRATIONS
from mnemoflow.memory.sqlite.vectors import VectorIndexes

__all__ = ["SQLiteStore"]

T = TypeVar("T")


class SQLiteStore:
    """A :class:`~mnemoflow.memory.protocol.GraphStore` in one SQLite file.

    >>> store = SQLiteStore(".mnemoflow/memory.db", embedding_model="hashing-v1", embedding_dimension=384)
    >>> await store.setup()
    """

    backend: Literal["sqlite"] = "sqlite"

    def __init__(
        self,
        path: str | Path,
        *,
        embedding_model: str,
        embedding_dimension: int,
        registry: NameRegistry = REGISTRY,
        busy_timeout: float = 30.0,
    ) -> None:
        self.path = Path(path)
        self.embedding_model = embedding_model
        self.embedding_dimension = embedding_dimension
        self.registry = registry
        self._busy_timeout = busy_timeout
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mnemoflow-sqlite")
        self._connection: sqlite3.Connection | None = None
        self._vectors = VectorIndexes(embedding_dimension, IndexFiles(self.path))
        self._closed = False

    async def __aenter__(self) -> SQLiteStore:
        await self.setup()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- plumbing ---------------------------------------------------------------------------------------

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise StoreError(f"SQLite store {self.path} is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(self._translate, function, *args))

    async def _write(self, function: Callable[..., T], *args: Any) -> T:
        """Run ``function(connection, *args)`` in one ``BEGIN IMMEDIATE`` transaction."""

        def write(connection: sqlite3.Connection) -> T:
            with transaction(connection):
                return function(connection, *args)

        return await self._run(write)

    def _translate(self, function: Callable[..., T], *args: Any) -> T:
        try:
            if self._connection is None:
                self._connection = open_connection(self.path, self._busy_timeout)
            return function(self._connection, *args)
        except MnemoflowError:
            raise
        except sqlite3.Error as exc:
            raise sqlite_error(exc, f"SQLite store {self.path}") from exc

    # -- lifecycle --------------------------------------------------------------------------------------

    async def setup(self) -> None:
        await self._write(self._setup)

    def _setup(self, connection: sqlite3.Connection) -> None:
        connection.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        meta = {row["key"]: row["value"] for row in connection.execute("SELECT key, value FROM meta")}
        stored_version = int(meta.get("schema_version", 0))
        check_recorded_schema(
            location=f"SQLite store {self.path}",
            stored_version=stored_version,
            stored_model=meta.get("embedding_model"),
            stored_dimension=int(meta["embedding_dimension"]) if "embedding_dimension" in meta else None,
            model=self.embedding_model,
            dimension=self.embedding_dimension,
        )
        for version in range(stored_version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version]:
                connection.execute(statement)
        for statement in DERIVED:
            connection.execute(statement)
        IndexFiles.create_token(connection)
        connection.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [
                ("schema_version", str(max(stored_version, SCHEMA_VERSION))),
                ("embedding_model", self.embedding_model),
                ("embedding_dimension", str(self.embedding_dimension)),
            ],
        )

    async def schema_version(self) -> int:
        def read(connection: sqlite3.Connection) -> int:
            exists = connection.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
            if not exists:
                return 0
            row = connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            return int(row["value"]) if row else 0

        return await self._run(read)

    async def close(self) -> None:
        if self._closed:
            return

        def close(connection: sqlite3.Connection) -> None:
            connection.close()

        if self._connection is not None:
            await self._run(close)
        self._closed = True
        self._executor.shutdown(wait=True)

    # -- writes -----------------------------------------------------------------------------------------

    async def upsert_nodes(self, nodes: Sequence[NodeRecord], *, new: Collection[str] = ()) -> int:
        prepared = prepare_nodes(nodes, self.registry, self.embedding_dimension)
        if not prepared:
            return 0
        return await self._write(writes.upsert_nodes, prepared, claimed(prepared, new), utc_now().isoformat())

    async def upsert_relationships(self, relationships: Sequence[RelationshipRecord]) -> int:
        prepared = prepare_relationships(relationships, self.registry)
        if not prepared:
            return 0
        return await self._write(writes.upsert_relationships, prepared, utc_now().isoformat())

    async def delete_nodes(self, namespace: str, ids: Sequence[str]) -> int:
        validate_namespace(namespace)
        ids = check_ids(ids)
        return await self._write(writes.delete_nodes, {namespace: ids}) if ids else 0

    async def delete_expired(self, now: float) -> int:
        return await self._write(writes.delete_expired, check_now(now))

    # -- reads ------------------------------------------------------------------------------------------

    async def get_nodes(self, namespace: str, ids: Sequence[str]) -> list[NodeRecord | None]:
        validate_namespace(namespace)
        ids = check_ids(ids)
        found = await self._run(reads.nodes_by_id, namespace, ids)
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
        return await self._run(reads.expand, namespace, frontier, types, direction, include_embeddings)

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
        ids = check_ids(node_ids)
        types = None if relationship_types is None else self.registry.relationship_types(relationship_types)
        kind_names = None if kinds is None else [self.registry.kind(kind).name for kind in kinds]
        if not ids:
            return {}
        return await self._run(reads.neighbours_of, namespace, ids, types, direction, kind_names, limit)

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
        validate_namespace(namespace)
        checked_filters = check_vector_query(self.registry, kind, vector, self.embedding_dimension, k, filters)
        query = np.asarray(vector, dtype=np.float32)
        norm = float(np.linalg.norm(query))
        unit = query / norm if norm else query
        kind_name = self.registry.kind(kind).name
        return await self._run(
            reads.vector_search, self._vectors, namespace, kind_name, unit, k, checked_filters, include_embeddings
        )

    async def keyword_search(
        self, namespace: str, query: str, *, k: int = 10, kinds: Sequence[str] | None = None
    ) -> list[ScoredNode]:
        validate_namespace(namespace)
        check_k(k)
        kind_names = None if kinds is None else [self.registry.kind(kind).name for kind in kinds]
        terms = query_terms(query)
        if not terms or kind_names == []:
            return []
        match = " OR ".join('"' + term.replace('"', '""') + '"' for term in terms)
        return await self._run(reads.keyword_search, namespace, match, kind_names, k)

    async def count_nodes(self, namespace: str, kind: str | None = None) -> int:
        validate_namespace(namespace)
        sql, parameters = reads.count_statement(namespace, None if kind is None else self.registry.kind(kind).name)
        return await self._run(lambda connection: int(connection.execute(sql, parameters).fetchone()[0]))

    async def count_relationships(self, namespace: str, type: str | None = None) -> int:
        validate_namespace(namespace)
        if type is None:
            sql, parameters = "SELECT count(*) FROM relationships WHERE namespace = ?", [namespace]
        else:
            sql = "SELECT count(*) FROM relationships WHERE namespace = ? AND type = ?"
            parameters = [namespace, self.registry.relationship_type(type)]
        return await self._run(lambda connection: int(connection.execute(sql, parameters).fetchone()[0]))

    async def count_nodes_by_kind(self, namespace: str) -> dict[str, int]:
        validate_namespace(namespace)
        sql = "SELECT kind, count(*) AS nodes FROM nodes WHERE namespace = ? GROUP BY kind ORDER BY kind"
        return await self._run(lambda connection: {row["kind"]: int(row["nodes"]) for row in connection.execute(sql, [namespace])})

    # -- browsing ---------------------------------------------------------------------------------------

    async def namespaces(self) -> list[NamespaceSummary]:
        def read(connection: sqlite3.Connection) -> list[NamespaceSummary]:
            rows = connection.execute("SELECT namespace, count(*) AS nodes FROM nodes GROUP BY namespace ORDER BY namespace")
            return [NamespaceSummary(name=row["namespace"], nodes=row["nodes"]) for row in rows]

        return await self._run(read)

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
        return await self._run(reads.list_nodes, namespace, kind_name, checked_where, limit, offset)

    async def neighbours(self, namespace: str, node_id: str, *, limit: int = 50, offset: int = 0) -> NeighbourPage:
        validate_namespace(namespace)
        check_page(limit, offset)
        return await self._run(reads.neighbours_page, namespace, node_id, limit, offset)
