"""MnemoflowStore, LangGraph's BaseStore on the GraphStore contract, on SQLite and Neo4j.

The expectations are adapted from LangGraph's own store tests (langchain-ai/langgraph):
``libs/checkpoint/tests/test_store.py`` (InMemoryStore: list_namespaces, invalid namespaces, vector search with
filters, pagination, embedding by field path, index=False), ``libs/checkpoint-postgres/tests/test_async_store.py``
(abatch order, batch get/put/search/list ops, sync calls from threads and refused on the loop, TTL and
omit-expired reads) and ``libs/checkpoint-sqlite/tests/test_async_store.py`` / ``test_store.py`` (basic ops, list
namespaces with wildcards, search items with filters, scores as cosine, namespace segment boundaries, literal
wildcard characters in a search prefix). Where InMemoryStore is the reference, the same ops run on it and the
results are compared. Vector search uses the deterministic hashing embedder, so cosines are known exactly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.config import get_store
from langgraph.graph import END, START, StateGraph
from langgraph.store.base import GetOp, InvalidNamespaceError, Item, ListNamespacesOp, PutOp, SearchOp
from langgraph.store.memory import InMemoryStore
from typing_extensions import TypedDict

from mnemoflow.errors import ConfigError, InvalidQueryError, InvalidRecordError
from mnemoflow.errors import InvalidNamespaceError as StoreNamespaceError
from mnemoflow.flows.server.app import create_app
from mnemoflow.memory.langgraph_items import KIND, item_id
from mnemoflow.memory.langgraph_store import MnemoflowStore, open_langgraph_store
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import NodeRecord
from tests.conftest import settings_of
from tests.support.embedders import CountingEmbedder
from tests.support.web_server import serve

NS = "lg-test"
Make = Callable[..., MnemoflowStore]


@pytest.fixture
async def make(store: GraphStore) -> AsyncIterator[Make]:
    """Builds MnemoflowStores on the test store (namespace ``NS`` and a counting embedder unless told otherwise)."""
    made: list[MnemoflowStore] = []

    def build(**options: Any) -> MnemoflowStore:
        options.setdefault("namespace", NS)
        options.setdefault("embedder", CountingEmbedder())
        made.append(MnemoflowStore(store, **options))
        return made[-1]

    yield build
    for built in made:
        if built._task is not None:
            built._task.cancel()


async def record_of(store: GraphStore, namespace: tuple[str, ...], key: str, tenant: str = NS) -> NodeRecord | None:
    [record] = await store.get_nodes(tenant, [item_id(namespace, key)])
    return record


def cosine(left: str, right: str) -> float:
    embed = CountingEmbedder().inner.embed_one
    return float(np.dot(embed(left), embed(right)))


async def test_put_get_update_delete_round_trip(store: GraphStore, make: Make) -> None:
    lg = make(index={"fields": ["title"]})
    namespace = ("users", "u1", "documents")
    await lg.aput(namespace, "doc1", {"title": "Test Document", "content": "Hello"})
    item = await lg.aget(namespace, "doc1")
    assert item is not None and (item.namespace, item.key) == (namespace, "doc1")
    assert item.value == {"title": "Test Document", "content": "Hello"}
    record = await record_of(store, namespace, "doc1")
    assert record is not None and record.kind == KIND and record.text == "Test Document"
    assert record.properties == {
        "path": ["users", "u1", "documents"], "ns_0": "users", "ns_1": "u1", "ns_2": "documents", "ns_depth": 3,
        "key": "doc1", "value": {"title": "Test Document", "content": "Hello"},
        "v_title": "Test Document", "v_content": "Hello",  # what a filter's equalities test in the store's query
    }
    assert record.embedding == pytest.approx(CountingEmbedder().inner.embed_one("Test Document"))
    assert (item.created_at, item.updated_at) == (record.created_at, record.updated_at)

    await asyncio.sleep(0.01)
    await lg.aput(namespace, "doc1", {"title": "Updated", "content": "Hello again"})
    updated = await lg.aget(namespace, "doc1")
    assert updated is not None and updated.value == {"title": "Updated", "content": "Hello again"}
    assert updated.created_at == item.created_at and updated.updated_at > item.updated_at
    assert await lg.aget(("users", "u1", "other"), "doc1") is None
    assert await lg.aget(("users", "u1"), "documents/doc1") is None  # ids never collide across the split
    await lg.adelete(namespace, "doc1")
    assert await lg.aget(namespace, "doc1") is None and await record_of(store, namespace, "doc1") is None


async def test_abatch_reads_before_puts_results_in_input_order_one_write_per_batch(
    store: GraphStore, make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    embedder = CountingEmbedder()
    lg = make(embedder=embedder, index={"fields": ["data"]})
    await lg.aput(("test", "foo"), "key1", {"data": "value1"})
    await lg.aput(("test", "bar"), "key2", {"data": "value2"})
    writes: list[tuple[str, int]] = []
    for method in ("upsert_nodes", "delete_nodes"):
        original = getattr(store, method)

        async def counted(*args: Any, _original: Any = original, _method: str = method, **kwargs: Any) -> Any:
            writes.append((_method, len(args[-1])))
            return await _original(*args, **kwargs)

        monkeypatch.setattr(store, method, counted)
    embedder.calls, embedder.texts = 0, []
    results = await lg.abatch(
        [
            GetOp(("test", "foo"), "key1"),
            PutOp(("test", "bar"), "key2", {"data": "first"}),
            SearchOp(("test",), filter={"data": "value1"}),
            ListNamespacesOp(),
            PutOp(("test", "bar"), "key2", {"data": "last"}),
            PutOp(("test", "foo"), "key1", None),
            PutOp(("test",), "key3", {"data": "value3"}),
            GetOp(("test",), "key3"),
        ]
    )
    assert isinstance(results[0], Item) and results[0].value == {"data": "value1"}
    assert results[1] is None and results[4] is None and results[5] is None and results[6] is None
    assert [item.key for item in results[2]] == ["key1"]  # type: ignore[union-attr]
    assert results[3] == [("test", "bar"), ("test", "foo")]
    assert results[7] is None  # the batch's reads see the store before its puts
    assert writes == [("delete_nodes", 1), ("upsert_nodes", 2)]
    assert (embedder.calls, embedder.texts) == (1, ["last", "value3"])
    assert (await lg.aget(("test", "bar"), "key2")).value == {"data": "last"}  # type: ignore[union-attr]
    assert await lg.aget(("test", "foo"), "key1") is None

    writes.clear()
    await asyncio.gather(*(lg.aput(("test", "many"), f"k{i}", {"data": str(i)}) for i in range(5)))
    assert writes == [("upsert_nodes", 5)]  # concurrent calls of one tick are one batch


FILTER_DOCS = [
    (("shop", "fruit"), "doc1", {"text": "red apple", "color": "red", "score": 4.5, "tags": ["sweet"], "meta": {"origin": "north"}}),
    (("shop", "cars"), "doc2", {"text": "red car", "color": "red", "score": 3.0, "tags": ["fast"], "meta": {"origin": "south"}}),
    (("shop", "fruit"), "doc3", {"text": "green apple", "color": "green", "score": 4.0, "tags": ["sour"]}),
    (("shop", "cars", "old"), "doc4", {"text": "blue car", "color": "blue", "score": 3.5, "tags": ["fast"]}),
    (("shopping",), "doc5", {"text": "blue bag", "color": "blue", "score": 5.0}),
]
FILTERS: list[dict[str, Any]] = [
    {"color": "red"},
    {"color": {"$eq": "blue"}},
    {"color": {"$ne": "red"}},
    {"score": {"$gt": 3.5}},
    {"score": {"$gte": 3.5}},
    {"score": {"$lt": 4.0}},
    {"score": {"$lte": 4.0}},
    {"score": {"$gte": 3.0, "$lt": 4.5}, "color": "red"},
    {"tags": ["fast"]},
    {"meta": {"origin": "north"}},
]


@pytest.mark.parametrize("query", [None, "apple"])
async def test_search_prefix_and_filters_match_in_memory_store(make: Make, query: str | None) -> None:
    lg = make(index={"fields": ["text"]})
    reference = InMemoryStore()
    for namespace, key, value in FILTER_DOCS:
        await lg.aput(namespace, key, value)
        await reference.aput(namespace, key, value)
    for prefix in [("shop",), ()] if query else [("shop",), ("shop", "cars"), ("shopping",), ()]:
        for filter in [None, *FILTERS]:
            ours = await lg.asearch(prefix, filter=filter, query=query, limit=20)
            theirs = await reference.asearch(prefix, filter=filter, limit=20)
            assert sorted(item.key for item in ours) == sorted(item.key for item in theirs), (prefix, filter)
    assert [item.key for item in await lg.asearch(("shop",), filter={"missing": {"$gt": 1}})] == []
    with pytest.raises(InvalidQueryError, match=r"operator '\$in' is not supported"):
        await lg.asearch(("shop",), filter={"color": {"$in": ["red"]}})


async def test_filter_equalities_run_in_the_store_and_compare_as_json(store: GraphStore, make: Make) -> None:
    lg = make(index={"fields": ["text"]})
    long_key = "k" * 62  # too long for a v_<key> property: filtered in Python only
    # the matches are sparse: the store's query must find them past the first pages (one batch: one write)
    await lg.abatch(
        [PutOp(("sparse",), f"doc{i:03}", {"text": f"doc {i}", "kind": "hit" if i % 40 == 0 else "miss", "n": i}) for i in range(120)]
    )
    await lg.aput(("odd",), "flag", {"flag": True, "one": 1.0, "my-key": "x", long_key: "y"})
    keys = [item.key for item in await lg.asearch(("sparse",), filter={"kind": "hit"}, limit=2)]
    assert keys == ["doc080", "doc040"]
    assert [item.key for item in await lg.asearch(("sparse",), filter={"kind": {"$eq": "hit"}, "n": 0})] == ["doc000"]
    record = await record_of(store, ("sparse",), "doc000")
    assert record is not None and (record.properties["v_kind"], record.properties["v_n"]) == ("hit", 0)
    odd = await record_of(store, ("odd",), "flag")
    assert odd is not None and set(odd.properties) & {"v_flag", "v_one", "v_my-key", f"v_{long_key}"} == {"v_one"}
    for matching in ({"one": 1}, {"my-key": "x"}, {long_key: "y"}, {"flag": True}, {"flag": {"$ne": 1}}):
        assert [item.key for item in await lg.asearch(("odd",), filter=matching)] == ["flag"], matching
    # JSON's equality, as the stores compare: true is not 1 (InMemoryStore, in Python, says it is)
    for refused in ({"flag": 1}, {"one": True}, {"flag": {"$eq": 1}}):
        assert await lg.asearch(("odd",), filter=refused) == [], refused


async def test_search_without_query_is_newest_first_and_pages(make: Make) -> None:
    lg = make(index={"fields": ["text"]})
    for i in range(5):
        await lg.aput(("pages", str(i % 2)), f"doc{i}", {"text": f"document {i}"})
    await lg.aput(("pages", "*"), "star", {"text": "literal star"})
    keys = [item.key for item in await lg.asearch(("pages",), limit=10)]
    assert keys == ["star", "doc4", "doc3", "doc2", "doc1", "doc0"]
    first, second = await lg.asearch(("pages",), limit=2), await lg.asearch(("pages",), limit=2, offset=2)
    assert [i.key for i in first] + [i.key for i in second] == keys[:4]
    assert all(item.score is None for item in first)
    assert [item.key for item in await lg.asearch(("pages", "*"))] == ["star"]  # a search prefix has no wildcards
    assert await lg.asearch(("page",)) == []  # labels match whole


async def test_query_search_ranks_by_cosine_with_unindexed_items_last(store: GraphStore, make: Make) -> None:
    lg = make(index={"fields": ["key0", "key1", "key3"]})
    await lg.aput(("test",), "doc1", {"key1": "xxx", "key2": "yyy", "key3": "zzz"})
    await lg.aput(("test",), "doc2", {"key0": "uuu", "key1": "vvv", "key2": "www", "key3": "xxx"})
    await lg.aput(("test",), "doc3", {"key0": "aaa", "key1": "bbb", "key3": "ddd"}, index=["key0"])
    await lg.aput(("test",), "doc4", {"key0": "hhh", "key1": "iii"}, index=False)
    record = await record_of(store, ("test",), "doc2")
    assert record is not None and record.text == "uuu\nvvv\nxxx"
    assert (await record_of(store, ("test",), "doc3")).text == "aaa"  # type: ignore[union-attr]
    unindexed = await record_of(store, ("test",), "doc4")
    assert unindexed is not None and unindexed.embedding is None and unindexed.text == '{"key0": "hhh", "key1": "iii"}'

    texts = {"doc1": "xxx\nzzz", "doc2": "uuu\nvvv\nxxx", "doc3": "aaa"}
    expected = sorted(texts, key=lambda key: -cosine("xxx", texts[key])) + ["doc4"]
    assert expected[0] == "doc1" and cosine("xxx", texts["doc1"]) > cosine("xxx", texts["doc2"]) > 0.3
    results = await lg.asearch(("test",), query="xxx")
    assert [item.key for item in results] == expected
    assert [item.score for item in results[:3]] == [pytest.approx(cosine("xxx", texts[key])) for key in expected[:3]]
    assert results[3].score is None  # as InMemoryStore: items without a vector follow, unscored
    assert [item.key for item in await lg.asearch(("test",), query="aaa", limit=1)] == ["doc3"]
    paged = [item.key for offset in (0, 2) for item in await lg.asearch(("test",), query="xxx", limit=2, offset=offset)]
    assert paged == expected
    filtered = await lg.asearch(("test",), query="xxx", filter={"key2": "www"})
    assert [(item.key, item.score) for item in filtered] == [("doc2", pytest.approx(cosine("xxx", "uuu\nvvv\nxxx")))]


async def test_nested_field_paths_are_embedded_as_one_text(store: GraphStore, make: Make) -> None:
    lg = make(index={"fields": ["info.title", "items[*].text", "items[-1].id"]})
    value = {"info": {"title": "salt road"}, "items": [{"text": "caravans", "id": 1}, {"text": "river", "id": 2}]}
    await lg.aput(("nested",), "doc", value)
    record = await record_of(store, ("nested",), "doc")
    assert record is not None and record.text == "salt road\ncaravans\nriver\n2"
    assert record.embedding == pytest.approx(CountingEmbedder().inner.embed_one("salt road\ncaravans\nriver\n2"))


async def test_without_an_embedder_a_query_lists_as_in_memory_store(store: GraphStore, make: Make) -> None:
    lg = make(embedder=None)
    await lg.aput(("plain",), "a", {"text": "anything"}, index=["text"])
    assert (await record_of(store, ("plain",), "a")).embedding is None  # type: ignore[union-attr]
    results = await lg.asearch(("plain",), query="anything")
    assert [(item.key, item.score) for item in results] == [("a", None)]


LIST_NAMESPACES = [
    ("a", "b", "c"), ("a", "b", "d", "e"), ("a", "b", "d", "i"), ("a", "b", "f"), ("a", "c", "f"), ("b", "a", "f"),
    ("users", "123"), ("users", "456", "settings"), ("admin", "users", "789"),
]
LIST_QUERIES: list[dict[str, Any]] = [
    {}, {"prefix": ("a", "b")}, {"suffix": ("f",)}, {"prefix": ("a",), "suffix": ("f",)},
    {"prefix": ("a", "b"), "max_depth": 3}, {"prefix": ("a", "b"), "limit": 2}, {"prefix": ("a", "b"), "offset": 2},
    {"prefix": ("a", "*", "f")}, {"suffix": ("*", "f")}, {"prefix": ("nonexistent",)}, {"prefix": ("users", "123")},
    {"prefix": ("*", "users"), "suffix": ("*", "settings")}, {"max_depth": 2}, {"max_depth": 1, "limit": 2, "offset": 1},
]


async def test_list_namespaces_matches_in_memory_store(make: Make) -> None:
    lg = make()
    reference = InMemoryStore()
    for i, namespace in enumerate(LIST_NAMESPACES):
        await lg.aput(namespace, f"id_{i}", {"data": f"value_{i:02d}"})
        await lg.aput(namespace, f"again_{i}", {"data": "a second item in the namespace"})
        reference.put(namespace, f"id_{i}", {"data": f"value_{i:02d}"})
    for query in LIST_QUERIES:
        assert await lg.alist_namespaces(**query) == reference.list_namespaces(**query), query
    assert await lg.alist_namespaces(prefix=("a", "b"), limit=2) == [("a", "b", "c"), ("a", "b", "d", "e")]


async def test_ttl_expiry_hides_items_and_reads_refresh_it(store: GraphStore, make: Make) -> None:
    lg = make(index={"fields": ["text"]}, ttl={"default_ttl": 10, "refresh_on_read": True})
    before = time.time()
    await lg.aput(("ttl",), "default", {"text": "default ttl"})
    await lg.aput(("ttl",), "short", {"text": "short ttl"}, ttl=1)
    await lg.aput(("ttl",), "forever", {"text": "no ttl"}, ttl=None)
    record = await record_of(store, ("ttl",), "default")
    assert record is not None and record.properties["ttl_minutes"] == 10
    assert before + 600 <= record.properties["expires_at"] <= time.time() + 600
    assert "expires_at" not in (await record_of(store, ("ttl",), "forever")).properties  # type: ignore[union-attr]

    await set_expiry_in(store, ("ttl",), "short", time.time() - 1)  # expired, not yet swept
    assert await lg.aget(("ttl",), "short") is None
    assert "short" not in [item.key for item in await lg.asearch(("ttl",))]
    assert "short" not in [item.key for item in await lg.asearch(("ttl",), query="short ttl")]
    await lg.aput(("gone",), "only", {"text": "x"}, ttl=1)
    await set_expiry_in(store, ("gone",), "only", time.time() - 1)
    assert ("gone",) not in await lg.alist_namespaces()

    soon = time.time() + 5
    await set_expiry_in(store, ("ttl",), "default", soon)
    assert await lg.aget(("ttl",), "default", refresh_ttl=False) is not None
    assert (await record_of(store, ("ttl",), "default")).properties["expires_at"] == soon  # type: ignore[union-attr]
    assert await lg.aget(("ttl",), "default") is not None
    refreshed = await record_of(store, ("ttl",), "default")
    assert refreshed is not None and refreshed.properties["expires_at"] >= before + 600
    assert refreshed.embedding is not None  # the refresh keeps the vector
    await set_expiry_in(store, ("ttl",), "default", soon)
    await lg.asearch(("ttl",), query="default ttl", limit=1)
    assert (await record_of(store, ("ttl",), "default")).properties["expires_at"] >= before + 600  # type: ignore[union-attr]

    assert await lg.sweep_ttl() == 2
    assert await record_of(store, ("ttl",), "short") is None


async def set_expiry_in(store: GraphStore, namespace: tuple[str, ...], key: str, when: float) -> None:
    current = await record_of(store, namespace, key)
    assert current is not None
    await store.upsert_nodes([current.model_copy(update={"properties": {**current.properties, "expires_at": when}})])


async def test_refresh_on_read_off_keeps_the_expiry(store: GraphStore, make: Make) -> None:
    lg = make(ttl={"default_ttl": 10, "refresh_on_read": False})
    await lg.aput(("ttl",), "k", {"text": "t"})
    soon = time.time() + 5
    await set_expiry_in(store, ("ttl",), "k", soon)
    assert await lg.aget(("ttl",), "k") is not None and await lg.asearch(("ttl",)) != []
    assert (await record_of(store, ("ttl",), "k")).properties["expires_at"] == soon  # type: ignore[union-attr]


async def test_invalid_namespaces_and_inputs(make: Make) -> None:
    lg = make()
    doc = {"foo": "bar"}
    for namespace in [(), ("the", "thing.about"), ("some", "fun", ""), ("langgraph", "foo"), ("a", 1)]:
        with pytest.raises(InvalidNamespaceError):
            await lg.aput(namespace, "foo", doc)  # type: ignore[arg-type]
    with pytest.raises(InvalidNamespaceError):
        await lg.asearch(("a.b",))
    with pytest.raises(InvalidNamespaceError):
        await lg.alist_namespaces(prefix=("a.b",))
    with pytest.raises(InvalidNamespaceError):
        await lg.abatch([GetOp(("x", "a.b"), "k")])
    await lg.abatch([PutOp(("langgraph", "foo"), "bar", doc)])  # past the public put, as LangGraph's stores allow
    assert (await lg.aget(("langgraph", "foo"), "bar")).value == doc  # type: ignore[union-attr]
    with pytest.raises(InvalidRecordError, match=r"put 'k' in \('x',\): value"):
        await lg.aput(("x",), "k", {"bad": {1, 2}})
    with pytest.raises(InvalidQueryError, match="ttl=-1"):
        await lg.aput(("x",), "k", doc, ttl=-1)
    with pytest.raises(StoreNamespaceError):
        make(namespace=" ")
    with pytest.raises(ConfigError, match="'embed'"):
        make(index={"embed": lambda texts: [], "fields": ["text"]})
    with pytest.raises(ConfigError, match="dims=1536 differs from the embedder's dimension 384"):
        make(index={"dims": 1536})
    with pytest.raises(ConfigError, match="needs an embedder"):
        make(embedder=None, index={"fields": ["text"]})


async def test_sync_methods_work_from_threads_and_are_refused_on_the_loop(make: Make) -> None:
    lg = make()
    with pytest.raises(asyncio.InvalidStateError):
        lg.get(("foo",), "bar")
    with pytest.raises(asyncio.InvalidStateError):
        lg.put(("foo",), "bar", {"v": 1})
    with ThreadPoolExecutor(max_workers=2) as pool:
        await asyncio.wrap_future(pool.submit(lg.put, ("foo", "bar"), "baz", {"val": "baz"}))
        item = await asyncio.wrap_future(pool.submit(lg.get, ("foo", "bar"), "baz"))
        assert item is not None and item.value == {"val": "baz"}
        found = await asyncio.wrap_future(pool.submit(lambda: lg.search(("foo",))))
        assert [i.key for i in found] == ["baz"]
        assert await asyncio.wrap_future(pool.submit(lambda: lg.list_namespaces())) == [("foo", "bar")]
        await asyncio.wrap_future(pool.submit(lg.delete, ("foo", "bar"), "baz"))
    assert await lg.aget(("foo", "bar"), "baz") is None


class Turn(TypedDict, total=False):
    user: str
    fact: str
    recalled: str


async def remember(state: Turn) -> Turn:
    if state.get("fact"):
        await get_store().aput(("memories", state["user"]), "fact", {"text": state["fact"]})
    return {}


def recall(state: Turn) -> Turn:
    item = get_store().get(("memories", state["user"]), "fact")  # a sync node: LangGraph runs it in a thread
    return {"recalled": item.value["text"] if item else ""}


async def test_a_compiled_graph_remembers_across_threads(make: Make) -> None:
    lg = make()
    builder = StateGraph(Turn)
    builder.add_node("remember", remember)
    builder.add_node("recall", recall)
    builder.add_edge(START, "remember")
    builder.add_edge("remember", "recall")
    builder.add_edge("recall", END)
    graph = builder.compile(store=lg, checkpointer=InMemorySaver())
    first = await graph.ainvoke({"user": "ada", "fact": "likes tea"}, {"configurable": {"thread_id": "one"}})
    assert first["recalled"] == "likes tea"
    second = await graph.ainvoke({"user": "ada"}, {"configurable": {"thread_id": "two"}})
    assert second["recalled"] == "likes tea"
    other = await graph.ainvoke({"user": "bob"}, {"configurable": {"thread_id": "three"}})
    assert other["recalled"] == ""


async def test_two_mnemoflow_namespaces_do_not_see_each_other(store: GraphStore, make: Make) -> None:
    left, right = make(namespace="tenant-a"), make(namespace="tenant-b")
    await left.aput(("shared",), "key", {"text": "left"})
    await right.aput(("shared",), "key", {"text": "right"})
    await right.aput(("only-right",), "key", {"text": "right"})
    assert (await left.aget(("shared",), "key")).value == {"text": "left"}  # type: ignore[union-attr]
    assert [item.value for item in await left.asearch((), query="right")] == [{"text": "left"}]
    assert await left.alist_namespaces() == [("shared",)]
    await left.adelete(("shared",), "key")
    assert (await right.aget(("shared",), "key")).value == {"text": "right"}  # type: ignore[union-attr]
    assert await store.count_nodes("tenant-b", KIND) == 2


async def test_open_langgraph_store_items_show_in_the_ui(store: GraphStore, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    settings = settings_of(store, tmp_path, request)
    async with open_langgraph_store(settings, namespace="lg-ui", index_fields=["text"]) as lg:
        await lg.aput(("users", "ada"), "fact", {"text": "Ada keeps bees on the roof", "kind": "hobby"})
        assert lg.store is not store and lg.namespace == "lg-ui"
    assert lg._task is not None and lg._task.cancelled()
    record_id = item_id(("users", "ada"), "fact")
    with serve(create_app(settings)) as url, httpx.Client(base_url=url, timeout=30) as http:
        listed = await asyncio.to_thread(http.get, "/api/memory/records", params={"namespace": "lg-ui", "kind": KIND})
        assert [(node["id"], node["text"]) for node in listed.json()] == [(record_id, "Ada keeps bees on the roof")]
        page = await asyncio.to_thread(http.get, "/memory", params={"namespace": "lg-ui"})
        assert page.status_code == 200 and f"/memory/record?namespace=lg-ui&amp;id={record_id}" in page.text
        hits = await asyncio.to_thread(http.get, "/api/memory/search", params={"namespace": "lg-ui", "q": "bees"})
        assert [hit["node"]["id"] for hit in hits.json()] == [record_id]
