"""The embedded SQLite store: one file, WAL mode, safe for several processes, zero set-up.

Every operation runs as one function on a single worker thread that owns the connection, so each is a
whole transaction and concurrent tasks never interleave statements. Writes take ``BEGIN IMMEDIATE``;
other processes wait up to ``busy_timeout`` seconds. Keyword search uses FTS5 (BM25); vector search is in
:mod:`mnemoflow.memory.sqlite.vectors`.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np

from mnemoflow.errors import (
    ConflictError,
    MissingEndpointError,
    MnemoflowError,
    StoreError,
)
from mnemoflow.memory import traversal
from mnemoflow.memory.batches import (
    PreparedNode,
    PreparedRelationship,
    check_ids,
    check_k,
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
    NamespaceSummary,
    NeighbourPage,
    NodeRecord,
    RelationshipRecord,
    ScoredNode,
    Subgraph,
)
from mnemoflow.memory.sqlite.rows import (
    BARE_NODE_COLUMNS,
    NODE_COLUMNS,
    RELATIONSHIP_COLUMNS,
    chunks,
    group_by_namespace,
    node_from_row,
    placeholders,
    relationship_from_row,
    sqlite_error,
)
from mnemoflow.memory.sqlite.schema import MIGRATIONS
from mnemoflow.memory.sqlite.vectors import VectorMatrices

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
        self._vectors = VectorMatrices(embedding_dimension)
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

    def _translate(self, function: Callable[..., T], *args: Any) -> T:
        try:
            return function(self._connect(), *args)
        except MnemoflowError:
            raise
        except sqlite3.Error as exc:
            raise sqlite_error(exc, f"SQLite store {self.path}") from exc

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(
                self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
            )
            connection.row_factory = sqlite3.Row
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            self._connection = connection
        return self._connection

    @contextmanager
    def _transaction(self, connection: sqlite3.Connection, mode: str = "IMMEDIATE") -> Iterator[sqlite3.Connection]:
        connection.execute(f"BEGIN {mode}")
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    # -- lifecycle --------------------------------------------------------------------------------------

    async def setup(self) -> None:
        await self._run(self._setup)

    def _setup(self, connection: sqlite3.Connection) -> None:
        with self._transaction(connection):
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
        return await self._run(self._upsert_nodes, prepared, claimed(prepared, new))

    def _upsert_nodes(self, connection: sqlite3.Connection, prepared: list[PreparedNode], new: list[PreparedNode]) -> int:
        now = utc_now().isoformat()
        with self._transaction(connection):  # BEGIN IMMEDIATE: no other writer between the checks and the writes
            taken = [
                item.record.id
                for item in new
                if connection.execute("SELECT 1 FROM nodes WHERE namespace = ? AND id = ?", (item.record.namespace, item.record.id)).fetchone()
            ]
            if taken:
                raise ConflictError(f"upsert refused, nothing written: ids that must be new exist already: {', '.join(map(repr, taken[:10]))}")
            conflicts = []
            for namespace, group in group_by_namespace(prepared, lambda item: item.record.namespace).items():
                kinds = {item.record.id: item.record.kind for item in group}
                for ids in chunks(list(kinds)):
                    rows = connection.execute(
                        f"SELECT id, kind FROM nodes WHERE namespace = ? AND id IN ({placeholders(len(ids))})",
                        [namespace, *ids],
                    )
                    conflicts += [
                        f"{row['id']!r} is a {row['kind']}, not a {kinds[row['id']]}"
                        for row in rows
                        if row["kind"] != kinds[row["id"]]
                    ]
            if conflicts:
                raise ConflictError(f"upsert refused, nothing written: {'; '.join(sorted(conflicts)[:10])}")
            connection.executemany(
                """
                INSERT INTO nodes (namespace, id, kind, properties, text, embedding, content_hash, created_at, updated_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (namespace, id) DO UPDATE SET
                    properties = excluded.properties,
                    text = excluded.text,
                    embedding = excluded.embedding,
                    updated_at = CASE WHEN nodes.content_hash = excluded.content_hash
                                      THEN nodes.updated_at ELSE excluded.updated_at END,
                    content_hash = excluded.content_hash
                """,
                [
                    (
                        item.record.namespace,
                        item.record.id,
                        item.record.kind,
                        item.properties_json,
                        item.record.text,
                        item.embedding_bytes,
                        item.content_hash,
                        now,
                        now,
                    )
                    for item in prepared
                ],
            )
            self._vectors.bump(connection, {(item.record.namespace, item.record.kind) for item in prepared if item.kind.embedded})
        return len(prepared)

    async def upsert_relationships(self, relationships: Sequence[RelationshipRecord]) -> int:
        prepared = prepare_relationships(relationships, self.registry)
        if not prepared:
            return 0
        return await self._run(self._upsert_relationships, prepared)

    def _upsert_relationships(self, connection: sqlite3.Connection, prepared: list[PreparedRelationship]) -> int:
        now = utc_now().isoformat()
        with self._transaction(connection):
            missing = []
            for namespace, group in group_by_namespace(prepared, lambda item: item.record.namespace).items():
                wanted = sorted({item.record.source_id for item in group} | {item.record.target_id for item in group})
                found: set[str] = set()
                for ids in chunks(wanted):
                    found.update(
                        row["id"]
                        for row in connection.execute(
                            f"SELECT id FROM nodes WHERE namespace = ? AND id IN ({placeholders(len(ids))})",
                            [namespace, *ids],
                        )
                    )
                missing += [f"{namespace!r}/{node_id!r}" for node_id in wanted if node_id not in found]
            if missing:
                raise MissingEndpointError(
                    f"relationships refer to nodes that do not exist, nothing written: {', '.join(missing[:10])}"
                    + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
                )
            connection.executemany(
                """
                INSERT INTO relationships
                    (namespace, id, type, source_id, target_id, key, properties, content_hash, created_at, updated_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (namespace, id) DO UPDATE SET
                    properties = excluded.properties,
                    updated_at = CASE WHEN relationships.content_hash = excluded.content_hash
                                      THEN relationships.updated_at ELSE excluded.updated_at END,
                    content_hash = excluded.content_hash
                """,
                [
                    (
                        item.record.namespace,
                        item.record.id,
                        item.record.type,
                        item.record.source_id,
                        item.record.target_id,
                        item.record.key,
                        item.properties_json,
                        item.content_hash,
                        now,
                        now,
                    )
                    for item in prepared
                ],
            )
        return len(prepared)

    async def delete_nodes(self, namespace: str, ids: Sequence[str]) -> int:
        validate_namespace(namespace)
        ids = check_ids(ids)
        return await self._run(self._delete_nodes, namespace, ids) if ids else 0

    def _delete_nodes(self, connection: sqlite3.Connection, namespace: str, ids: list[str]) -> int:
        with self._transaction(connection):
            return self._delete_in_transaction(connection, {namespace: ids})

    def _delete_in_transaction(self, connection: sqlite3.Connection, ids_by_namespace: Mapping[str, Sequence[str]]) -> int:
        """Delete nodes and their relationships, and mark the vector matrices they were in stale."""
        deleted = 0
        kinds: set[tuple[str, str]] = set()
        for namespace, ids in ids_by_namespace.items():
            for chunk in chunks(sorted(set(ids))):
                marks = placeholders(len(chunk))
                kinds.update(
                    (namespace, row["kind"])
                    for row in connection.execute(
                        f"SELECT DISTINCT kind FROM nodes WHERE namespace = ? AND id IN ({marks})", [namespace, *chunk]
                    )
                )
                connection.execute(
                    f"DELETE FROM relationships WHERE namespace = ? AND (source_id IN ({marks}) OR target_id IN ({marks}))",
                    [namespace, *chunk, *chunk],
                )
                deleted += connection.execute(
                    f"DELETE FROM nodes WHERE namespace = ? AND id IN ({marks})", [namespace, *chunk]
                ).rowcount
        self._vectors.bump(connection, kinds)
        return deleted

    async def delete_expired(self, now: float) -> int:
        return await self._run(self._delete_expired, check_now(now))

    def _delete_expired(self, connection: sqlite3.Connection, now: float) -> int:
        with self._transaction(connection):
            expired: dict[str, list[str]] = {}
            for row in connection.execute(
                "SELECT namespace, id FROM nodes WHERE json_type(properties, '$.expires_at') IN ('integer', 'real') "
                "AND json_extract(properties, '$.expires_at') <= ?",
                [now],
            ):
                expired.setdefault(row["namespace"], []).append(row["id"])
            return self._delete_in_transaction(connection, expired)

    # -- reads ------------------------------------------------------------------------------------------

    async def get_nodes(self, namespace: str, ids: Sequence[str]) -> list[NodeRecord | None]:
        validate_namespace(namespace)
        ids = check_ids(ids)
        found = await self._run(self._nodes_by_id, namespace, ids)
        return [found.get(node_id) for node_id in ids]

    def _nodes_by_id(self, connection: sqlite3.Connection, namespace: str, ids: list[str]) -> dict[str, NodeRecord]:
        found = {}
        for chunk in chunks(sorted(set(ids))):
            for row in connection.execute(
                f"SELECT {NODE_COLUMNS} FROM nodes WHERE namespace = ? AND id IN ({placeholders(len(chunk))})",
                [namespace, *chunk],
            ):
                found[row["id"]] = node_from_row(row)
        return found

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
        return await self._run(self._expand, namespace, frontier, types, direction, include_embeddings)

    def _expand(
        self,
        connection: sqlite3.Connection,
        namespace: str,
        frontier: list[str],
        types: list[str] | None,
        direction: str,
        include_embeddings: bool,
    ) -> list[tuple[RelationshipRecord, NodeRecord]]:
        prefixed = ", ".join(f"r.{column} AS r_{column}" for column in RELATIONSHIP_COLUMNS.split(", "))
        node_columns = ", ".join(
            f"n.{column}" if include_embeddings or column != "embedding" else "NULL AS embedding"
            for column in NODE_COLUMNS.split(", ")
        )
        sides = {"out": [("source_id", "target_id")], "in": [("target_id", "source_id")]}
        sides["both"] = sides["out"] + sides["in"]
        pairs = []
        for chunk in chunks(frontier):
            for near, far in sides[direction]:
                type_filter = "" if types is None else f" AND r.type IN ({placeholders(len(types))})"
                rows = connection.execute(
                    f"SELECT {prefixed}, {node_columns} FROM relationships r "
                    f"JOIN nodes n ON n.namespace = r.namespace AND n.id = r.{far} "
                    f"WHERE r.namespace = ? AND r.{near} IN ({placeholders(len(chunk))}){type_filter}",
                    [namespace, *chunk, *(types or [])],
                )
                pairs += [(relationship_from_row(row, "r_"), node_from_row(row)) for row in rows]
        return pairs

    async def vector_search(
        self,
        namespace: str,
        vector: Sequence[float],
        *,
        kind: str,
        k: int = 10,
        filters: Mapping[str, JsonScalar] | None = None,
    ) -> list[ScoredNode]:
        validate_namespace(namespace)
        checked_filters = check_vector_query(self.registry, kind, vector, self.embedding_dimension, k, filters)
        query = np.asarray(vector, dtype=np.float32)
        return await self._run(self._vector_search, namespace, kind, query, k, checked_filters)

    def _vector_search(
        self,
        connection: sqlite3.Connection,
        namespace: str,
        kind: str,
        query: np.ndarray,
        k: int,
        filters: dict[str, JsonScalar],
    ) -> list[ScoredNode]:
        with self._transaction(connection, "DEFERRED"):
            matrix = self._vectors.get(connection, namespace, kind)
            allowed = None
            if filters:
                conditions = " AND ".join("json_extract(properties, ?) = ?" for _ in filters)
                parameters: list[Any] = [namespace, kind]
                for key, value in filters.items():
                    parameters += [f'$."{key}"', value]
                allowed = [
                    row[0]
                    for row in connection.execute(
                        f"SELECT rowid FROM nodes WHERE namespace = ? AND kind = ? AND {conditions}", parameters
                    )
                ]
            best = matrix.top_k(query, k, allowed)
            if not best:
                return []
            rows = {
                row["rowid"]: node_from_row(row)
                for row in connection.execute(
                    f"SELECT {NODE_COLUMNS} FROM nodes WHERE rowid IN ({placeholders(len(best))})", [rowid for rowid, _ in best]
                )
            }
        return [ScoredNode(node=rows[rowid], score=score) for rowid, score in best]

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

        def search(connection: sqlite3.Connection) -> list[ScoredNode]:
            kind_filter = "" if kind_names is None else f" AND n.kind IN ({placeholders(len(kind_names))})"
            node_columns = ", ".join(f"n.{column}" for column in NODE_COLUMNS.split(", "))
            rows = connection.execute(
                f"SELECT {node_columns}, bm25(node_text) AS rank FROM node_text "
                f"JOIN nodes n ON n.rowid = node_text.rowid "
                f"WHERE node_text MATCH ? AND n.namespace = ?{kind_filter} ORDER BY rank, n.id LIMIT ?",
                [match, namespace, *(kind_names or []), k],
            )
            return [ScoredNode(node=node_from_row(row), score=-float(row["rank"])) for row in rows]

        return await self._run(search)

    async def count_nodes(self, namespace: str, kind: str | None = None) -> int:
        validate_namespace(namespace)
        if kind is None:
            sql, parameters = "SELECT count(*) FROM nodes WHERE namespace = ?", [namespace]
        else:
            sql, parameters = "SELECT count(*) FROM nodes WHERE namespace = ? AND kind = ?", [namespace, self.registry.kind(kind).name]
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
        self, namespace: str, *, kind: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[NodeRecord]:
        validate_namespace(namespace)
        kind_name = None if kind is None else self.registry.kind(kind).name
        check_page(limit, offset)
        kind_filter = "" if kind_name is None else " AND n.kind = ?"
        sql = (
            f"SELECT {BARE_NODE_COLUMNS} FROM nodes n WHERE n.namespace = ?{kind_filter} "
            "ORDER BY n.updated_at DESC, n.created_at DESC, n.id DESC LIMIT ? OFFSET ?"
        )
        parameters = [namespace, *([] if kind_name is None else [kind_name]), limit, offset]
        return await self._run(lambda connection: [node_from_row(row) for row in connection.execute(sql, parameters)])

    async def neighbours(self, namespace: str, node_id: str, *, limit: int = 50, offset: int = 0) -> NeighbourPage:
        validate_namespace(namespace)
        check_page(limit, offset)
        return await self._run(self._neighbours, namespace, node_id, limit, offset)

    def _neighbours(
        self, connection: sqlite3.Connection, namespace: str, node_id: str, limit: int, offset: int
    ) -> NeighbourPage:
        # each relationship touching the node with its other end: outgoing ones by the by-source index,
        # incoming ones by the by-target index, a self-loop only once (as outgoing). Without statistics the
        # planner would rather range-scan the whole namespace by primary key, hence INDEXED BY.
        columns = f"id, {RELATIONSHIP_COLUMNS}"
        touching = (
            f"FROM (SELECT {columns}, target_id AS other_id FROM relationships INDEXED BY relationships_by_source "
            "WHERE namespace = ? AND source_id = ? "
            f"UNION ALL SELECT {columns}, source_id AS other_id FROM relationships INDEXED BY relationships_by_target "
            "WHERE namespace = ? AND target_id = ? AND source_id <> ?) r "
            "JOIN nodes n ON n.namespace = r.namespace AND n.id = r.other_id"
        )
        touching_parameters = [namespace, node_id, namespace, node_id, node_id]
        with self._transaction(connection, "DEFERRED"):
            row = connection.execute(
                f"SELECT {BARE_NODE_COLUMNS} FROM nodes n WHERE n.namespace = ? AND n.id = ?", [namespace, node_id]
            ).fetchone()
            if row is None:
                return NeighbourPage(node=None, relationships=[], nodes=[], total=0, offset=offset, limit=limit)
            centre = node_from_row(row)
            total = int(connection.execute(f"SELECT count(*) {touching}", touching_parameters).fetchone()[0])
            prefixed = ", ".join(f"r.{column} AS r_{column}" for column in RELATIONSHIP_COLUMNS.split(", "))
            rows = connection.execute(
                f"SELECT {prefixed}, {BARE_NODE_COLUMNS} {touching} ORDER BY r.type, n.id, r.id LIMIT ? OFFSET ?",
                [*touching_parameters, limit, offset],
            ).fetchall()
        pairs = [(relationship_from_row(row, "r_"), node_from_row(row)) for row in rows]
        return NeighbourPage(
            node=centre,
            relationships=[relationship for relationship, _ in pairs],
            nodes=list({node.id: node for _, node in pairs}.values()),
            total=total,
            offset=offset,
            limit=limit,
        )

