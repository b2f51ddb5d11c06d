"""The embedded store's writes: upserts and deletes, each called inside one ``BEGIN IMMEDIATE`` transaction.

Vector changes need no bookkeeping here: triggers on ``nodes`` log every changed or deleted vector in
``vector_changes`` (see :mod:`mnemoflow.memory.sqlite.schema`), whoever writes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence

from mnemoflow.errors import ConflictError, MissingEndpointError
from mnemoflow.memory.batches import PreparedNode, PreparedRelationship
from mnemoflow.memory.sqlite.rows import chunks, group_by_namespace, placeholders
from mnemoflow.memory.sqlite.vectors import prune_changes

__all__ = ["delete_expired", "delete_nodes", "upsert_nodes", "upsert_relationships"]

_UPSERT_NODE = """
    INSERT INTO nodes (namespace, id, kind, properties, text, embedding, content_hash, created_at, updated_at)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (namespace, id) DO UPDATE SET
        properties = excluded.properties,
        text = excluded.text,
        embedding = excluded.embedding,
        updated_at = CASE WHEN nodes.content_hash = excluded.content_hash
                          THEN nodes.updated_at ELSE excluded.updated_at END,
        content_hash = excluded.content_hash
"""

_UPSERT_RELATIONSHIP = """
    INSERT INTO relationships
        (namespace, id, type, source_id, target_id, key, properties, content_hash, created_at, updated_at)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (namespace, id) DO UPDATE SET
        properties = excluded.properties,
        updated_at = CASE WHEN relationships.content_hash = excluded.content_hash
                          THEN relationships.updated_at ELSE excluded.updated_at END,
        content_hash = excluded.content_hash
"""


def upsert_nodes(connection: sqlite3.Connection, prepared: list[PreparedNode], new: list[PreparedNode], now: str) -> int:
    """Write the batch, or nothing when an id of ``new`` exists or an id exists with another kind.

    One ``IN (...)`` read per 500 ids finds both kinds of conflict; the caller holds the write lock, so no
    other writer comes between it and the writes.
    """
    new_ids = {(item.record.namespace, item.record.id) for item in new}
    taken, conflicts = [], []
    for namespace, group in group_by_namespace(prepared, lambda item: item.record.namespace).items():
        kinds = {item.record.id: item.record.kind for item in group}
        for ids in chunks(list(kinds)):
            for node_id, kind in connection.execute(
                f"SELECT id, kind FROM nodes WHERE namespace = ? AND id IN ({placeholders(len(ids))})", [namespace, *ids]
            ):
                if (namespace, node_id) in new_ids:
                    taken.append(node_id)
                if kind != kinds[node_id]:
                    conflicts.append(f"{node_id!r} is a {kind}, not a {kinds[node_id]}")
    if taken:
        raise ConflictError(f"upsert refused, nothing written: ids that must be new exist already: {', '.join(map(repr, sorted(taken)[:10]))}")
    if conflicts:
        raise ConflictError(f"upsert refused, nothing written: {'; '.join(sorted(conflicts)[:10])}")
    connection.executemany(
        _UPSERT_NODE,
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
    prune_changes(connection)
    return len(prepared)


def upsert_relationships(connection: sqlite3.Connection, prepared: list[PreparedRelationship], now: str) -> int:
    """Write the batch, or nothing when an endpoint is missing (``MissingEndpointError`` naming them)."""
    missing = []
    for namespace, group in group_by_namespace(prepared, lambda item: item.record.namespace).items():
        wanted = sorted({item.record.source_id for item in group} | {item.record.target_id for item in group})
        found: set[str] = set()
        for ids in chunks(wanted):
            found.update(
                row[0]
                for row in connection.execute(
                    f"SELECT id FROM nodes WHERE namespace = ? AND id IN ({placeholders(len(ids))})", [namespace, *ids]
                )
            )
        missing += [f"{namespace!r}/{node_id!r}" for node_id in wanted if node_id not in found]
    if missing:
        raise MissingEndpointError(
            f"relationships refer to nodes that do not exist, nothing written: {', '.join(missing[:10])}"
            + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        )
    connection.executemany(
        _UPSERT_RELATIONSHIP,
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


def delete_nodes(connection: sqlite3.Connection, ids_by_namespace: Mapping[str, Sequence[str]]) -> int:
    """Delete nodes and every relationship touching them; returns the number of nodes deleted."""
    deleted = 0
    for namespace, ids in ids_by_namespace.items():
        for chunk in chunks(sorted(set(ids))):
            marks = placeholders(len(chunk))
            connection.execute(
                f"DELETE FROM relationships WHERE namespace = ? AND (source_id IN ({marks}) OR target_id IN ({marks}))",
                [namespace, *chunk, *chunk],
            )
            deleted += connection.execute(
                f"DELETE FROM nodes WHERE namespace = ? AND id IN ({marks})", [namespace, *chunk]
            ).rowcount
    prune_changes(connection)
    return deleted


def delete_expired(connection: sqlite3.Connection, now: float) -> int:
    """Delete every node, in every namespace, whose top-level numeric ``expires_at`` is <= ``now``."""
    expired: dict[str, list[str]] = {}
    for namespace, node_id in connection.execute(
        "SELECT namespace, id FROM nodes WHERE json_type(properties, '$.expires_at') IN ('integer', 'real') "
        "AND json_extract(properties, '$.expires_at') <= ?",
        [now],
    ):
        expired.setdefault(namespace, []).append(node_id)
    return delete_nodes(connection, expired)
