"""k-hop neighbourhoods with relationship-type and direction filters."""

from __future__ import annotations

from mnemoflow.memory import NodeRecord
from mnemoflow.memory.protocol import GraphStore
from tests.conformance.helpers import chunk, link


async def build_chain(store: GraphStore, namespace: str) -> None:
    """a -> b -> c -> d (NEXT), b -> doc (PART_OF), e -> a (NEXT)."""
    await store.upsert_nodes(
        [chunk(namespace, name) for name in "abcde"] + [NodeRecord(id="doc", namespace=namespace, kind="Document")]
    )
    await store.upsert_relationships(
        [link(namespace, "a", "b"), link(namespace, "b", "c"), link(namespace, "c", "d"), link(namespace, "e", "a")]
        + [link(namespace, "b", "doc", "PART_OF")]
    )


async def test_depth_bounds_the_walk(store: GraphStore, namespace: str) -> None:
    await build_chain(store, namespace)
    one = await store.neighbourhood(namespace, "a", depth=1)
    two = await store.neighbourhood(namespace, "a", depth=2)
    assert [node.id for node in one.nodes] == ["a", "b", "e"]
    assert one.distances == {"a": 0, "b": 1, "e": 1}
    assert [node.id for node in two.nodes] == ["a", "b", "e", "c", "doc"]
    assert {(r.source_id, r.target_id) for r in two.relationships} == {("a", "b"), ("e", "a"), ("b", "c"), ("b", "doc")}


async def test_direction_filter(store: GraphStore, namespace: str) -> None:
    await build_chain(store, namespace)
    outgoing = await store.neighbourhood(namespace, "a", depth=3, direction="out")
    incoming = await store.neighbourhood(namespace, "a", depth=3, direction="in")
    assert [node.id for node in outgoing.nodes] == ["a", "b", "c", "doc", "d"]
    assert [node.id for node in incoming.nodes] == ["a", "e"]


async def test_type_filter(store: GraphStore, namespace: str) -> None:
    await build_chain(store, namespace)
    only_next = await store.neighbourhood(namespace, "b", depth=1, relationship_types=["NEXT"])
    only_part = await store.neighbourhood(namespace, "b", depth=1, relationship_types=["PART_OF"])
    assert [node.id for node in only_next.nodes] == ["b", "a", "c"]
    assert [node.id for node in only_part.nodes] == ["b", "doc"]
    assert {r.type for r in only_part.relationships} == {"PART_OF"}


async def test_missing_start_gives_an_empty_subgraph(store: GraphStore, namespace: str) -> None:
    await build_chain(store, namespace)
    empty = await store.neighbourhood(namespace, "nowhere", depth=2)
    assert empty.nodes == [] and empty.relationships == [] and empty.distances == {}


async def test_neighbourhood_without_embeddings(store: GraphStore, namespace: str) -> None:
    await build_chain(store, namespace)
    full = await store.neighbourhood(namespace, "a", depth=2)
    bare = await store.neighbourhood(namespace, "a", depth=2, include_embeddings=False)
    assert [node.id for node in bare.nodes] == [node.id for node in full.nodes]
    assert bare.relationships == full.relationships
    assert all(node.embedding is None for node in bare.nodes[1:])
    assert all(node.embedding is not None for node in full.nodes if node.kind == "Chunk")
    assert [node.model_copy(update={"embedding": None}) for node in full.nodes[1:]] == bare.nodes[1:]
