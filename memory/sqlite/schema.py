"""The embedded store's tables and its migrations: the statements of each schema version."""

from __future__ import annotations

__all__ = ["DERIVED", "MIGRATIONS"]

# Statements run one by one inside the set-up transaction (executescript would commit half-way).
# vector_versions (version 1) is no longer written: the vector change log of DERIVED replaced it.
_VERSION_1 = (
    """
    CREATE TABLE IF NOT EXISTS nodes (
        namespace    TEXT NOT NULL,
        id           TEXT NOT NULL,
        kind         TEXT NOT NULL,
        properties   TEXT NOT NULL,
        text         TEXT,
        embedding    BLOB,
        content_hash TEXT NOT NULL,
        created_at   TEXT NOT NULL,
        updated_at   TEXT NOT NULL,
        UNIQUE (namespace, id)
    )
    """,
    """
    CREATE INDEX IF NOT EXISTS nodes_by_kind ON nodes (namespace, kind)
    """,
    """
    CREATE TABLE IF NOT EXISTS relationships (
        namespace    TEXT NOT NULL,
        id           TEXT NOT NULL,
        type         TEXT NOT NULL,
        source_id    TEXT NOT NULL,
        target_id    TEXT NOT NULL,
        key          TEXT NOT NULL,
        properties   TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        created_at   TEXT NOT NULL,
        updated_at   TEXT NOT NULL,
        PRIMARY KEY (namespace, id)
    ) WITHOUT ROWID
    """,
    """
    CREATE INDEX IF NOT EXISTS relationships_by_source ON relationships (namespace, source_id, type)
    """,
    """
    CREATE INDEX IF NOT EXISTS relationships_by_target ON relationships (namespace, target_id, type)
    """,
    """
    CREATE TABLE IF NOT EXISTS vector_versions (
        namespace TEXT NOT NULL,
        kind      TEXT NOT NULL,
        version   INTEGER NOT NULL,
        PRIMARY KEY (namespace, kind)
    ) WITHOUT ROWID
    """,
    """
    CREATE VIRTUAL TABLE IF NOT EXISTS node_text USING fts5(
        text, content='nodes', content_rowid='rowid', tokenize='unicode61'
    )
    """,
    """
    CREATE TRIGGER IF NOT EXISTS node_text_insert AFTER INSERT ON nodes BEGIN
        INSERT INTO node_text (rowid, text) VALUES (new.rowid, new.text);
    END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS node_text_delete AFTER DELETE ON nodes BEGIN
        INSERT INTO node_text (node_text, rowid, text) VALUES ('delete', old.rowid, old.text);
    END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS node_text_update AFTER UPDATE OF text ON nodes BEGIN
        INSERT INTO node_text (node_text, rowid, text) VALUES ('delete', old.rowid, old.text);
        INSERT INTO node_text (rowid, text) VALUES (new.rowid, new.text);
    END
    """,
)


MIGRATIONS: dict[int, tuple[str, ...]] = {1: _VERSION_1}
"""Schema version -> the statements that bring a store from the previous version to it."""

DERIVED: tuple[str, ...] = (
    """
    CREATE INDEX IF NOT EXISTS nodes_newest_by_kind ON nodes (namespace, kind, updated_at DESC, created_at DESC, id DESC)
    """,
    """
    CREATE TABLE IF NOT EXISTS vector_changes (
        seq        INTEGER PRIMARY KEY,
        namespace  TEXT NOT NULL,
        kind       TEXT NOT NULL,
        node_rowid INTEGER NOT NULL
    )
    """,
    """
    CREATE INDEX IF NOT EXISTS vector_changes_by_kind ON vector_changes (namespace, kind, seq)
    """,
    """
    CREATE TRIGGER IF NOT EXISTS vector_changes_insert AFTER INSERT ON nodes WHEN new.embedding IS NOT NULL BEGIN
        INSERT INTO vector_changes (namespace, kind, node_rowid) VALUES (new.namespace, new.kind, new.rowid);
    END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS vector_changes_update AFTER UPDATE OF embedding ON nodes
    WHEN new.embedding IS NOT old.embedding BEGIN
        INSERT INTO vector_changes (namespace, kind, node_rowid) VALUES (new.namespace, new.kind, new.rowid);
    END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS vector_changes_delete AFTER DELETE ON nodes WHEN old.embedding IS NOT NULL BEGIN
        INSERT INTO vector_changes (namespace, kind, node_rowid) VALUES (old.namespace, old.kind, old.rowid);
    END
    """,
)
"""Derived structures, created (if missing) at every set-up, whatever the schema version: the index that pages a
kind newest first without sorting it (``list_nodes``: 3-6x faster on 2,000 nodes of a kind), and the vector change log
that keeps each process's vector index fresh (see :mod:`~mnemoflow.memory.sqlite.vectors`). Every vector
inserted, changed or deleted appends its node's rowid in the writing transaction; a missing or pruned log only
makes a process reload its vectors from ``nodes``."""
