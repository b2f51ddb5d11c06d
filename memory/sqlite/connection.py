"""Opening the store's SQLite file and running one transaction on it."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mnemoflow.sqlite_files import open_shared_file

__all__ = ["open_connection", "transaction"]


def open_connection(path: Path, busy_timeout: float) -> sqlite3.Connection:
    """A shared-file connection (autocommit, WAL, ``busy_timeout``) with rows by column name."""
    connection = open_shared_file(path, busy_timeout)
    connection.row_factory = sqlite3.Row
    connection.execute("PRAGMA synchronous=NORMAL")
    return connection


@contextmanager
def transaction(connection: sqlite3.Connection, mode: str = "IMMEDIATE") -> Iterator[sqlite3.Connection]:
    """One transaction: ``IMMEDIATE`` takes the write lock up front (checks and writes see the same file),
    ``DEFERRED`` gives a read a consistent snapshot. Rolled back on any exception."""
    connection.execute(f"BEGIN {mode}")
    try:
        yield connection
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
