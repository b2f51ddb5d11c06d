"""Replies of deterministic calls, in a local SQLite file, keyed by a hash of everything that shapes them."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from mnemoflow.sqlite_files import open_shared_file

__all__ = ["ResponseCache", "cache_key"]


def cache_key(**parts: Any) -> str:
    """Content address of a call: model, messages, schema, temperature, seed and the request shape."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


class ResponseCache:
    """``get``/``put`` of reply texts; safe for several tasks and processes (WAL, one short transaction each)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            connection = open_shared_file(self.path, busy_timeout=30)
            connection.execute(
                "CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, text TEXT NOT NULL, "
                "prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL)"
            )
            self._connection = connection
        return self._connection

    def _get(self, key: str) -> tuple[str, int, int] | None:
        with self._lock:
            row = self._connect().execute(
                "SELECT text, prompt_tokens, completion_tokens FROM replies WHERE key = ?", [key]
            ).fetchone()
        return None if row is None else (str(row[0]), int(row[1]), int(row[2]))

    def _put(self, key: str, text: str, prompt_tokens: int, completion_tokens: int) -> None:
        with self._lock:
            self._connect().execute(
                "INSERT OR REPLACE INTO replies (key, text, prompt_tokens, completion_tokens) VALUES (?, ?, ?, ?)",
                [key, text, prompt_tokens, completion_tokens],
            )

    async def get(self, key: str) -> tuple[str, int, int] | None:
        """The cached reply text and its token counts, or ``None``."""
        return await asyncio.to_thread(self._get, key)

    async def put(self, key: str, text: str, prompt_tokens: int, completion_tokens: int) -> None:
        await asyncio.to_thread(self._put, key, text, prompt_tokens, completion_tokens)

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
