"""The same batch written twice leaves the same graph; only real changes move ``updated_at``."""

from __future__ import annotations

from mnemoflow.memory import NodeRecord
from mnemoflow.memory.protocol import GraphStore
from tests.conformance.helpers import chunk, link


async def snapshot(store: GraphStore, namespace: str, ids: list[str]) -> tuple[object, ...]:
    nodes = await store.get_nodes(namespace, ids)
    subgraph = await store.neighbourhood(namespace, ids[0], depth=3)
    return (
        nodes,
        subgraph.relationships,
        await store.count_nodes(namespace),
        await store.count_relationships(namespace),
    )


async def test_same_batch_twice_leaves_the_same_graph(store: GraphStore, namespace: str) -> None:
    nodes = [chunk(namespace, f"c{i}", f"passage {i}", position=i) for i in range(5)]
    links = [link(namespace, f"c{i}", f"c{i + 1}") for i in range(4)]
    assert await store.upsert_nodes(nodes) == 5
    assert await store.upsert_relationships(links) == 4
    before = await snapshot(store, namespace, [node.id for node in nodes])

    await store.upsert_nodes(nodes)
    await store.upsert_relationships(links)

    assert await snapshot(store, namespace, [node.id for node in nodes]) == before
    assert await store.count_nodes(namespace) == 5
    assert await store.count_relationships(namespace) == 4


async def test_changed_content_updates_in_place(store: GraphStore, namespace: str) -> None:
    await store.upsert_nodes([chunk(namespace, "c1", "first", version=1)])
    [first] = await store.get_nodes(namespace, ["c1"])
    await store.upsert_nodes([chunk(namespace, "c1", "second", version=2)])
    [second] = await store.get_nodes(namespace, ["c1"])
    assert first is not None and second is not None
    assert second.text == "second" and second.properties == {"version": 2}
    assert second.created_at == first.created_at
    assert second.updated_at is not None and first.updated_at is not None and second.updated_at > first.updated_at
    assert await store.count_nodes(namespace) == 1


async def test_repeated_id_in_one_batch_keeps_the_last(store: GraphStore, namespace: str) -> None:
    written = await store.upsert_nodes(
        [NodeRecord(id="d", namespace=namespace, kind="Document", properties={"n": n}) for n in range(3)]
    )
    [node] = await store.get_nodes(namespace, ["d"])
    assert written == 1 and node is not None and node.properties == {"n": 2}


async def test_parallel_relationships_need_distinct_keys(store: GraphStore, namespace: str) -> None:
    await store.upsert_nodes([chunk(namespace, "a"), chunk(namespace, "b")])
    first = link(namespace, "a", "b")
    second = first.model_copy(update={"key": "second"})
    await store.upsert_relationships([first, second, first])
    assert first.id != second.id
    assert await store.count_relationships(namespace, "NEXT") == 2
