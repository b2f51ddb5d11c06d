"""No operation in one namespace ever returns or changes a record of another."""

from __future__ import annotations

import uuid

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mnemoflow.memory.protocol import GraphStore
from tests.conformance.helpers import chunk, link
from tests.conftest import EMBEDDER

namespaces = st.text(st.characters(codec="utf-8", exclude_categories=["Cc", "Cs", "Zl", "Zp"]), min_size=1, max_size=12).filter(
    lambda value: value.strip() != "" and value.isprintable()
)
words = st.sampled_from(["whale", "sea", "harpoon", "inn", "deck", "storm", "captain", "rope"])
texts = st.lists(words, min_size=1, max_size=5).map(" ".join)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    first=namespaces,
    second=namespaces,
    first_texts=st.lists(texts, min_size=1, max_size=6),
    second_texts=st.lists(texts, max_size=3),
    query=texts,
)
async def test_no_operation_crosses_namespaces(
    store: GraphStore, first: str, second: str, first_texts: list[str], second_texts: list[str], query: str
) -> None:
    assume(first != second)
    example = uuid.uuid4().hex[:8]  # fixtures are shared by all examples; keep each example's data apart
    a, b = f"{example}{first}", f"{example}{second}"
    ids = [f"n{index}" for index in range(len(first_texts))]
    await store.upsert_nodes([chunk(a, node_id, text) for node_id, text in zip(ids, first_texts, strict=True)])
    await store.upsert_relationships([link(a, left, right) for left, right in zip(ids, ids[1:], strict=False)])
    # the second namespace reuses some of the same ids on purpose
    await store.upsert_nodes([chunk(b, f"n{index}", text) for index, text in enumerate(second_texts)])
    own = {f"n{index}" for index in range(len(second_texts))}

    read = await store.get_nodes(b, ids)
    assert all(node is None or (node.namespace == b and node.id in own) for node in read)
    for hit in await store.vector_search(b, EMBEDDER.embed_one(query), kind="Chunk", k=20):
        assert hit.node.namespace == b
    for hit in await store.keyword_search(b, query, k=20):
        assert hit.node.namespace == b
    subgraph = await store.neighbourhood(b, ids[0], depth=3)
    assert all(node.namespace == b for node in subgraph.nodes)
    assert all(relationship.namespace == b for relationship in subgraph.relationships)
    assert await store.count_nodes(b) == len(second_texts)
    assert await store.count_relationships(b) == 0

    await store.delete_nodes(b, ids)
    assert await store.count_nodes(a) == len(first_texts)
    assert await store.count_relationships(a) == len(ids) - 1
    assert [node.namespace if node else None for node in await store.get_nodes(a, ids)] == [a] * len(ids)
