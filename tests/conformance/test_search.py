"""Vector and keyword search: ranking, k, filters, kinds, and queries that carry syntax."""

from __future__ import annotations

import pytest

from mnemoflow.memory import NodeRecord
from mnemoflow.memory.protocol import GraphStore
from tests.conformance.helpers import chunk
from tests.conftest import EMBEDDER

PASSAGES = {
    "whale": "the white whale rose from the grey sea",
    "harpoon": "the harpooner sharpened his harpoon on the deck",
    "both": "the whale was struck by a harpoon at dawn",
    "inn": "an inn by the harbour served chowder",
}


async def load(store: GraphStore, namespace: str) -> None:
    await store.upsert_nodes([chunk(namespace, key, text, topic=key, ship=key != "inn") for key, text in PASSAGES.items()])


async def test_vector_search_ranks_the_nearest_first(store: GraphStore, namespace: str) -> None:
    await load(store, namespace)
    hits = await store.vector_search(namespace, EMBEDDER.embed_one(PASSAGES["harpoon"]), kind="Chunk", k=4)
    assert hits[0].node.id == "harpoon"
    assert hits[0].score == pytest.approx(1.0, abs=1e-3)
    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)
    assert len(hits) == 4


async def test_vector_search_respects_k_and_filters(store: GraphStore, namespace: str) -> None:
    await load(store, namespace)
    query = EMBEDDER.embed_one("whale")
    assert len(await store.vector_search(namespace, query, kind="Chunk", k=2)) == 2
    filtered = await store.vector_search(namespace, query, kind="Chunk", k=4, filters={"ship": False})
    assert [hit.node.id for hit in filtered] == ["inn"]
    by_topic = await store.vector_search(namespace, query, kind="Chunk", k=4, filters={"topic": "both", "ship": True})
    assert [hit.node.id for hit in by_topic] == ["both"]


async def test_vector_search_finds_a_namespace_drowned_by_others(store: GraphStore, namespace: str) -> None:
    """The index is shared across namespaces; a small namespace among many near vectors is still found."""
    crowd = [chunk(f"{namespace}-crowd", f"n{i}", f"the white whale number {i}") for i in range(300)]
    await store.upsert_nodes(crowd)
    await store.upsert_nodes([chunk(namespace, "far", "chowder recipes from the harbour inn")])
    hits = await store.vector_search(namespace, EMBEDDER.embed_one("the white whale"), kind="Chunk", k=3)
    assert [hit.node.id for hit in hits] == ["far"]


async def test_keyword_search_ranks_more_matching_words_first(store: GraphStore, namespace: str) -> None:
    await load(store, namespace)
    hits = await store.keyword_search(namespace, "whale harpoon", k=10)
    assert hits[0].node.id == "both"
    assert {hit.node.id for hit in hits} == {"both", "whale", "harpoon"}
    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)


async def test_keyword_search_kinds_and_k(store: GraphStore, namespace: str) -> None:
    await load(store, namespace)
    await store.upsert_nodes([NodeRecord(id="doc", namespace=namespace, kind="Document", text="a whale of a book")])
    assert [hit.node.id for hit in await store.keyword_search(namespace, "whale", kinds=["Document"])] == ["doc"]
    assert len(await store.keyword_search(namespace, "whale", k=1)) == 1
    assert await store.keyword_search(namespace, "whale", kinds=[]) == []


@pytest.mark.parametrize("query", ['whale" OR "*', "whale AND (harpoon", "title:whale~2", "NOT whale", "-- ; DROP"])
async def test_keyword_queries_are_plain_words(store: GraphStore, namespace: str, query: str) -> None:
    await load(store, namespace)
    hits = await store.keyword_search(namespace, query)
    assert all(hit.node.namespace == namespace for hit in hits)
    if "whale" in query:
        assert "whale" in {hit.node.id for hit in hits}


async def test_searches_on_empty_input(store: GraphStore, namespace: str) -> None:
    assert await store.keyword_search(namespace, "   ...   ") == []
    assert await store.vector_search(namespace, EMBEDDER.embed_one("x"), kind="Chunk") == []
