"""The embedded store at scale: query plans that use indexes, and a vector index that stays exact in its
scores, fresh across store instances (as across processes) and incremental."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from mnemoflow.memory import NodeRecord, RelationshipRecord, SQLiteStore
from mnemoflow.memory.sqlite import reads, vectors
from mnemoflow.memory.sqlite.index_files import IndexFiles

DIMENSION = 16
NAMESPACE = "scale"

UNINDEXED_SCAN = re.compile(r"\bSCAN (nodes|relationships|n|e|r)\b(?! USING (COVERING )?INDEX)")
"""A plan line reading a whole table of ours (the aliases the statements give nodes and relationships)."""


def store_at(path: Path) -> SQLiteStore:
    return SQLiteStore(path, embedding_model="test-random", embedding_dimension=DIMENSION)


def unit_rows(count: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((count, DIMENSION))
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def chunks_of(rows: np.ndarray, start: int = 0) -> list[NodeRecord]:
    return [
        NodeRecord(
            id=f"c{start + offset:04d}",
            namespace=NAMESPACE,
            kind="Chunk",
            embedding=row.tolist(),
            properties={"group": (start + offset) % 25},
        )
        for offset, row in enumerate(rows)
    ]


def exact_ids(rows: dict[str, np.ndarray], query: np.ndarray, k: int) -> list[str]:
    ids = sorted(rows)
    scores = np.stack([rows[node_id] for node_id in ids]) @ (query / np.linalg.norm(query))
    return [ids[index] for index in np.argsort(-scores, kind="stable")[:k]]


def plan(path: Path, sql: str, parameters: list[object]) -> list[str]:
    with sqlite3.connect(path) as connection:
        return [row[3] for row in connection.execute(f"EXPLAIN QUERY PLAN {sql}", parameters)]


async def test_neighbours_of_and_counts_read_through_indexes(tmp_path: Path) -> None:
    store = store_at(tmp_path / "plans.db")
    await store.setup()
    await store.close()
    statements = [
        reads.links_statement(NAMESPACE, ["a", "b"], types, direction, kinds, 10)
        for direction in ("out", "in", "both")
        for types, kinds in ((None, None), (["NEXT"], ["Chunk"]))
    ]
    statements += [reads.count_statement(NAMESPACE, None), reads.count_statement(NAMESPACE, "Chunk")]
    pages = [reads.list_statement(NAMESPACE, "Chunk", where, 50, 0) for where in ({}, {"group": 3})]
    statements += pages
    for sql, parameters in statements:
        lines = plan(tmp_path / "plans.db", sql, parameters)
        assert not [line for line in lines if UNINDEXED_SCAN.search(line)], (sql, lines)
        assert any("INDEX" in line for line in lines), (sql, lines)
        # each seed's relationships found by seeking its id, not by walking the namespace's whole index range
        assert all("_id=?" in line for line in lines if "relationships_by_" in line), (sql, lines)
    for sql, parameters in pages:  # a page of a kind comes in order from its index: the kind is never sorted
        lines = plan(tmp_path / "plans.db", sql, parameters)
        assert any("nodes_newest_by_kind" in line for line in lines) and not any("TEMP B-TREE" in line for line in lines), lines


async def test_neighbours_of_orders_limits_and_filters_in_one_statement(tmp_path: Path) -> None:
    async with store_at(tmp_path / "links.db") as store:
        await store.upsert_nodes(
            [NodeRecord(id=node_id, namespace=NAMESPACE, kind="Chunk") for node_id in ("a", "b", "c", "d")]
            + [NodeRecord(id="e", namespace=NAMESPACE, kind="Entity")]
        )
        await store.upsert_relationships(
            [
                RelationshipRecord(namespace=NAMESPACE, type="NEXT", source_id="a", target_id="c"),
                RelationshipRecord(namespace=NAMESPACE, type="NEXT", source_id="a", target_id="b"),
                RelationshipRecord(namespace=NAMESPACE, type="NEXT", source_id="a", target_id="a"),
                RelationshipRecord(namespace=NAMESPACE, type="MENTIONS", source_id="a", target_id="e"),
                RelationshipRecord(namespace=NAMESPACE, type="NEXT", source_id="d", target_id="a"),
            ]
        )
        both = await store.neighbours_of(NAMESPACE, ["missing", "d", "a", "d"], limit=4)
        assert list(both) == ["d", "a"]
        assert [(link.relationship.type, link.node.id) for link in both["a"]] == [
            ("MENTIONS", "e"),
            ("NEXT", "a"),
            ("NEXT", "b"),
            ("NEXT", "c"),
        ]
        incoming = await store.neighbours_of(NAMESPACE, ["a", "b"], direction="in", relationship_types=["NEXT"])
        assert {node_id: [link.node.id for link in links] for node_id, links in incoming.items()} == {
            "a": ["a", "d"],
            "b": ["a"],
        }
        chunks_only = await store.neighbours_of(NAMESPACE, ["a"], direction="out", kinds=["Chunk"], limit=1)
        assert [link.node.id for link in chunks_only["a"]] == ["a"]
        assert all(link.node.embedding is None for link in both["a"])


@pytest.fixture
def small_index_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    """The approximate index from 40 vectors, so a test of a few hundred exercises it."""
    monkeypatch.setattr(vectors, "EXACT_BELOW", 40)


@pytest.mark.usefixtures("small_index_threshold")
async def test_vector_index_follows_another_writer_incrementally(tmp_path: Path) -> None:
    path = tmp_path / "vectors.db"
    rows = unit_rows(300, seed=1)
    async with store_at(path) as reader, store_at(path) as writer:
        await writer.upsert_nodes(chunks_of(rows))
        query = unit_rows(1, seed=2)[0]
        hits = await reader.vector_search(NAMESPACE, query.tolist(), kind="Chunk", k=5)
        known = {f"c{index:04d}": row for index, row in enumerate(rows)}
        assert [hit.node.id for hit in hits] == exact_ids(known, query, 5)
        assert all(hit.node.embedding is None for hit in hits)
        loaded = reader._vectors._kinds[(NAMESPACE, "Chunk")]
        assert loaded.index is not None

        # the writer (another process, as far as the reader can tell) adds the query itself, moves the best hit
        # away and deletes the second: the reader's next search sees all three, without reloading everything
        await writer.upsert_nodes([NodeRecord(id="exact", namespace=NAMESPACE, kind="Chunk", embedding=query.tolist())])
        await writer.upsert_nodes([NodeRecord(id=hits[0].node.id, namespace=NAMESPACE, kind="Chunk", embedding=(-query).tolist())])
        await writer.delete_nodes(NAMESPACE, [hits[1].node.id])
        known |= {"exact": query, hits[0].node.id: -query}
        del known[hits[1].node.id]
        again = await reader.vector_search(NAMESPACE, query.tolist(), kind="Chunk", k=5, include_embeddings=True)
        assert [hit.node.id for hit in again] == exact_ids(known, query, 5)
        assert again[0].node.id == "exact" and again[0].score == pytest.approx(1.0, abs=1e-5)
        assert again[0].node.embedding == pytest.approx(query.tolist())
        assert reader._vectors._kinds[(NAMESPACE, "Chunk")] is loaded
        assert len(loaded) == 300


@pytest.mark.usefixtures("small_index_threshold")
async def test_filtered_search_on_the_index_is_exact_among_the_allowed(tmp_path: Path) -> None:
    rows = unit_rows(500, seed=3)
    async with store_at(tmp_path / "filtered.db") as store:
        await store.upsert_nodes(chunks_of(rows))
        for seed in range(5):
            query = unit_rows(1, seed=10 + seed)[0]
            hits = await store.vector_search(NAMESPACE, query.tolist(), kind="Chunk", k=10, filters={"group": 7})
            allowed = {f"c{index:04d}": row for index, row in enumerate(rows) if index % 25 == 7}
            assert [hit.node.id for hit in hits] == exact_ids(allowed, query, 10)
            assert hits[0].score == pytest.approx(float(allowed[hits[0].node.id] @ query), abs=1e-5)


@pytest.mark.usefixtures("small_index_threshold")
async def test_a_reader_behind_the_pruned_change_log_reloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vectors, "CHANGE_LOG_KEEP", 50)
    path = tmp_path / "pruned.db"
    rows = unit_rows(400, seed=4)
    async with store_at(path) as reader, store_at(path) as writer:
        await writer.upsert_nodes(chunks_of(rows[:100]))
        query = unit_rows(1, seed=5)[0]
        await reader.vector_search(NAMESPACE, query.tolist(), kind="Chunk", k=3)
        stale = reader._vectors._kinds[(NAMESPACE, "Chunk")]
        for start in range(100, 400, 100):
            await writer.upsert_nodes(chunks_of(rows[start : start + 100], start))
        with sqlite3.connect(path) as connection:
            assert connection.execute("SELECT min(seq) FROM vector_changes").fetchone()[0] > stale.seq + 1
        hits = await reader.vector_search(NAMESPACE, query.tolist(), kind="Chunk", k=3)
        known = {f"c{index:04d}": row for index, row in enumerate(rows)}
        assert [hit.node.id for hit in hits] == exact_ids(known, query, 3)
        assert reader._vectors._kinds[(NAMESPACE, "Chunk")] is not stale


@pytest.mark.usefixtures("small_index_threshold")
async def test_a_new_process_loads_the_saved_index_and_catches_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "saved.db"
    rows = unit_rows(1200, seed=6)
    query = unit_rows(1, seed=7)[0]
    loads: list[bool] = []
    load = IndexFiles.load

    def counted(self: IndexFiles, *args: object) -> object:
        loaded = load(self, *args)  # type: ignore[arg-type]
        loads.append(loaded is not None)
        return loaded

    monkeypatch.setattr(IndexFiles, "load", counted)
    async with store_at(path) as first:
        await first.upsert_nodes(chunks_of(rows))
        await first.vector_search(NAMESPACE, query.tolist(), kind="Chunk", k=3)
        await first.upsert_nodes([NodeRecord(id="late", namespace=NAMESPACE, kind="Chunk", embedding=query.tolist())])
    assert len(list((tmp_path / "saved.db.vectors").glob("*.usearch"))) == 1
    async with store_at(path) as second:
        hits = await second.vector_search(NAMESPACE, query.tolist(), kind="Chunk", k=3)
    known = {f"c{index:04d}": row for index, row in enumerate(rows)} | {"late": query}
    assert [hit.node.id for hit in hits] == exact_ids(known, query, 3)
    assert loads == [False, True]

    # a database made anew beside the old files has another token: it builds its own index
    path.unlink()
    async with store_at(path) as third:
        await third.upsert_nodes(chunks_of(-rows))
        hits = await third.vector_search(NAMESPACE, query.tolist(), kind="Chunk", k=3)
    assert [hit.node.id for hit in hits] == exact_ids({f"c{index:04d}": -row for index, row in enumerate(rows)}, query, 3)
    assert loads == [False, True, False]
