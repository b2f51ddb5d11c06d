"""Vector search for the embedded store: per (namespace, kind), unit vectors in memory, with an approximate
index once the kind is large, kept fresh from a change log.

Every insert, change or delete of a vector appends a row to ``vector_changes`` (triggers on ``nodes``, in the
writing transaction, whoever writes). A process's index remembers the last change it applied; a search reads
the kind's newest change (one index seek) and applies only the rows changed since, so a write of one node
costs the next search one row, not a reload. Writers prune the log to its newest ``CHANGE_LOG_KEEP`` rows;
an index older than what is left reloads from ``nodes``.

Scores are always exact cosines from the float32 unit vectors. A kind of fewer than ``EXACT_BELOW`` vectors is
scanned whole (exact, and as fast as the graph index there); a larger one asks a usearch HNSW index
(int8-quantized: a quarter of the float32 memory) for ``oversampled(k)`` candidates and rescores them exactly.
A filter is checked in SQL on the candidates, widening them by the pass rate seen; when too few pass, the rows
that pass are listed and scanned exactly. A built index is saved beside the database file
(:mod:`~mnemoflow.memory.sqlite.index_files`), so another process loads it and applies the log since.
``bench/store_sqlite.py`` measured the thresholds and the recall.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence

import numpy as np
from usearch.index import Index

from mnemoflow.memory.sqlite.index_files import IndexFiles
from mnemoflow.memory.sqlite.rows import chunks, placeholders

__all__ = [
    "CHANGE_LOG_KEEP",
    "EXACT_BELOW",
    "KindVectors",
    "SEARCH_BREADTH",
    "VectorIndexes",
    "oversampled",
    "prune_changes",
]

EXACT_BELOW = 5_000
"""Vectors of a kind below which search scans them all; at and above it, the approximate index answers."""
CHANGE_LOG_KEEP = 100_000
"""Rows of ``vector_changes`` kept after pruning; pruning runs when twice as many accumulated."""
SEARCH_BREADTH = 320
"""The approximate index's search breadth (HNSW ``ef``): at 64, recall@10 fell to 0.98 at 100k vectors."""
MAX_CANDIDATES = 4096
"""Most candidates a filtered search takes from the approximate index before scanning the allowed rows."""
_FLOOR_KEY = "vector_changes_floor"
"""``meta`` key: changes up to this sequence number were pruned."""

Accept = Callable[[list[int]], set[int]]
"""A filter: of these rowids, the ones whose node passes."""


def oversampled(k: int) -> int:
    """Candidates asked of the approximate index for ``k`` hits: enough for recall@10 >= 0.99 on the benchmark's data."""
    return max(4 * k, 160)


def prune_changes(connection: sqlite3.Connection) -> None:
    """Drop old change-log rows once the log is twice ``CHANGE_LOG_KEEP``; call in a write transaction."""
    newest = connection.execute("SELECT max(seq) FROM vector_changes").fetchone()[0] or 0
    floor = _floor(connection)
    if newest - floor >= 2 * CHANGE_LOG_KEEP:
        floor = newest - CHANGE_LOG_KEEP
        connection.execute("DELETE FROM vector_changes WHERE seq <= ?", [floor])
        connection.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [_FLOOR_KEY, str(floor)],
        )


def _floor(connection: sqlite3.Connection) -> int:
    row = connection.execute("SELECT value FROM meta WHERE key = ?", [_FLOOR_KEY]).fetchone()
    return int(row[0]) if row else 0


def _changed_since(connection: sqlite3.Connection, namespace: str, kind: str, seq: int) -> list[int]:
    """The rowids of the kind's vectors inserted, changed or deleted after change ``seq``."""
    sql = "SELECT DISTINCT node_rowid FROM vector_changes WHERE namespace = ? AND kind = ? AND seq > ?"
    return [row[0] for row in connection.execute(sql, [namespace, kind, seq])]


def _unit(packed: Sequence[bytes], dimension: int) -> np.ndarray:
    """Stored float64 blobs as float32 unit rows (a zero vector stays zero)."""
    vectors = np.frombuffer(b"".join(packed), dtype="<f8").reshape(len(packed), dimension).astype(np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    vectors /= norms
    return vectors


class KindVectors:
    """The vectors of one (namespace, kind): rows in a growable matrix, an approximate index when large."""

    def __init__(
        self, dimension: int, seq: int, rowids: np.ndarray, vectors: np.ndarray, saved: Index | None = None, stale: Iterable[int] = ()
    ) -> None:
        """Rows as of ``seq``; ``saved`` is an approximate index of an earlier state, whose ``stale`` rowids
        (those changed since) are brought up to date here."""
        self.dimension = dimension
        self.seq = seq
        """The last change applied."""
        self.unsaved = 0
        """Changes to the approximate index since it was built, loaded or saved."""
        self._rowids = rowids
        self._vectors = vectors
        self._size = len(rowids)
        self._slots = {int(rowid): slot for slot, rowid in enumerate(rowids.tolist())}
        self._index: Index | None = saved
        if saved is not None:
            saved.expansion_search = SEARCH_BREADTH  # type: ignore[misc]  # settable at run time; not kept in the file
        self._refresh_index(list(stale))
        self._sync_index()

    def __len__(self) -> int:
        return self._size

    @property
    def index(self) -> Index | None:
        """The approximate index searches take candidates from, ``None`` while the kind is scanned whole."""
        return self._index

    def apply(self, seq: int, rows: dict[int, bytes | None]) -> None:
        """Set (or, for ``None``, remove) the vectors of these rowids; ``seq`` is the newest change they carry."""
        removed = [rowid for rowid, blob in rows.items() if blob is None and rowid in self._slots]
        for rowid in removed:
            self._remove(rowid)
        changed = [(rowid, blob) for rowid, blob in rows.items() if blob is not None]
        if changed:
            units = _unit([blob for _, blob in changed], self.dimension)
            for (rowid, _), unit in zip(changed, units, strict=True):
                self._put(rowid, unit)
        self._refresh_index(list(rows))
        self.seq = seq
        self._sync_index()

    def _refresh_index(self, rowids: list[int]) -> None:
        """Give the approximate index the current vectors of these rowids (removing those gone)."""
        if self._index is None:
            return
        replaced = np.asarray([rowid for rowid in rowids if rowid in self._index], dtype=np.uint64)
        if len(replaced):
            self._index.remove(replaced)
        present = [rowid for rowid in rowids if rowid in self._slots]
        if present:
            self._index.add(np.asarray(present, dtype=np.uint64), self._vectors[[self._slots[rowid] for rowid in present]])
        self.unsaved += len(rowids)

    def _put(self, rowid: int, unit: np.ndarray) -> None:
        slot = self._slots.get(rowid)
        if slot is None:
            if self._size == len(self._rowids):
                capacity = max(16, 2 * self._size)
                self._rowids = np.resize(self._rowids, capacity)
                vectors = np.zeros((capacity, self.dimension), dtype=np.float32)
                vectors[: self._size] = self._vectors[: self._size]
                self._vectors = vectors
            slot, self._size = self._size, self._size + 1
            self._slots[rowid] = slot
            self._rowids[slot] = rowid
        self._vectors[slot] = unit

    def _remove(self, rowid: int) -> None:
        """Move the last row into the removed one's slot."""
        slot, last = self._slots.pop(rowid), self._size - 1
        if slot != last:
            moved = int(self._rowids[last])
            self._rowids[slot], self._vectors[slot] = moved, self._vectors[last]
            self._slots[moved] = slot
        self._size = last

    def _sync_index(self) -> None:
        """Build the approximate index when the kind reaches ``EXACT_BELOW``; drop it below half that."""
        if self._index is None and self._size >= EXACT_BELOW:
            self._index = Index(
                ndim=self.dimension, metric="cos", dtype="i8", connectivity=16, expansion_add=128, expansion_search=SEARCH_BREADTH
            )
            self._index.add(self._rowids[: self._size].astype(np.uint64), self._vectors[: self._size])
            self.unsaved = self._size
        elif self._index is not None and self._size < EXACT_BELOW // 2:
            self._index = None

    def search(self, query: np.ndarray, k: int, accept: Accept | None, allowed: Callable[[], list[int]]) -> list[tuple[int, float]]:
        """The ``k`` rowids most similar to ``query`` (a unit vector) with their exact cosines, best first.

        Candidates come from the approximate index (``oversampled(k)``) or, for a small kind, from the scan.
        ``accept`` filters them, widening by the pass rate seen up to ``MAX_CANDIDATES``; when it keeps fewer than
        ``k``, ``allowed()`` lists every row that passes and those are scanned.
        """
        if self._size == 0:
            return []
        if accept is None and self._index is None:
            return self._best(None, query, k)
        wanted = oversampled(k)
        while True:
            asked = min(wanted, self._size)
            keys = self._candidates(query, asked)
            if accept is not None:
                passing = accept(keys)
                keys = [key for key in keys if key in passing]
            covered = asked == self._size
            # enough when twice k pass (the k-th best allowed row then lies well inside the candidates)
            if len(keys) >= 2 * k or covered or asked >= MAX_CANDIDATES:
                break
            # widen to what the pass rate seen so far needs; past MAX_CANDIDATES, scan the allowed rows
            wanted = max(4 * asked, 4 * k * asked // max(len(keys), 1))
            if MAX_CANDIDATES < wanted < self._size:
                break
        if len(keys) >= k or accept is None or covered:
            return self._best([self._slots[key] for key in keys], query, k)
        return self._best([self._slots[rowid] for rowid in allowed() if rowid in self._slots], query, k)

    def _candidates(self, query: np.ndarray, count: int) -> list[int]:
        """About the ``count`` rowids nearest ``query``: from the approximate index, or exactly by a scan (also
        when all rows are asked for, which a graph index may not return)."""
        if self._index is not None and count < self._size:
            keys = self._index.search(query, count).keys.astype(np.int64).tolist()
            return [key for key in keys if key in self._slots]
        scores = self._vectors[: self._size] @ query
        top = np.argpartition(-scores, count - 1)[:count] if count < self._size else np.arange(self._size)
        return [int(rowid) for rowid in self._rowids[top]]

    def _best(self, slots: list[int] | None, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Exact top ``k`` among ``slots`` (all rows if ``None``)."""
        if slots is None:
            rowids, vectors = self._rowids[: self._size], self._vectors[: self._size]
        else:
            index = np.asarray(slots, dtype=np.int64)
            rowids, vectors = self._rowids[index], self._vectors[index]
        if len(rowids) == 0:
            return []
        scores = vectors @ query
        top = np.argpartition(-scores, min(k, len(scores)) - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(rowids[index]), float(scores[index])) for index in top]


class VectorIndexes:
    """The vectors of one store, by (namespace, kind), each brought up to date before a search."""

    def __init__(self, dimension: int, files: IndexFiles) -> None:
        self.dimension = dimension
        self.files = files
        self._kinds: dict[tuple[str, str], KindVectors] = {}

    def get(self, connection: sqlite3.Connection, namespace: str, kind: str) -> KindVectors:
        """The kind's vectors as the file holds them now; call inside the search's read transaction."""
        newest = connection.execute(
            "SELECT max(seq) FROM vector_changes WHERE namespace = ? AND kind = ?", [namespace, kind]
        ).fetchone()[0] or 0
        cached = self._kinds.get((namespace, kind))
        if cached is not None and cached.seq == newest:
            return cached
        floor = _floor(connection)
        if cached is not None and cached.seq >= floor:
            changed = _changed_since(connection, namespace, kind, cached.seq)
            if len(changed) <= max(len(cached), 1_000):
                cached.apply(newest, self._current(connection, namespace, kind, changed))
                return self._saved(connection, namespace, kind, cached)
        rows = connection.execute(
            "SELECT rowid, embedding FROM nodes WHERE namespace = ? AND kind = ? AND embedding IS NOT NULL", [namespace, kind]
        ).fetchall()
        rowids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        token = self.files.token(connection)
        restored = None
        if len(rows) >= EXACT_BELOW and token is not None:
            restored = self.files.load(token, namespace, kind, floor, newest)
        saved, stale = (None, []) if restored is None else (restored[0], _changed_since(connection, namespace, kind, restored[1]))
        loaded = KindVectors(self.dimension, newest, rowids, _unit([row[1] for row in rows], self.dimension), saved, stale)
        self._kinds[(namespace, kind)] = loaded
        return self._saved(connection, namespace, kind, loaded)

    def _saved(self, connection: sqlite3.Connection, namespace: str, kind: str, kind_vectors: KindVectors) -> KindVectors:
        """Save the kind's approximate index once a tenth of it (at least 1,000 rows) changed since it was built,
        loaded or saved, so that the next process loads it."""
        token = self.files.token(connection)
        if kind_vectors.index is not None and token is not None and kind_vectors.unsaved >= max(1_000, len(kind_vectors) // 10):
            self.files.save(token, namespace, kind, kind_vectors.index, kind_vectors.seq)
            kind_vectors.unsaved = 0
        return kind_vectors

    @staticmethod
    def _current(connection: sqlite3.Connection, namespace: str, kind: str, rowids: Iterable[int]) -> dict[int, bytes | None]:
        """Each rowid's vector now, ``None`` when its node is gone, moved to another kind or has none."""
        current: dict[int, bytes | None] = dict.fromkeys(rowids)
        for chunk in chunks(list(current)):
            for rowid, blob in connection.execute(
                f"SELECT rowid, embedding FROM nodes WHERE rowid IN ({placeholders(len(chunk))}) AND namespace = ? AND kind = ?",
                [*chunk, namespace, kind],
            ):
                current[rowid] = blob
        return current
