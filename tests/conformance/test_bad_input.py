"""Bad input is refused with an error naming what was wrong, and nothing stored changes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from mnemoflow.errors import (
    ConflictError,
    EmbeddingDimensionError,
    InvalidNameError,
    InvalidNamespaceError,
    InvalidQueryError,
    InvalidRecordError,
    SchemaError,
)
from mnemoflow.memory import NameRegistry, NodeRecord, RelationshipRecord
from mnemoflow.memory.protocol import GraphStore
from tests.conformance.helpers import chunk, link
from tests.conftest import EMBEDDER, new_store


@pytest.mark.parametrize("kind", ["Unregistered", "Chunk`) DETACH DELETE n //", "Two words", "", "1Chunk", "MfNode"])
async def test_bad_kind_is_refused_before_any_query(store: GraphStore, namespace: str, kind: str) -> None:
    with pytest.raises(InvalidNameError, match="node kind"):
        await store.upsert_nodes([chunk(namespace, "ok"), NodeRecord(id="x", namespace=namespace, kind=kind)])
    assert await store.count_nodes(namespace) == 0


@pytest.mark.parametrize("type_", ["UNKNOWN", "NEXT]->() DELETE r //", "NE XT", "NEXT`"])
async def test_bad_relationship_type_is_refused(store: GraphStore, namespace: str, type_: str) -> None:
    await store.upsert_nodes([chunk(namespace, "a"), chunk(namespace, "b")])
    with pytest.raises(InvalidNameError, match="relationship type"):
        await store.upsert_relationships([link(namespace, "a", "b", type_)])
    with pytest.raises(InvalidNameError):
        await store.neighbourhood(namespace, "a", relationship_types=[type_])
    assert await store.count_relationships(namespace) == 0


async def test_bad_names_in_reads(store: GraphStore, namespace: str) -> None:
    with pytest.raises(InvalidNameError):
        await store.count_nodes(namespace, "Chunk` OR 1=1")
    with pytest.raises(InvalidNameError):
        await store.keyword_search(namespace, "whale", kinds=["Nope"])
    with pytest.raises(InvalidNameError, match="embedded"):
        await store.vector_search(namespace, EMBEDDER.embed_one("x"), kind="Document")
    with pytest.raises(InvalidNameError, match="filter property"):
        await store.vector_search(namespace, EMBEDDER.embed_one("x"), kind="Chunk", filters={"a b": 1})


async def test_wrong_vector_dimension_names_both(store: GraphStore, namespace: str) -> None:
    short = NodeRecord(id="s", namespace=namespace, kind="Chunk", embedding=[0.1] * 383)
    with pytest.raises(EmbeddingDimensionError, match="dimension 383.*dimension 384"):
        await store.upsert_nodes([chunk(namespace, "fine"), short])
    with pytest.raises(EmbeddingDimensionError, match="dimension 385.*dimension 384"):
        await store.vector_search(namespace, [0.1] * 385, kind="Chunk")
    assert await store.count_nodes(namespace) == 0


@pytest.mark.parametrize("bad_namespace", ["", "   ", "tab\there", "x" * 201])
async def test_bad_namespace_is_refused(store: GraphStore, bad_namespace: str) -> None:
    with pytest.raises(InvalidNamespaceError):
        await store.upsert_nodes([NodeRecord(id="x", namespace=bad_namespace, kind="Document")])
    with pytest.raises(InvalidNamespaceError):
        await store.get_nodes(bad_namespace, ["x"])
    with pytest.raises(InvalidNamespaceError):
        await store.keyword_search(bad_namespace, "x")
    with pytest.raises(InvalidNamespaceError):
        await store.count_nodes(bad_namespace)


async def test_properties_that_cannot_round_trip_are_refused(store: GraphStore, namespace: str) -> None:
    for properties in ({"x": math.nan}, {"x": math.inf}, {"x": {1, 2}}, {"x": object()}):
        with pytest.raises(InvalidRecordError, match="JSON"):
            await store.upsert_nodes([NodeRecord(id="n", namespace=namespace, kind="Document", properties=properties)])
    for value in (math.nan, math.inf):
        with pytest.raises(InvalidRecordError, match="'n'.*NaN or infinity"):
            await store.upsert_nodes([NodeRecord(id="n", namespace=namespace, kind="Chunk", embedding=[value] * 384)])
    assert await store.count_nodes(namespace) == 0


async def test_missing_endpoint_writes_nothing(store: GraphStore, namespace: str) -> None:
    await store.upsert_nodes([chunk(namespace, "a"), chunk(namespace, "b")])
    batch = [link(namespace, "a", "b"), link(namespace, "b", "ghost"), link(namespace, "phantom", "a")]
    with pytest.raises(LookupError, match="'ghost'.*'phantom'|'phantom'.*'ghost'"):
        await store.upsert_relationships(batch)
    assert await store.count_relationships(namespace) == 0


async def test_endpoint_in_another_namespace_is_missing(store: GraphStore, namespace: str) -> None:
    await store.upsert_nodes([chunk(namespace, "a"), chunk(f"{namespace}-other", "b")])
    with pytest.raises(LookupError, match="'b'"):
        await store.upsert_relationships([link(namespace, "a", "b")])


async def test_changing_a_nodes_kind_is_refused_and_rolls_back(store: GraphStore, namespace: str) -> None:
    await store.upsert_nodes([chunk(namespace, "a", "original")])
    batch = [chunk(namespace, "new"), chunk(namespace, "a", "changed"), NodeRecord(id="a", namespace=namespace, kind="Document")]
    with pytest.raises(ConflictError, match="'a' is a Chunk, not a Document"):
        await store.upsert_nodes([batch[0], batch[2]])
    [kept] = await store.get_nodes(namespace, ["a"])
    assert kept is not None and kept.kind == "Chunk" and kept.text == "original"
    assert await store.get_nodes(namespace, ["new"]) == [None]


async def test_bad_counts_and_depths(store: GraphStore, namespace: str) -> None:
    with pytest.raises(ValueError, match="depth"):
        await store.neighbourhood(namespace, "a", depth=0)
    with pytest.raises(ValueError, match="depth"):
        await store.neighbourhood(namespace, "a", depth=11)
    with pytest.raises(ValueError, match="k="):
        await store.keyword_search(namespace, "x", k=0)
    with pytest.raises(InvalidQueryError, match="direction"):
        await store.neighbourhood(namespace, "a", direction="sideways")  # type: ignore[arg-type]
    with pytest.raises(InvalidQueryError, match="single string"):
        await store.get_nodes(namespace, "abc")


async def test_store_built_with_another_embedder_is_refused(
    store: GraphStore, backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    uri = request.getfixturevalue("empty_neo4j") if backend == "neo4j" else None
    other = new_store(backend, neo4j_uri=uri, sqlite_path=tmp_path / "memory.db", embedding_model="other", embedding_dimension=8)
    try:
        with pytest.raises(SchemaError, match="'hashing-v1-384' \\(dimension 384\\).*'other' \\(dimension 8\\)"):
            await other.setup()
    finally:
        await other.close()


def test_registry_refuses_unsafe_and_conflicting_names() -> None:
    registry = NameRegistry()
    for bad in ["a b", "a`b", "", "a-b", "é", "x" * 64, "MfMeta"]:
        with pytest.raises(InvalidNameError):
            registry.register_kind(bad)
    registry.register_kind("Note", embedded=True)
    with pytest.raises(InvalidNameError, match="embedded=True"):
        registry.register_kind("Note", embedded=False)
    with pytest.raises(InvalidNameError, match="known kinds: Note"):
        registry.kind("Other")


def test_relationship_ids_are_stable_and_distinct() -> None:
    one = RelationshipRecord(namespace="n", type="NEXT", source_id="a", target_id="b")
    assert one.id == RelationshipRecord(namespace="n", type="NEXT", source_id="a", target_id="b").id
    assert one.id != RelationshipRecord(namespace="m", type="NEXT", source_id="a", target_id="b").id
    assert one.id != RelationshipRecord(namespace="n", type="NEXT", source_id="b", target_id="a").id
