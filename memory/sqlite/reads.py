"""The embedded store's reads: nodes by id, hops and links, pages for browsing, keyword and vector search.

Each function takes the connection and runs one read (several statements share a ``DEFERRED`` transaction,
so they see one snapshot). Names and values arrive checked; every value is a query parameter.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import numpy as np

from mnemoflow.memory.records import JsonScalar, Link, NeighbourPage, NodeRecord, RelationshipRecord, ScoredNode
from mnemoflow.memory.sqlite.connection import transaction
from mnemoflow.memory.sqlite.rows import (
    BARE_NODE_COLUMNS,
    NODE_COLUMNS,
    RELATIONSHIP_COLUMNS,
    chunks,
    node_from_row,
    placeholders,
    relationship_from_row,
)
from mnemoflow.memory.sqlite.vectors import VectorIndexes

__all__ = [
    "count_statement",
    "expand",
    "keyword_search",
    "links_statement",
    "list_nodes",
    "list_statement",
    "neighbours_of",
    "neighbours_page",
    "nodes_by_id",
    "property_conditions",
    "vector_search",
]

_PREFIXED = ", ".join(f"r.{column} AS r_{column}" for column in RELATIONSHIP_COLUMNS.split(", "))
"""The relationship columns of ``r`` named ``r_...``, to read beside a node's columns."""
_FULL_NODE_COLUMNS = ", ".join(f"n.{column}" for column in NODE_COLUMNS.split(", "))
"""The node columns of ``nodes n``, embedding included."""


def nodes_by_id(connection: sqlite3.Connection, namespace: str, ids: list[str], columns: str = NODE_COLUMNS) -> dict[str, NodeRecord]:
    found = {}
    for chunk in chunks(sorted(set(ids))):
        for row in connection.execute(
            f"SELECT {columns} FROM nodes n WHERE n.namespace = ? AND n.id IN ({placeholders(len(chunk))})", [namespace, *chunk]
        ):
            found[row["id"]] = node_from_row(row)
    return found


def expand(
    connection: sqlite3.Connection,
    namespace: str,
    frontier: list[str],
    types: list[str] | None,
    direction: str,
    include_embeddings: bool,
) -> list[tuple[RelationshipRecord, NodeRecord]]:
    """One hop of a neighbourhood: each allowed relationship touching the frontier, with its other end."""
    node_columns = _FULL_NODE_COLUMNS if include_embeddings else BARE_NODE_COLUMNS
    sides = {"out": [("source_id", "target_id")], "in": [("target_id", "source_id")]}
    sides["both"] = sides["out"] + sides["in"]
    pairs = []
    for chunk in chunks(frontier):
        for near, far in sides[direction]:
            type_filter = "" if types is None else f" AND r.type IN ({placeholders(len(types))})"
            rows = connection.execute(
                f"SELECT {_PREFIXED}, {node_columns} FROM relationships r "
                f"JOIN nodes n ON n.namespace = r.namespace AND n.id = r.{far} "
                f"WHERE r.namespace = ? AND r.{near} IN ({placeholders(len(chunk))}){type_filter}",
                [namespace, *chunk, *(types or [])],
            )
            pairs += [(relationship_from_row(row, "r_"), node_from_row(row)) for row in rows]
    return pairs


def links_statement(
    namespace: str, ids: list[str], types: list[str] | None, direction: str, kinds: list[str] | None, limit: int
) -> tuple[str, list[Any]]:
    """The one statement of :func:`neighbours_of`: each seed that exists, with its first ``limit`` links.

    Outgoing links by the by-source index, incoming ones by the by-target index (a self-loop once, as outgoing,
    when both are asked for); ``ROW_NUMBER`` over (type, other end, relationship id) cuts each seed's list.
    A seed without links comes back once with NULL link columns.
    """
    type_filter = "" if types is None else f" AND r.type IN ({placeholders(len(types))})"
    kind_filter = "" if kinds is None else f" AND n.kind IN ({placeholders(len(kinds))})"
    sides = []
    parameters: list[Any] = [json.dumps(ids), namespace]
    if direction in ("out", "both"):
        sides.append(
            "SELECT s.seed, r.*, r.target_id AS other_id FROM seeds s CROSS "
            "JOIN relationships r INDEXED BY relationships_by_source ON r.namespace = ? AND r.source_id = s.seed" + type_filter
        )
        parameters += [namespace, *(types or [])]
    if direction in ("in", "both"):
        loop = " AND r.source_id <> s.seed" if direction == "both" else ""
        sides.append(
            "SELECT s.seed, r.*, r.source_id AS other_id FROM seeds s CROSS "
            "JOIN relationships r INDEXED BY relationships_by_target ON r.namespace = ? AND r.target_id = s.seed" + type_filter + loop
        )
        parameters += [namespace, *(types or [])]
    ranked_columns = ", ".join(f"t.{column} AS r_{column}" for column in RELATIONSHIP_COLUMNS.split(", "))
    sql = (
        "WITH seeds AS (SELECT DISTINCT s.value AS seed FROM json_each(?) s "
        "JOIN nodes e ON e.namespace = ? AND e.id = s.value), "
        f"touching AS ({' UNION ALL '.join(sides)}), "
        f"ranked AS (SELECT t.seed, {ranked_columns}, {BARE_NODE_COLUMNS}, "
        "ROW_NUMBER() OVER (PARTITION BY t.seed ORDER BY t.type, t.other_id, t.id) AS position "
        f"FROM touching t JOIN nodes n ON n.namespace = t.namespace AND n.id = t.other_id{kind_filter}) "
        "SELECT s.seed AS seed_id, ranked.* FROM seeds s LEFT JOIN ranked ON ranked.seed = s.seed AND ranked.position <= ? "
        "ORDER BY s.seed, ranked.position"
    )
    return sql, [*parameters, *(kinds or []), limit]


def neighbours_of(
    connection: sqlite3.Connection,
    namespace: str,
    ids: list[str],
    types: list[str] | None,
    direction: str,
    kinds: list[str] | None,
    limit: int,
) -> dict[str, list[Link]]:
    """``GraphStore.neighbours_of`` in one statement; keys in the input order of the ids that exist."""
    sql, parameters = links_statement(namespace, ids, types, direction, kinds, limit)
    found: dict[str, list[Link]] = {}
    for row in connection.execute(sql, parameters):
        links = found.setdefault(row["seed_id"], [])
        if row["position"] is not None:
            links.append(Link(relationship=relationship_from_row(row, "r_"), node=node_from_row(row)))
    return {node_id: found[node_id] for node_id in dict.fromkeys(ids) if node_id in found}


def neighbours_page(connection: sqlite3.Connection, namespace: str, node_id: str, limit: int, offset: int) -> NeighbourPage:
    """One page of the relationships touching a node, either direction, with their other ends."""
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
    with transaction(connection, "DEFERRED"):
        row = connection.execute(
            f"SELECT {BARE_NODE_COLUMNS} FROM nodes n WHERE n.namespace = ? AND n.id = ?", [namespace, node_id]
        ).fetchone()
        if row is None:
            return NeighbourPage(node=None, relationships=[], nodes=[], total=0, offset=offset, limit=limit)
        centre = node_from_row(row)
        total = int(connection.execute(f"SELECT count(*) {touching}", touching_parameters).fetchone()[0])
        rows = connection.execute(
            f"SELECT {_PREFIXED}, {BARE_NODE_COLUMNS} {touching} ORDER BY r.type, n.id, r.id LIMIT ? OFFSET ?",
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


def count_statement(namespace: str, kind: str | None) -> tuple[str, list[Any]]:
    """How many nodes the namespace holds, of one kind if given: two statements, so each is an index range
    (no ``kind IS NULL OR`` that would defeat the index)."""
    if kind is None:
        return "SELECT count(*) FROM nodes WHERE namespace = ?", [namespace]
    return "SELECT count(*) FROM nodes WHERE namespace = ? AND kind = ?", [namespace, kind]


def property_conditions(filters: dict[str, JsonScalar]) -> tuple[str, list[Any]]:
    """A condition to append to a ``WHERE`` (its parameters beside it): the top-level properties equal every
    checked filter.

    ``json_extract`` gives a JSON ``true``/``false`` as 1/0 and a missing property as NULL, which equals nothing:
    so a string never equals a number, but a boolean equals the integer 1 or 0. Empty filters add no text.
    """
    conditions = "".join(" AND json_extract(properties, ?) = ?" for _ in filters)
    return conditions, [value for key, filter_value in filters.items() for value in (f'$."{key}"', filter_value)]


def list_statement(
    namespace: str, kind: str | None, where: dict[str, JsonScalar], limit: int, offset: int
) -> tuple[str, list[Any]]:
    """A page of the namespace's nodes (optionally of one kind) whose properties equal ``where``, newest first,
    without embeddings: with a kind, the rows come in order from the ``nodes_newest_by_kind`` index, so a page reads
    only the rows it tests, never sorts the kind."""
    kind_filter = "" if kind is None else " AND n.kind = ?"
    conditions, condition_parameters = property_conditions(where)
    sql = (
        f"SELECT {BARE_NODE_COLUMNS} FROM nodes n WHERE n.namespace = ?{kind_filter}{conditions} "
        "ORDER BY n.updated_at DESC, n.created_at DESC, n.id DESC LIMIT ? OFFSET ?"
    )
    return sql, [namespace, *([] if kind is None else [kind]), *condition_parameters, limit, offset]


def list_nodes(
    connection: sqlite3.Connection, namespace: str, kind: str | None, where: dict[str, JsonScalar], limit: int, offset: int
) -> list[NodeRecord]:
    """The page :func:`list_statement` reads."""
    sql, parameters = list_statement(namespace, kind, where, limit, offset)
    return [node_from_row(row) for row in connection.execute(sql, parameters)]


def keyword_search(connection: sqlite3.Connection, namespace: str, match: str, kinds: list[str] | None, k: int) -> list[ScoredNode]:
    """The FTS5 ``match`` expression's best ``k`` nodes of the namespace by BM25."""
    kind_filter = "" if kinds is None else f" AND n.kind IN ({placeholders(len(kinds))})"
    rows = connection.execute(
        f"SELECT {_FULL_NODE_COLUMNS}, bm25(node_text) AS rank FROM node_text "
        f"JOIN nodes n ON n.rowid = node_text.rowid "
        f"WHERE node_text MATCH ? AND n.namespace = ?{kind_filter} ORDER BY rank, n.id LIMIT ?",
        [match, namespace, *(kinds or []), k],
    )
    return [ScoredNode(node=node_from_row(row), score=-float(row["rank"])) for row in rows]


def vector_search(
    connection: sqlite3.Connection,
    indexes: VectorIndexes,
    namespace: str,
    kind: str,
    query: np.ndarray,
    k: int,
    filters: dict[str, JsonScalar],
    include_embeddings: bool,
) -> list[ScoredNode]:
    """The ``k`` nodes of the kind nearest ``query`` (a unit vector), with exact cosines, passing ``filters``."""
    conditions, condition_parameters = property_conditions(filters)

    def accept(rowids: list[int]) -> set[int]:
        passing: set[int] = set()
        for chunk in chunks(rowids):
            passing.update(
                row[0]
                for row in connection.execute(
                    f"SELECT rowid FROM nodes WHERE rowid IN ({placeholders(len(chunk))}){conditions}", [*chunk, *condition_parameters]
                )
            )
        return passing

    def allowed() -> list[int]:
        sql = f"SELECT rowid FROM nodes WHERE namespace = ? AND kind = ?{conditions}"
        return [row[0] for row in connection.execute(sql, [namespace, kind, *condition_parameters])]

    with transaction(connection, "DEFERRED"):
        best = indexes.get(connection, namespace, kind).search(query, k, accept if filters else None, allowed)
        if not best:
            return []
        columns = NODE_COLUMNS if include_embeddings else BARE_NODE_COLUMNS
        rows = {
            row["rowid"]: node_from_row(row)
            for row in connection.execute(
                f"SELECT {columns} FROM nodes n WHERE n.rowid IN ({placeholders(len(best))})", [rowid for rowid, _ in best]
            )
        }
    return [ScoredNode(node=rows[rowid], score=score) for rowid, score in best]
