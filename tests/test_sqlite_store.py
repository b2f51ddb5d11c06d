"""Behaviour only the embedded SQLite store has: one file shared by several processes."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import new_store

WRITER = """
import asyncio, sys
from mnemoflow.memory import HashingEmbedder, NodeRecord, RelationshipRecord, SQLiteStore

async def main(path, worker):
    embedder = HashingEmbedder(384)
    store = SQLiteStore(path, embedding_model=embedder.model, embedding_dimension=embedder.dimension)
    await store.setup()
    for round_ in range(15):
        ids = [f"n{(worker * 7 + round_ + index) % 40:02d}" for index in range(10)]
        await store.upsert_nodes([NodeRecord(id=i, namespace="shared", kind="Chunk", text=i) for i in ids])
        await store.upsert_relationships(
            [RelationshipRecord(namespace="shared", type="NEXT", source_id=a, target_id=b) for a, b in zip(ids, ids[1:])]
        )
    await store.close()

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


@pytest.mark.subprocess
async def test_sqlite_file_shared_by_processes(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    workers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(worker)], stderr=subprocess.PIPE, text=True)
        for worker in range(4)
    ]
    for process in workers:
        _, errors = process.communicate(timeout=120)
        assert process.returncode == 0, errors
    reader = new_store("sqlite", sqlite_path=path)
    await reader.setup()
    try:
        expected_ids = {f"n{(w * 7 + r + i) % 40:02d}" for w in range(4) for r in range(15) for i in range(10)}
        assert await reader.count_nodes("shared") == len(expected_ids)
        expected_links = set()
        for w in range(4):
            for r in range(15):
                ids = [f"n{(w * 7 + r + i) % 40:02d}" for i in range(10)]
                expected_links.update(zip(ids, ids[1:], strict=False))
        assert await reader.count_relationships("shared") == len(expected_links)
    finally:
        await reader.close()


LOCK_HOLDER = """
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN IMMEDIATE")
connection.execute("INSERT INTO early VALUES (1)")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
connection.execute("COMMIT")
"""


@pytest.mark.subprocess
async def test_store_opening_waits_for_a_writer_on_a_file_in_rollback_mode(tmp_path: Path) -> None:
    """Switching a file to WAL while another process writes fails at once in SQLite; the store waits instead."""
    path = tmp_path / "early.db"
    with sqlite3.connect(path) as early:
        early.execute("CREATE TABLE early (x INTEGER)")
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(path), "0.5"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        store = new_store("sqlite", sqlite_path=path)
        await store.setup()
        await store.close()
    finally:
        holder.communicate(timeout=30)
    assert holder.returncode == 0
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert check.execute("SELECT x FROM early").fetchall() == [(1,)]
