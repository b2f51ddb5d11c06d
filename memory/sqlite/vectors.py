"""Vector search for the embedded store: a normalized matrix per (namespace, kind), kept in memory.

Every change to a kind's vectors bumps its row in ``vector_versions`` inside the writing transaction, so any
process sees when its matrix is stale and reloads it.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

import numpy as np

__all__ = ["VectorMatrix", "VectorMatrices"]


@dataclass(frozen=True)
class VectorMatrix:
    version: int
    rowids: np.ndarray
    unit_vectors: np.ndarray

    def top_k(self, query: np.ndarray, k: int, allowed: list[int] | None = None) -> list[tuple[int, float]]:
        """The ``k`` rows most similar to ``query`` (cosine), best first, among ``allowed`` rowids if given."""
        rowids, unit_vectors = self.rowids, self.unit_vectors
        if allowed is not None:
            keep = np.isin(rowids, np.asarray(allowed, dtype=np.int64))
            rowids, unit_vectors = rowids[keep], unit_vectors[keep]
        if len(rowids) == 0:
            return []
        norm = float(np.linalg.norm(query))
        scores = unit_vectors @ (query / norm if norm else query)
        top = np.argpartition(-scores, min(k, len(scores)) - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(rowids[index]), float(scores[index])) for index in top]


class VectorMatrices:
    """The matrices of one store, by (namespace, kind)."""

    def __init__(self, dimension: int) -> None:
        self.dimension = dimension
        self._matrices: dict[tuple[str, str], VectorMatrix] = {}

    @staticmethod
    def bump(connection: sqlite3.Connection, keys: set[tuple[str, str]]) -> None:
        """Mark the (namespace, kind) matrices stale; call inside the transaction that changes them."""
        connection.executemany(
            """
            INSERT INTO vector_versions (namespace, kind, version) VALUES (?, ?, 1)
            ON CONFLICT (namespace, kind) DO UPDATE SET version = version + 1
            """,
            sorted(keys),
        )

    def get(self, connection: sqlite3.Connection, namespace: str, kind: str) -> VectorMatrix:
        """The current matrix, reloaded from the file when another write changed it."""
        row = connection.execute(
            "SELECT version FROM vector_versions WHERE namespace = ? AND kind = ?", [namespace, kind]
        ).fetchone()
        version = row[0] if row else 0
        cached = self._matrices.get((namespace, kind))
        if cached is not None and cached.version == version:
            return cached
        rows = connection.execute(
            "SELECT rowid, embedding FROM nodes WHERE namespace = ? AND kind = ? AND embedding IS NOT NULL",
            [namespace, kind],
        ).fetchall()
        rowids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        packed = np.frombuffer(b"".join(row[1] for row in rows), dtype="<f8")
        vectors = packed.reshape(len(rows), self.dimension).astype(np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        matrix = VectorMatrix(version, rowids, vectors / norms)
        self._matrices[(namespace, kind)] = matrix
        return matrix
