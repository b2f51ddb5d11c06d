"""Expired nodes: ``delete_expired`` removes every node whose ``expires_at`` has passed, in every namespace."""

from __future__ import annotations

import math

import pytest

from mnemoflow.errors import InvalidQueryError
from mnemoflow.memory import NodeRecord
from mnemoflow.memory.protocol import GraphStore
from tests.conformance.helpers import chunk, link
from tests.conftest import EMBEDDER

NOW = 1_750_000_000.5


async def test_expired_nodes_go_with_their_relationships(store: GraphStore, namespace: str) -> None:
    other = f"{namespace}-other"
    await store.upsert_nodes(
        [
            chunk(namespace, "old", "lighthouse keeper", expires_at=int(NOW) - 60),
            chunk(namespace, "now", "lighthouse lamp", expires_at=NOW),  # expires_at == now: expired
            chunk(namespace, "later", "lighthouse stairs", expires_at=NOW + 0.25),
            chunk(namespace, "forever", "lighthouse door"),
            chunk(namespace, "odd", "lighthouse cat", expires_at="0", nested={"expires_at": 0}),
            chunk(namespace, "flag", "lighthouse bell", expires_at=True),
            chunk(other, "old", "lighthouse keeper", expires_at=0),
            chunk(other, "kept", "lighthouse lamp", expires_at=NOW + 3600),
            NodeRecord(id="doc", namespace=other, kind="Document", text="a lighthouse log", properties={"expires_at": 1.5}),
        ]
    )
    await store.upsert_relationships(
        [
            link(namespace, "old", "later"),
            link(namespace, "later", "now"),
            link(namespace, "forever", "later"),
            link(namespace, "later", "forever", "PART_OF"),
            link(other, "kept", "old"),
            link(other, "kept", "doc", "PART_OF"),
        ]
    )
    await store.vector_search(namespace, EMBEDDER.embed_one("lighthouse"), kind="Chunk")  # warm any cache
    await store.vector_search(other, EMBEDDER.embed_one("lighthouse"), kind="Chunk")

    assert await store.delete_expired(NOW) == 4
    assert await store.delete_expired(NOW) == 0

    found = await store.get_nodes(namespace, ["old", "now", "later", "forever", "odd", "flag"])
    assert [node and node.id for node in found] == [None, None, "later", "forever", "odd", "flag"]
    assert [node and node.id for node in await store.get_nodes(other, ["old", "doc", "kept"])] == [None, None, "kept"]
    assert await store.count_nodes(namespace) == 4
    assert await store.count_nodes(other) == 1
    assert await store.count_relationships(namespace) == 2
    assert await store.count_relationships(other) == 0
    around = await store.neighbourhood(namespace, "later", depth=2)
    assert [node.id for node in around.nodes] == ["later", "forever"]

    vector_hits = await store.vector_search(namespace, EMBEDDER.embed_one("lighthouse keeper"), kind="Chunk")
    assert {hit.node.id for hit in vector_hits} == {"later", "forever", "odd", "flag"}
    assert {hit.node.id for hit in await store.keyword_search(namespace, "lighthouse")} == {"later", "forever", "odd", "flag"}
    assert [hit.node.id for hit in await store.vector_search(other, EMBEDDER.embed_one("lighthouse"), kind="Chunk")] == ["kept"]
    assert [hit.node.id for hit in await store.keyword_search(other, "lighthouse")] == ["kept"]

    assert await store.delete_expired(NOW + 0.25) == 1
    assert await store.get_nodes(namespace, ["later"]) == [None]
    assert await store.count_relationships(namespace) == 0


async def test_nothing_to_expire(store: GraphStore, namespace: str) -> None:
    assert await store.delete_expired(NOW) == 0
    await store.upsert_nodes([chunk(namespace, "a"), chunk(namespace, "b", expires_at=NOW + 1)])
    assert await store.delete_expired(NOW) == 0
    assert await store.count_nodes(namespace) == 2


async def test_an_upsert_without_expires_at_makes_a_node_permanent(store: GraphStore, namespace: str) -> None:
    await store.upsert_nodes([chunk(namespace, "a", expires_at=0)])
    await store.upsert_nodes([chunk(namespace, "a")])
    assert await store.delete_expired(NOW) == 0
    assert await store.count_nodes(namespace) == 1


@pytest.mark.parametrize("now", [math.nan, math.inf, True, "1750000000"])
async def test_now_must_be_a_finite_number(store: GraphStore, now: object) -> None:
    with pytest.raises(InvalidQueryError, match="now="):
        await store.delete_expired(now)  # type: ignore[arg-type]
