"""``list_nodes(where=...)``: a page of the nodes whose top-level properties equal given values, ordered and paged
as without ``where``; what it matches is what ``vector_search``'s filters match on the same backend."""

from __future__ import annotations

import math
from typing import Any

import pytest

from mnemoflow.errors import InvalidNameError, InvalidQueryError, StoreError
from mnemoflow.memory import NodeRecord
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import JsonScalar
from tests.conformance.helpers import chunk
from tests.conformance.test_browsing import newest_first
from tests.conftest import EMBEDDER


def document(namespace: str, node_id: str, **properties: Any) -> NodeRecord:
    return NodeRecord(id=node_id, namespace=namespace, kind="Document", properties=properties)


async def listed(store: GraphStore, namespace: str, where: dict[str, JsonScalar] | None, kind: str | None = None) -> list[str]:
    """Ids of every node ``list_nodes`` gives for ``where``, in its order."""
    return [node.id for node in await store.list_nodes(namespace, kind=kind, where=where, limit=1000)]


async def in_order(store: GraphStore, namespace: str, ids: list[str]) -> list[str]:
    """``ids`` in the order ``list_nodes`` promises, from the stored timestamps."""
    return newest_first(await store.get_nodes(namespace, ids))


async def test_where_keeps_nodes_equal_on_every_key_with_or_without_kind(store: GraphStore, namespace: str) -> None:
    def written(space: str) -> list[NodeRecord]:
        return [
            chunk(space, "c1", ns_0="users", ns_1="alice", role="note"),
            chunk(space, "c2", ns_0="users", ns_1="bob", role="note"),
            chunk(space, "c3", ns_0="users", role="note"),  # no ns_1
            document(space, "d1", ns_0="users", ns_1="alice", role="note"),
            document(space, "d2", ns_0="users", ns_1="alice"),  # no role
            document(space, "d3", ns_0="users", ns_1="alice", role=None),
            document(space, "d4", ns_0="users", ns_1="alice", role=["note"]),
            document(space, "d5", nested={"ns_0": "users", "ns_1": "alice", "role": "note"}),
            # properties named like record fields are properties all the same
            NodeRecord(id="d6", namespace=space, kind="Document", properties={"id": "c1", "kind": "Chunk", "namespace": space}),
        ]

    await store.upsert_nodes(written(namespace))
    # the same ids and properties elsewhere, written later (so newer), never leak in
    other = f"{namespace}-other"
    await store.upsert_nodes(written(other) + [chunk(other, "c9", ns_0="users", ns_1="alice", role="note")])

    alice_notes: dict[str, JsonScalar] = {"ns_0": "users", "ns_1": "alice", "role": "note"}
    assert await listed(store, namespace, alice_notes) == ["d1", "c1"]  # one write: one timestamp, id descending
    assert await listed(store, namespace, alice_notes, kind="Document") == ["d1"]
    assert await listed(store, namespace, alice_notes, kind="Chunk") == ["c1"]
    assert await listed(store, namespace, alice_notes, kind="Run") == []
    assert await listed(store, namespace, {"ns_0": "users"}) == ["d4", "d3", "d2", "d1", "c3", "c2", "c1"]
    assert await listed(store, namespace, {"ns_1": "alice"}) == ["d4", "d3", "d2", "d1", "c1"]
    assert await listed(store, namespace, {"role": "note"}) == ["d1", "c3", "c2", "c1"]
    assert await listed(store, namespace, {"ns_1": "alice", "role": "other"}) == []
    assert await listed(store, namespace, {"ns_1": "carol"}) == []
    assert await listed(store, namespace, {"id": "c1"}) == ["d6"]
    assert await listed(store, namespace, {"kind": "Chunk", "namespace": namespace}) == ["d6"]
    assert await listed(store, namespace, {"id": "d1"}) == []

    everything = await listed(store, namespace, None)
    assert len(everything) == 9
    assert await listed(store, namespace, {}) == everything
    assert await listed(store, other, alice_notes) == ["d1", "c9", "c1"]
    assert await listed(store, f"{namespace}-nowhere", alice_notes) == []

    page = await store.list_nodes(namespace, where={"ns_1": "alice"}, limit=2, offset=1)
    stored = {node.id: node for node in await store.get_nodes(namespace, ["d3", "d2"]) if node is not None}
    assert page == [stored["d3"].model_copy(update={"embedding": None}), stored["d2"].model_copy(update={"embedding": None})]


async def test_values_match_by_json_type_as_vector_search_filters_do(store: GraphStore, namespace: str) -> None:
    values: dict[str, JsonScalar] = {
        "true": True,
        "false": False,
        "one": 1,
        "zero": 0,
        "one_float": 1.0,
        "half": 2.5,
        "big": 2**53 + 1,
        "one_text": "1",
        "true_text": "true",
        "half_text": "2.5",
        "empty_text": "",
    }
    await store.upsert_nodes([chunk(namespace, name, value=value) for name, value in values.items()] + [chunk(namespace, "none")])
    # SQLite reads a JSON true/false back as 1/0 (json_extract), so there a boolean and the number 1 or 0 meet;
    # Neo4j tells them apart. Every backend tells strings from numbers and booleans, and equates 1 with 1.0.
    booleans_are_numbers = store.backend == "sqlite"
    expected: list[tuple[JsonScalar, set[str]]] = [
        ("1", {"one_text"}),
        ("true", {"true_text"}),
        ("2.5", {"half_text"}),
        ("", {"empty_text"}),
        (2.5, {"half"}),
        (2**53 + 1, {"big"}),
        (1, {"one", "one_float"} | ({"true"} if booleans_are_numbers else set())),
        (1.0, {"one", "one_float"} | ({"true"} if booleans_are_numbers else set())),
        (0, {"zero"} | ({"false"} if booleans_are_numbers else set())),
        (True, {"true"} | ({"one", "one_float"} if booleans_are_numbers else set())),
        (False, {"false"} | ({"zero"} if booleans_are_numbers else set())),
    ]
    query = EMBEDDER.embed_one("anything")
    for value, names in expected:
        where = {"value": value}
        got = await listed(store, namespace, where, kind="Chunk")
        assert set(got) == names, (value, got)
        assert got == await in_order(store, namespace, sorted(names))
        assert await listed(store, namespace, where) == got
        searched = await store.vector_search(namespace, query, kind="Chunk", k=100, filters=where)
        assert {hit.node.id for hit in searched} == names, value


async def test_pages_with_where_cover_the_filtered_nodes_once_in_order(store: GraphStore, namespace: str) -> None:
    def group(batch: int, index: int) -> str:
        return "kept" if (batch + index) % 3 else "dropped"

    for batch in range(5):  # five writes, five timestamps, kinds and groups interleaved
        await store.upsert_nodes(
            [document(namespace, f"d{batch}{index}", group=group(batch, index)) for index in range(3)]
            + [chunk(namespace, f"c{batch}{index}", group=group(batch, index)) for index in range(2)]
        )
    await store.upsert_nodes([document(namespace, "d00", group="kept", moved=True)])  # now kept, and the newest
    written = [f"{kind}{batch}{index}" for batch in range(5) for kind, count in (("d", 3), ("c", 2)) for index in range(count)]
    kept = [node_id for node_id in written if group(int(node_id[1]), int(node_id[2])) == "kept" or node_id == "d00"]

    pages = [await store.list_nodes(namespace, where={"group": "kept"}, limit=4, offset=offset) for offset in range(0, 24, 4)]
    assert [len(page) for page in pages] == [4, 4, 4, 4, 2, 0]
    ids = [node.id for page in pages for node in page]
    assert ids[0] == "d00"
    assert ids == await in_order(store, namespace, kept) == await listed(store, namespace, {"group": "kept"})

    documents = [node_id for node_id in kept if node_id.startswith("d")]
    document_pages = [
        await store.list_nodes(namespace, kind="Document", where={"group": "kept"}, limit=3, offset=offset)
        for offset in range(0, 12, 3)
    ]
    assert [len(page) for page in document_pages] == [3, 3, 3, 2]
    document_ids = [node.id for page in document_pages for node in page]
    assert document_ids == await in_order(store, namespace, documents)
    assert document_ids == await listed(store, namespace, {"group": "kept"}, "Document")
    assert [node_id for node_id in ids if node_id.startswith("d")] == document_ids

    assert await listed(store, namespace, {"group": "kept", "moved": True}) == ["d00"]


@pytest.mark.parametrize(
    ("where", "error", "message"),
    [
        ({"a b": "x"}, InvalidNameError, "filter property 'a b'"),
        ({"1a": "x"}, InvalidNameError, "filter property '1a'"),
        ({"role`] = 1 OR true //": "x"}, InvalidNameError, "filter property"),
        ({'role" OR 1=1 --': "x"}, InvalidNameError, "filter property"),
        ({"x" * 64: "x"}, InvalidNameError, "filter property"),
        ({"": "x"}, InvalidNameError, "filter property"),
        ({"role": ["note"]}, InvalidQueryError, "filter 'role'"),
        ({"role": {"name": "note"}}, InvalidQueryError, "filter 'role'"),
        ({"role": None}, InvalidQueryError, "filter 'role'"),
        ({"score": math.nan}, InvalidQueryError, "filter 'score'"),
        ({"count": 2**70}, InvalidQueryError, "outside the 64-bit range"),
        ({"score": -math.inf}, InvalidQueryError, "filter 'score'"),
        ({"ok": "x", "role": b"note"}, InvalidQueryError, "filter 'role'"),
    ],
)
async def test_bad_where_is_refused_before_any_query(
    store: GraphStore, namespace: str, where: dict[str, Any], error: type[Exception], message: str
) -> None:
    await store.close()  # any query now fails, so the refusal must come first
    with pytest.raises(StoreError, match="closed"):
        await store.list_nodes(namespace, where={"role": "note"})
    with pytest.raises(error, match=message):
        await store.list_nodes(namespace, where=where)
    with pytest.raises(error, match=message):
        await store.list_nodes(namespace, kind="Document", where=where, limit=10, offset=5)
