"""SQLite rows and records: the column lists, row-to-record conversion, ``IN (...)`` lists and error translation."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import TypeVar

import numpy as np

from mnemoflow.errors import StoreError, StoreUnavailableError
from mnemoflow.memory.records import NodeRecord, RelationshipRecord

__all__ = [
    "BARE_NODE_COLUMNS",
    "NODE_COLUMNS",
    "RELATIONSHIP_COLUMNS",
    "chunks",
    "group_by_namespace",
    "node_from_row",
    "placeholders",
    "relationship_from_row",
    "sqlite_error",
]

T = TypeVar("T")
NODE_COLUMNS = "rowid, namespace, id, kind, properties, text, embedding, created_at, updated_at"
RELATIONSHIP_COLUMNS = "namespace, type, source_id, target_id, key, properties, created_at, updated_at"
BARE_NODE_COLUMNS = ", ".join(
    f"n.{column}" if column != "embedding" else "NULL AS embedding" for column in NODE_COLUMNS.split(", ")
)
"""The node columns of ``nodes n`` with the embedding left unread, for reads that return nodes without vectors."""
IN_CHUNK = 500  # ids per IN (...) list, well under SQLite's variable limit


def chunks(items: Sequence[T], size: int = IN_CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def placeholders(count: int) -> str:
    return ",".join("?" * count)


def node_from_row(row: sqlite3.Row) -> NodeRecord:
    embedding = row["embedding"]
    return NodeRecord(
        id=row["id"],
        namespace=row["namespace"],
        kind=row["kind"],
        properties=json.loads(row["properties"]),
        text=row["text"],
        embedding=None if embedding is None else np.frombuffer(embedding, dtype="<f8").tolist(),
        created_at=datetime.fromisoformat(row["created_at"]),
        updated_at=datetime.fromisoformat(row["updated_at"]),
    )


def relationship_from_row(row: sqlite3.Row, prefix: str = "") -> RelationshipRecord:
    return RelationshipRecord(
        namespace=row[f"{prefix}namespace"],
        type=row[f"{prefix}type"],
        source_id=row[f"{prefix}source_id"],
        target_id=row[f"{prefix}target_id"],
        key=row[f"{prefix}key"],
        properties=json.loads(row[f"{prefix}properties"]),
        created_at=datetime.fromisoformat(row[f"{prefix}created_at"]),
        updated_at=datetime.fromisoformat(row[f"{prefix}updated_at"]),
    )


def sqlite_error(exc: sqlite3.Error, where: str) -> StoreError:
    """The store error of a SQLite failure: unavailable when the file is locked, unopenable or failing."""
    message = f"{where}: {exc}"
    if isinstance(exc, sqlite3.OperationalError) and any(sign in str(exc) for sign in ("locked", "unable to open", "disk I/O")):
        return StoreUnavailableError(message)
    return StoreError(message)


def group_by_namespace(items: Sequence[T], namespace_of: Callable[[T], str]) -> dict[str, list[T]]:
    groups: dict[str, list[T]] = {}
    for item in items:
        groups.setdefault(namespace_of(item), []).append(item)
    return groups
