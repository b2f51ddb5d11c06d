"""Bounded reads for browsing memory: namespaces, pages of nodes, pages of a node's neighbours."""

from __future__ import annotations

import pytest

from mnemoflow.errors import InvalidNameError, InvalidNamespaceError, InvalidQueryError
from mnemoflow.memory import NodeRecord, RelationshipRecord
from mnemoflow.memory.protocol import GraphStore
from tests.conformance.helpers import chunk, link


def newest_first(nodes: list[NodeRecord | None]) -> list[str]:
    """Ids in the order ``list_nodes`` promises: updated_at, created_at, id, all descending."""
    present = [node for node in nodes if node is not None]
    return [node.id for node in sorted(present, key=lambda node: (node.updated_at, node.created_at, node.id), reverse=True)]


async def test_namespaces_lists_only_non_empty_ones_with_counts(store: GraphStore, namespace: str) -> None:
    first, second, emptied = f"{namespace}-a", f"{namespace}-b", f"{namespace}-c"
    await store.upsert_nodes([chunk(first, name) for name in "xyz"] + [NodeRecord(id="d", namespace=first, kind="Document")])
    await store.upsert_nodes([chunk(second, "x"), chunk(emptied, "x")])
    await store.delete_nodes(emptied, ["x"])

    listed = await store.namespaces()
    ours = [(summary.name, summary.nodes) for summary in listed if summary.name.startswith(namespace)]
    assert ours == [(first, 4), (second, 1)]
    assert all(summary.nodes >= 1 for summary in listed)


async def test_count_nodes_by_kind_counts_the_stored_kinds_of_one_namespace(store: GraphStore, namespace: str) -> None:
    other = f"{namespace}-other"
    await store.upsert_nodes([chunk(namespace, name) for name in "abc"] + [NodeRecord(id="d", namespace=namespace, kind="Document")])
    await store.upsert_nodes([chunk(other, "x"), NodeRecord(id="r", namespace=other, kind="Run")])
    await store.delete_nodes(namespace, ["b"])

    counts = await store.count_nodes_by_kind(namespace)
    assert counts == {"Chunk": 2, "Document": 1}
    assert list(counts) == ["Chunk", "Document"]  # by kind name
    assert sum(counts.values()) == await store.count_nodes(namespace)
    assert await store.count_nodes_by_kind(other) == {"Chunk": 1, "Run": 1}
    assert await store.count_nodes_by_kind(f"{namespace}-empty") == {}
    with pytest.raises(InvalidNamespaceError):
        await store.count_nodes_by_kind("  ")


async def test_list_nodes_is_newest_first_without_embeddings(store: GraphStore, namespace: str) -> None:
    await store.upsert_nodes([chunk(namespace, name) for name in "abc"])  # one write: one timestamp, id breaks ties
    await store.upsert_nodes([chunk(namespace, "d")])
    await store.upsert_nodes([chunk(namespace, "a", "a new text")])  # a changes: newest, though created first

    listed = await store.list_nodes(namespace)
    assert [node.id for node in listed] == ["a", "d", "c", "b"]
    assert all(node.embedding is None for node in listed)
    stored = await store.get_nodes(namespace, ["a", "b", "c", "d"])
    assert [node.id for node in listed] == newest_first(stored)
    by_id = {node.id: node for node in stored if node is not None}
    assert listed == [by_id[node.id].model_copy(update={"embedding": None}) for node in listed]


async def test_list_nodes_pages_cover_every_node_once(store: GraphStore, namespace: str) -> None:
    await store.upsert_nodes([chunk(namespace, f"n{index:02d}") for index in range(12)])
    await store.upsert_nodes([NodeRecord(id=f"doc{index:02d}", namespace=namespace, kind="Document") for index in range(11)])
    await store.upsert_nodes([chunk(f"{namespace}-other", f"n{index:02d}") for index in range(5)])

    pages = [await store.list_nodes(namespace, limit=5, offset=offset) for offset in range(0, 30, 5)]
    assert [len(page) for page in pages] == [5, 5, 5, 5, 3, 0]
    ids = [node.id for page in pages for node in page]
    assert len(ids) == len(set(ids)) == 23
    assert all(node.namespace == namespace for page in pages for node in page)
    assert ids == [node.id for node in await store.list_nodes(namespace, limit=1000)]
    assert ids == newest_first(await store.get_nodes(namespace, ids))

    documents = await store.list_nodes(namespace, kind="Document", limit=4, offset=8)
    assert [node.id for node in documents] == ["doc02", "doc01", "doc00"]
    assert len(await store.list_nodes(namespace, kind="Chunk", limit=1000)) == 12
    assert await store.list_nodes(namespace, kind="Run") == []
    assert await store.list_nodes(f"{namespace}-nowhere") == []


async def build_hub(store: GraphStore, namespace: str) -> list[RelationshipRecord]:
    """25 relationships touching ``hub``: 10 out, 10 in, 4 to one document (keys), and a self-loop."""
    await store.upsert_nodes(
        [chunk(namespace, "hub")]
        + [chunk(namespace, f"out{index}") for index in range(10)]
        + [chunk(namespace, f"in{index}") for index in range(10)]
        + [NodeRecord(id="doc", namespace=namespace, kind="Document"), chunk(namespace, "stranger")]
    )
    relationships = (
        [link(namespace, "hub", f"out{index}") for index in range(10)]
        + [link(namespace, f"in{index}", "hub") for index in range(10)]
        + [
            RelationshipRecord(namespace=namespace, type="PART_OF", source_id="hub", target_id="doc", key=f"k{index}")
            for index in range(4)
        ]
        + [link(namespace, "hub", "hub")]
    )
    await store.upsert_relationships(relationships + [link(namespace, "out0", "stranger")])
    return relationships


async def test_neighbours_pages_cover_each_relationship_once(store: GraphStore, namespace: str) -> None:
    relationships = await build_hub(store, namespace)
    # the same ids in another namespace, with more relationships, must not leak in
    await build_hub(store, f"{namespace}-other")
    await store.upsert_relationships([link(f"{namespace}-other", "stranger", "hub")])

    pages = [await store.neighbours(namespace, "hub", limit=10, offset=offset) for offset in (0, 10, 20, 30)]
    assert [len(page.relationships) for page in pages] == [10, 10, 5, 0]
    assert all(page.total == 25 for page in pages)
    assert [(page.offset, page.limit) for page in pages] == [(0, 10), (10, 10), (20, 10), (30, 10)]
    assert all(page.node is not None and page.node.id == "hub" and page.node.embedding is None for page in pages)

    def other(relationship: RelationshipRecord) -> str:
        return relationship.target_id if relationship.source_id == "hub" else relationship.source_id

    got = [relationship for page in pages for relationship in page.relationships]
    expected = sorted(relationships, key=lambda relationship: (relationship.type, other(relationship), relationship.id))
    assert [relationship.id for relationship in got] == [relationship.id for relationship in expected]
    assert {(r.source_id, r.target_id) for r in got} >= {("hub", "out3"), ("in7", "hub"), ("hub", "hub"), ("hub", "doc")}
    assert all(relationship.namespace == namespace for relationship in got)

    for page in pages:
        ends = [other(relationship) for relationship in page.relationships]
        assert [node.id for node in page.nodes] == list(dict.fromkeys(ends))
        assert all(node.namespace == namespace and node.embedding is None for node in page.nodes)
    # NEXT sorts before PART_OF; the self-loop's other end is the hub itself, which sorts first
    assert (pages[0].relationships[0].source_id, pages[0].relationships[0].target_id) == ("hub", "hub")
    assert [node.id for node in pages[0].nodes] == ["hub", *(f"in{index}" for index in range(9))]
    assert [node.id for node in pages[2].nodes] == ["out9", "doc"]
    assert sorted(r.key for r in pages[2].relationships) == ["", "k0", "k1", "k2", "k3"]


async def test_neighbours_of_a_quiet_or_missing_node(store: GraphStore, namespace: str) -> None:
    await build_hub(store, namespace)
    await store.upsert_nodes([NodeRecord(id="alone", namespace=namespace, kind="Document")])

    alone = await store.neighbours(namespace, "alone")
    assert alone.node is not None and alone.node.id == "alone"
    assert (alone.relationships, alone.nodes, alone.total) == ([], [], 0)

    stranger = await store.neighbours(namespace, "stranger")
    assert stranger.total == 1 and [(r.source_id, r.target_id) for r in stranger.relationships] == [("out0", "stranger")]
    assert [node.id for node in stranger.nodes] == ["out0"]

    for missing in (await store.neighbours(namespace, "nowhere"), await store.neighbours(f"{namespace}-other", "hub")):
        assert missing.node is None
        assert (missing.relationships, missing.nodes, missing.total) == ([], [], 0)


@pytest.mark.parametrize(
    ("limit", "offset", "named"),
    [(0, 0, "limit"), (1001, 0, "limit"), (-1, 0, "limit"), (True, 0, "limit"), (2.0, 0, "limit"), (10, -1, "offset"), (10, None, "offset")],
)
async def test_bad_page_arguments_are_refused(store: GraphStore, namespace: str, limit: object, offset: object, named: str) -> None:
    await store.upsert_nodes([chunk(namespace, "a")])
    with pytest.raises(InvalidQueryError, match=f"^{named}="):
        await store.list_nodes(namespace, limit=limit, offset=offset)  # type: ignore[arg-type]
    with pytest.raises(InvalidQueryError, match=f"^{named}="):
        await store.neighbours(namespace, "a", limit=limit, offset=offset)  # type: ignore[arg-type]


async def test_bad_kind_or_namespace_is_refused(store: GraphStore, namespace: str) -> None:
    assert len(await store.list_nodes(namespace, limit=1000, offset=0)) == 0
    for kind in ("Unregistered", "Chunk` OR 1=1", "MfNode"):
        with pytest.raises(InvalidNameError):
            await store.list_nodes(namespace, kind=kind)
    for blank in ("", "   "):
        with pytest.raises(InvalidNamespaceError):
            await store.list_nodes(blank)
        with pytest.raises(InvalidNamespaceError):
            await store.neighbours(blank, "a")
