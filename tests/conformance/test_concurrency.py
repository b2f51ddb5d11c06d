"""Concurrent writers on overlapping ids: no duplicates, no lost relationships."""

from __future__ import annotations

import asyncio

from memory.protocol import GraphStore
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
