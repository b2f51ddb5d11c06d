"""``count_nodes`` with and without a kind, as writes, rewrites, refused writes and deletes change a namespace."""

from __future__ import annotations

import pytest

from mnemoflow.errors import ConflictError, InvalidNameError, InvalidNamespaceError
from mnemoflow.memory import NodeRecord
from mnemoflow.memory.protocol import GraphStore
from tests.conformance.helpers import chunk

KINDS = ("Chunk", "Document", "Run")


async def counts(store: GraphStore, namespace: str) -> tuple[int, dict[str, int]]:
    """The namespace's total and its count for each kind, each read by its own call."""
    return await store.count_nodes(namespace), {kind: await store.count_nodes(namespace, kind) for kind in KINDS}


async def test_counts_follow_writes_and_deletes(store: GraphStore, namespace: str) -> None:
    other = f"{namespace}-other"
    assert await counts(store, namespace) == (0, {"Chunk": 0, "Document": 0, "Run": 0})

    await store.upsert_nodes(
        [chunk(namespace, f"c{index}") for index in range(5)] + [NodeRecord(id="d", namespace=namespace, kind="Document")]
    )
    await store.upsert_nodes([chunk(other, "c0"), NodeRecord(id="r", namespace=other, kind="Run")])  # same ids elsewhere
    assert await counts(store, namespace) == (6, {"Chunk": 5, "Document": 1, "Run": 0})
    assert await counts(store, other) == (2, {"Chunk": 1, "Document": 0, "Run": 1})

    await store.upsert_nodes([chunk(namespace, "c0", "changed text"), chunk(namespace, "c1")])  # rewrites add nothing
    with pytest.raises(ConflictError):
        await store.upsert_nodes([NodeRecord(id="c2", namespace=namespace, kind="Run")])  # another kind: refused
    with pytest.raises(ConflictError):
        await store.upsert_nodes([chunk(namespace, "c5"), chunk(namespace, "c3")], new=["c5", "c3"])  # all or none
    assert await counts(store, namespace) == (6, {"Chunk": 5, "Document": 1, "Run": 0})

    assert await store.delete_nodes(namespace, ["c1", "c3", "d", "r", "nowhere"]) == 3
    assert await counts(store, namespace) == (3, {"Chunk": 3, "Document": 0, "Run": 0})
    assert await counts(store, other) == (2, {"Chunk": 1, "Document": 0, "Run": 1})

    await store.upsert_nodes(
        [NodeRecord(id="d", namespace=namespace, kind="Document"), NodeRecord(id="r", namespace=namespace, kind="Run")]
    )
    total, by_kind = await counts(store, namespace)
    assert (total, by_kind) == (5, {"Chunk": 3, "Document": 1, "Run": 1})
    assert {kind: count for kind, count in by_kind.items() if count} == await store.count_nodes_by_kind(namespace)


async def test_counts_follow_expiry(store: GraphStore, namespace: str) -> None:
    await store.upsert_nodes(
        [chunk(namespace, "old", expires_at=100), chunk(namespace, "kept", expires_at=300), chunk(namespace, "forever")]
        + [NodeRecord(id="d", namespace=namespace, kind="Document", properties={"expires_at": 150.5})]
    )
    assert await store.delete_expired(200) == 2
    assert await counts(store, namespace) == (2, {"Chunk": 2, "Document": 0, "Run": 0})


async def test_count_arguments_are_checked(store: GraphStore, namespace: str) -> None:
    await store.upsert_nodes([chunk(namespace, "a")])
    for kind in ("Unregistered", "chunk", "Chunk` OR 1=1", "MfNode", ""):
        with pytest.raises(InvalidNameError):
            await store.count_nodes(namespace, kind)
    for blank in ("", "   "):
        with pytest.raises(InvalidNamespaceError):
            await store.count_nodes(blank)
        with pytest.raises(InvalidNamespaceError):
            await store.count_nodes(blank, "Chunk")
