"""Approximate vector indexes saved next to the database file, so that a new process loads one instead of
building it (a build costs about 0.1-0.4 ms per vector: tens of seconds at 100k; a load well under one).

A file holds one (namespace, kind) index as it was after the change-log entry ``seq`` of one database:
``<database>.vectors/<token>-<key>-<seq>.usearch``, where ``token`` is a random id the database keeps in its
``meta`` table (a database deleted and created again gets a new one, so no file of the old one is loaded) and
``key`` a digest of the namespace and kind. Files are written under a temporary name and renamed, so a reader
never sees half of one; older files of the same index are removed after a save. A file that cannot be read is
ignored (the index is then built), so these files are a cache: deleting the folder only costs a build.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import uuid
from pathlib import Path

from usearch.index import Index

__all__ = ["IndexFiles"]

_TOKEN_KEY = "vector_index_token"


class IndexFiles:
    """The saved indexes of one database file."""

    def __init__(self, database: Path) -> None:
        self.folder = database.with_name(database.name + ".vectors")
        self._token: str | None = None

    @staticmethod
    def create_token(connection: sqlite3.Connection) -> None:
        """Give the database its id for index files unless it has one; call in the set-up transaction."""
        connection.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", [_TOKEN_KEY, uuid.uuid4().hex])

    def token(self, connection: sqlite3.Connection) -> str | None:
        """This database's id for its index files (``None`` before ``setup()`` made one)."""
        if self._token is None:
            row = connection.execute("SELECT value FROM meta WHERE key = ?", [_TOKEN_KEY]).fetchone()
            self._token = None if row is None else str(row[0])
        return self._token

    @staticmethod
    def _stem(token: str, namespace: str, kind: str) -> str:
        digest = hashlib.sha256("\x1f".join((namespace, kind)).encode()).hexdigest()[:20]
        return f"{token}-{digest}"

    def _saved(self, stem: str) -> list[tuple[int, Path]]:
        if not self.folder.is_dir():
            return []
        found = []
        for path in self.folder.glob(f"{stem}-*.usearch"):
            with contextlib.suppress(ValueError):
                found.append((int(path.stem.rsplit("-", 1)[1]), path))
        return sorted(found)

    def load(self, token: str, namespace: str, kind: str, oldest: int, newest: int) -> tuple[Index, int] | None:
        """The newest saved index whose ``seq`` lies in [``oldest``, ``newest``], with that ``seq``; else ``None``."""
        for seq, path in reversed(self._saved(self._stem(token, namespace, kind))):
            if oldest <= seq <= newest:
                try:
                    index = Index.restore(path)
                except (OSError, RuntimeError, ValueError):
                    return None
                return (index, seq) if index is not None else None
        return None

    def save(self, token: str, namespace: str, kind: str, index: Index, seq: int) -> None:
        """Save ``index`` as of ``seq`` and remove the older files of the same index; best effort (a cache)."""
        stem = self._stem(token, namespace, kind)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            partial = self.folder / f".{stem}-{seq}.{os.getpid()}.partial"
            index.save(partial)
            os.replace(partial, self.folder / f"{stem}-{seq}.usearch")
        except (OSError, RuntimeError):
            return
        for older, path in self._saved(stem):
            if older < seq:
                with contextlib.suppress(OSError):
                    path.unlink()
