"""The Neo4j store's fast paths: index seeks in the plans, one statement for ``neighbours_of`` that agrees with the
page-by-page reference, and vector hits that come without their vectors unless asked for."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from neo4j import GraphDatabase

from mnemoflow.memory import Neo4jStore, NodeRecord, RelationshipRecord
from mnemoflow.memory.neo4j import queries
from tests.conftest import EMBEDDER, neo4j_auth, new_store
from tests.support.reference_links import links_by_pages

pytestmark = pytest.mark.neo4j

SCANS = {"NodeByLabelScan", "AllNodesScan"}


def operators(plan: Any) -> set[str]:
    """Every operator of a plan tree, without the ``@neo4j`` runtime suffix."""
    names = {plan["operatorType"].split("@")[0]}
    for child in plan.get("children", []):
        names |= operators(child)
    return names


def explain(uri: str, statement: str, **parameters: Any) -> set[str]:
    with GraphDatabase.driver(uri, auth=neo4j_auth()) as driver:
        _, summary, _ = driver.execute_query("EXPLAIN " + statement, parameters)
    assert summary.plan is not None
    return operators(summary.plan)


@pytest.fixture
async def neo4j_store(empty_neo4j: str) -> AsyncIterator[Neo4jStore]:
    store = new_store("neo4j", neo4j_uri=empty_neo4j)
    assert isinstance(store, Neo4jStore)
    await store.setup()
    try:
        yield store
    finally:
        await store.close()


@pytest.mark.parametrize("by_kind", [True, False])
async def test_counting_seeks_an_index(neo4j_store: Neo4jStore, empty_neo4j: str, by_kind: bool) -> None:
    plan = explain(empty_neo4j, queries.count_nodes(by_kind=by_kind), namespace="ns", kind="Chunk")
    assert not plan & SCANS, plan
    assert any("IndexSeek" in name for name in plan), plan


@pytest.mark.parametrize("by_kind", [True, False])
async def test_a_filtered_page_seeks_an_index(neo4j_store: Neo4jStore, empty_neo4j: str, by_kind: bool) -> None:
    statement = queries.list_nodes(by_kind=by_kind, filtered=True)
    plan = explain(empty_neo4j, statement, namespace="ns", kind="Chunk", filters={"ns_0": "a"}, limit=5, offset=0)
    assert not plan & SCANS, plan
    assert any("IndexSeek" in name for name in plan), plan


async def test_neighbours_of_seeks_each_centre(neo4j_store: Neo4jStore, empty_neo4j: str) -> None:
    for direction, types, by_kind in itertools.product(["out", "in", "both"], [None, ["NEXT", "PART_OF"]], [False, True]):
        plan = explain(
            empty_neo4j,
            queries.neighbours_of(direction, types, by_kind=by_kind),
            namespace="ns",
            ids=["a"],
            kinds=["Chunk"],
            limit=5,
        )
        assert not plan & SCANS, (direction, types, by_kind, plan)
        assert any("IndexSeek" in name for name in plan), plan


def node(namespace: str, node_id: str, kind: str = "Chunk") -> NodeRecord:
    embedding = EMBEDDER.embed_one(node_id) if kind == "Chunk" else None
    return NodeRecord(id=node_id, namespace=namespace, kind=kind, text=node_id, embedding=embedding)


async def test_neighbours_of_agrees_with_the_page_reference(neo4j_store: Neo4jStore) -> None:
    """Directions, type and kind filters, limits, a self-loop, parallel keys, a quiet and a missing node, and a
    second namespace holding the same ids: one statement answers as the page-by-page reference does."""
    rng = np.random.default_rng(3)
    for namespace in ("main", "other"):
        await neo4j_store.upsert_nodes(
            [node(namespace, f"c{index}") for index in range(12)]
            + [node(namespace, f"d{index}", "Document") for index in range(3)]
        )
        ids = [f"c{index}" for index in range(12)] + [f"d{index}" for index in range(3)]
        pairs = {(str(a), str(b)) for a, b in rng.choice(ids, size=(40, 2))} | {("c0", "c0"), ("c0", "d0")}
        await neo4j_store.upsert_relationships(
            [
                RelationshipRecord(namespace=namespace, type=type_, source_id=source, target_id=target, key=key)
                for (source, target), type_, key in zip(
                    sorted(pairs), itertools.cycle(["NEXT", "PART_OF", "NEXT"]), itertools.cycle(["", "", "k"]), strict=False
                )
            ]
            + [RelationshipRecord(namespace=namespace, type="PART_OF", source_id="c0", target_id="d0", key="second")]
        )
    await neo4j_store.upsert_nodes([node("main", "quiet")])
    asked = ["c0", "missing", "c3", "quiet", "c0", "d0", "c7"]
    for direction, types, kinds, limit in itertools.product(
        ["out", "in", "both"], [None, ["NEXT"], []], [None, ["Document"]], [2, 1000]
    ):
        options: dict[str, Any] = {"relationship_types": types, "direction": direction, "kinds": kinds, "limit": limit}
        fast = await neo4j_store.neighbours_of("main", asked, **options)
        reference = await links_by_pages(neo4j_store, "main", asked, **options)
        assert fast == reference, options
        assert list(fast) == ["c0", "c3", "quiet", "d0", "c7"]


async def test_vector_hits_carry_vectors_only_when_asked(neo4j_store: Neo4jStore) -> None:
    await neo4j_store.upsert_nodes([node("main", f"c{index}") for index in range(5)])
    probe = EMBEDDER.embed_one("c1")
    bare = await neo4j_store.vector_search("main", probe, kind="Chunk", k=3)
    full = await neo4j_store.vector_search("main", np.asarray(probe), kind="Chunk", k=3, include_embeddings=True)
    assert [hit.node.id for hit in bare] == [hit.node.id for hit in full] and bare[0].node.id == "c1"
    assert all(hit.node.embedding is None for hit in bare)
    assert full[0].node.embedding == pytest.approx(probe)
    assert bare[0].node.model_copy(update={"embedding": full[0].node.embedding}) == full[0].node


async def test_a_thin_namespace_still_gets_its_exact_top_k(neo4j_store: Neo4jStore) -> None:
    """A namespace holding 1 in 20 of its kind's index, with a filter: the pool widens until k survive, and the
    next search, sized from the share that survived, gets the same exact answer."""
    vectors = np.random.default_rng(5).standard_normal((400, EMBEDDER.dimension))
    crowd = [
        NodeRecord(id=f"n{index}", namespace="crowd", kind="Chunk", embedding=vector.tolist(), properties={"even": True})
        for index, vector in enumerate(vectors[:380])
    ]
    few = [
        NodeRecord(id=f"n{index}", namespace="few", kind="Chunk", embedding=vector.tolist(), properties={"even": index % 2 == 0})
        for index, vector in enumerate(vectors[380:])
    ]
    await neo4j_store.upsert_nodes(crowd + few)
    probe = vectors[0]
    mine = np.array([vector for index, vector in enumerate(vectors[380:]) if index % 2 == 0])
    cosines = mine @ probe / np.linalg.norm(mine, axis=1) / np.linalg.norm(probe)
    expected = [f"n{2 * index}" for index in np.argsort(-cosines)[:5]]
    for _ in range(2):
        hits = await neo4j_store.vector_search("few", probe.tolist(), kind="Chunk", k=5, filters={"even": True})
        assert [hit.node.id for hit in hits] == expected
        assert [hit.score for hit in hits] == pytest.approx(sorted(cosines, reverse=True)[:5], abs=1e-6)
