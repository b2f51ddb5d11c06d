"""Deleting a node removes its relationships; counts follow."""

from __future__ import annotations

from mnemoflow.memory.protocol import GraphStore
from tests.conformance.helpers import chunk, link
from tests.conftest import EMBEDDER


async def test_delete_removes_node_and_its_relationships(store: GraphStore, namespace: str) -> None:
    await store.upsert_nodes([chunk(namespace, name) for name in "abc"])
    await store.upsert_relationships([link(namespace, "a", "b"), link(namespace, "b", "c"), link(namespace, "c", "a")])
    assert await store.delete_nodes(namespace, ["b", "missing"]) == 1
    assert await store.get_nodes(namespace, ["b"]) == [None]
    assert await store.count_nodes(namespace) == 2
    assert await store.count_relationships(namespace) == 1
    remaining = await store.neighbourhood(namespace, "a", depth=2)
    assert [node.id for node in remaining.nodes] == ["a", "c"]


async def test_deleted_nodes_leave_search(store: GraphStore, namespace: str) -> None:
    await store.upsert_nodes([chunk(namespace, "a", "lighthouse keeper"), chunk(namespace, "b", "lighthouse lamp")])
    await store.vector_search(namespace, EMBEDDER.embed_one("lighthouse"), kind="Chunk")  # warm any cache
    await store.delete_nodes(namespace, ["a"])
    vector_hits = await store.vector_search(namespace, EMBEDDER.embed_one("lighthouse keeper"), kind="Chunk")
    keyword_hits = await store.keyword_search(namespace, "lighthouse")
    assert [hit.node.id for hit in vector_hits] == ["b"]
    assert [hit.node.id for hit in keyword_hits] == ["b"]


async def test_counts_by_kind_and_type(store: GraphStore, namespace: str) -> None:
    await store.upsert_nodes([chunk(namespace, name) for name in "abc"])
    await store.upsert_relationships([link(namespace, "a", "b"), link(namespace, "b", "c", "PART_OF")])
    assert await store.count_nodes(namespace, "Chunk") == 3
    assert await store.count_nodes(namespace, "Document") == 0
    assert await store.count_relationships(namespace, "NEXT") == 1
    assert await store.count_relationships(namespace, "PART_OF") == 1
