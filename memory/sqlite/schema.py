"""The embedded store's tables and its migrations: the statements of each schema version."""

from __future__ import annotations

__all__ = ["MIGRATIONS"]

# Statements run one by one inside the set-up transaction (executescript would commit half-way).
# vector_versions is bumped with every change to a kind's vectors, so that every process's in-memory
# vector matrix knows when to reload.
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
