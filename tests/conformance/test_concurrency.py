"""Concurrent writers on overlapping ids: no duplicates, no lost relationships."""

from __future__ import annotations

import asyncio

import pytest

from mnemoflow.errors import ConflictError, InvalidQueryError
from mnemoflow.memory.protocol import GraphStore
from tests.conformance.helpers import chunk, link


async def test_concurrent_overlapping_upserts(store: GraphStore, namespace: str) -> None:
    ids = [f"n{index:03d}" for index in range(60)]

    async def writer(worker: int) -> None:
        window = ids[worker * 4 : worker * 4 + 20]
        await store.upsert_nodes([chunk(namespace, node_id, f"written by {worker}") for node_id in window])
        await store.upsert_relationships([link(namespace, left, right) for left, right in zip(window, window[1:], strict=False)])

    await asyncio.gather(*(writer(worker) for worker in range(11)))

    assert await store.count_nodes(namespace) == 60
    assert await store.count_relationships(namespace) == 59
    walk = await store.neighbourhood(namespace, ids[0], depth=10, direction="out")
    assert [node.id for node in walk.nodes] == ids[:11]


async def test_of_writers_racing_to_create_one_new_id_exactly_one_wins(store: GraphStore, namespace: str) -> None:
    async def writer(worker: int) -> str:
        claim = chunk(namespace, "version-2", f"claimed by {worker}")
        try:
            await store.upsert_nodes([claim, chunk(namespace, f"work-of-{worker}")], new=["version-2"])
        except ConflictError:
            return "refused"
        return "won"

    outcomes = await asyncio.gather(*(writer(worker) for worker in range(8)))
    assert sorted(outcomes) == ["refused"] * 7 + ["won"]
    [winner] = [worker for worker, outcome in enumerate(outcomes) if outcome == "won"]
    [claim] = await store.get_nodes(namespace, ["version-2"])
    assert claim is not None and claim.text == f"claimed by {winner}" and claim.created_at is not None
    assert await store.count_nodes(namespace) == 2  # the losers wrote nothing, not even their other records


async def test_new_ids_must_be_new_and_in_the_batch(store: GraphStore, namespace: str) -> None:
    await store.upsert_nodes([chunk(namespace, "old")])
    with pytest.raises(ConflictError, match="'old'"):
        await store.upsert_nodes([chunk(namespace, "old", "changed"), chunk(namespace, "fresh")], new=["old"])
    assert [node.id for node in await store.get_nodes(namespace, ["old", "fresh"]) if node] == ["old"]
    with pytest.raises(InvalidQueryError, match="'elsewhere'"):
        await store.upsert_nodes([chunk(namespace, "fresh")], new=["elsewhere"])
