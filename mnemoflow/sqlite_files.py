"""Opening an SQLite file that several processes share: autocommit, the WAL journal, a busy timeout."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

__all__ = ["open_shared_file"]


def open_shared_file(path: Path, busy_timeout: float) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit) on ``path`` in WAL mode.

    Other processes' locks are waited for up to ``busy_timeout`` seconds, also while switching a new file to WAL:
    SQLite refuses that switch at once, without its busy handler, when it meets a writer on a file still in
    rollback mode (several processes opening a new file together), so the wait for it is here.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
    deadline = time.monotonic() + busy_timeout
    pause = 0.005
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return connection
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                connection.close()
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.1)
