"""Records read back exactly as written, whatever JSON their properties hold."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnemoflow.memory import NodeRecord
from mnemoflow.memory.protocol import GraphStore
from tests.conformance.helpers import chunk, link

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
property_maps = st.dictionaries(st.text(min_size=1, max_size=20), json_values, max_size=6)
conformance = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@conformance
@given(properties=property_maps, text=st.text(max_size=300))
async def test_node_properties_round_trip(store: GraphStore, namespace: str, properties: dict[str, Any], text: str) -> None:
    node = NodeRecord(id="n1", namespace=namespace, kind="Document", properties=properties, text=text)
    await store.upsert_nodes([node])
    [read] = await store.get_nodes(namespace, ["n1"])
    assert read is not None
    assert read.properties == properties
    assert read.text == text
    assert read.kind == "Document" and read.namespace == namespace


async def test_large_strings_and_float_edges_round_trip(store: GraphStore, namespace: str) -> None:
    properties = {
        "big": "é☃𝄞" * 200_000,
        "floats": [0.1, -0.0, 1e308, 5e-324, math.pi],
        "nested": [[1, [2, [3, ["deep"]]]], {"k": [None, True]}],
    }
    await store.upsert_nodes([NodeRecord(id="big", namespace=namespace, kind="Document", properties=properties)])
    [read] = await store.get_nodes(namespace, ["big"])
    assert read is not None and read.properties == properties


async def test_embedding_and_timestamps_round_trip(store: GraphStore, namespace: str) -> None:
    node = chunk(namespace, "c1", "the whale surfaced")
    await store.upsert_nodes([node])
    [read] = await store.get_nodes(namespace, ["c1"])
    assert read is not None
    assert read.embedding == node.embedding
    assert read.created_at is not None and read.created_at == read.updated_at
    assert read.created_at.tzinfo is not None


async def test_get_nodes_keeps_input_order_with_gaps(store: GraphStore, namespace: str) -> None:
    await store.upsert_nodes([chunk(namespace, "a"), chunk(namespace, "b")])
    read = await store.get_nodes(namespace, ["b", "missing", "a", "b"])
    assert [None if node is None else node.id for node in read] == ["b", None, "a", "b"]


async def test_relationship_properties_round_trip(store: GraphStore, namespace: str) -> None:
    await store.upsert_nodes([chunk(namespace, "a"), chunk(namespace, "b")])
    relationship = link(namespace, "a", "b", weight=0.25, tags=["x", {"y": None}])
    await store.upsert_relationships([relationship])
    subgraph = await store.neighbourhood(namespace, "a")
    [read] = subgraph.relationships
    assert read.id == relationship.id
    assert read.properties == {"weight": 0.25, "tags": ["x", {"y": None}]}
    assert (read.source_id, read.target_id, read.type) == ("a", "b", "NEXT")
