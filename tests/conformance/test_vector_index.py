"""Vector search as the contract states it, on kinds small and large: vectors only when asked, exact cosine scores,
recall against exact search where a backend may use an approximate index, and an index that follows every write.

Expected answers are computed here with numpy in float64, never read back from a backend.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mnemoflow.memory import NodeRecord, ScoredNode
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.sqlite import vectors as sqlite_vectors
from tests.conformance.helpers import chunk
from tests.conftest import EMBEDDER, new_store

DIMENSION = EMBEDDER.dimension
LARGE = 2000
"""Vectors in the large kind: past the size where a backend may switch from a scan to an approximate index."""
RARE = (17, LARGE // 2, LARGE - 1)
"""The three nodes of the large kind a ``rare`` filter keeps."""
QUERIES = 20
APPROXIMATE_FROM = 500
"""Where the large-kind tests make the embedded store switch to its approximate index (its default threshold needs
more vectors than a test should write; Neo4j's vector index is approximate at any size)."""
TOLERANCE = 1e-5
"""Scores are exact cosines; a backend may compute them in float32."""


@pytest.fixture
def approximate(monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded store answers a kind of ``APPROXIMATE_FROM`` vectors or more from its approximate index."""
    monkeypatch.setattr(sqlite_vectors, "EXACT_BELOW", APPROXIMATE_FROM)


def cosines(vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    scores: np.ndarray = (vectors @ query) / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(query))
    return scores


def node_id(index: int) -> str:
    return f"v{index:04d}"


def exact_top(vectors: np.ndarray, query: np.ndarray, k: int, among: np.ndarray | None = None) -> list[str]:
    """Ids of the ``k`` rows of ``vectors`` most similar to ``query``, optionally among the ``among`` rows only."""
    rows = np.arange(len(vectors)) if among is None else among
    scores = cosines(vectors[rows], query)
    return [node_id(int(rows[index])) for index in np.argsort(-scores, kind="stable")[:k]]


def clustered(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` vectors and ``QUERIES`` queries near a 6-dimensional subspace, with norms from 0.2 to 5.

    Neighbours are well separated (an approximate index finds them), and since norms vary, an index that ranks by
    inner product or Euclidean distance instead of cosine gives other neighbours.
    """
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(6, DIMENSION))

    def draw(rows: int, noise: float) -> np.ndarray:
        points = rng.normal(size=(rows, 6)) @ basis + noise * rng.normal(size=(rows, DIMENSION))
        scaled: np.ndarray = points / np.linalg.norm(points, axis=1, keepdims=True) * rng.uniform(0.2, 5.0, size=(rows, 1))
        return scaled

    return draw(count, 0.05), draw(QUERIES, 0.0)


def vector_node(namespace: str, index: int, vector: np.ndarray, **properties: object) -> NodeRecord:
    return NodeRecord(id=node_id(index), namespace=namespace, kind="Chunk", embedding=vector.tolist(), properties=properties)


async def load_large(store: GraphStore, namespace: str, vectors: np.ndarray) -> None:
    """Every node has ``group`` (index mod 10: a filter on it keeps 10%); three also have ``rare``."""
    nodes = [
        vector_node(namespace, index, vector, group=index % 10, **({"rare": True} if index in RARE else {}))
        for index, vector in enumerate(vectors)
    ]
    for start in range(0, len(nodes), 1000):
        await store.upsert_nodes(nodes[start : start + 1000])


def ids(hits: list[ScoredNode]) -> list[str]:
    return [hit.node.id for hit in hits]


async def test_hits_carry_vectors_only_when_asked(store: GraphStore, namespace: str) -> None:
    await store.upsert_nodes(
        [chunk(namespace, name, f"the {name} of the ship", deck=name == "mast") for name in ("mast", "sail", "keel")]
    )
    stored = {node.id: node for node in await store.get_nodes(namespace, ["mast", "sail", "keel"]) if node is not None}
    query = EMBEDDER.embed_one("the mast of the ship")

    for filters in (None, {"deck": True}):
        bare = await store.vector_search(namespace, query, kind="Chunk", k=3, filters=filters)
        full = await store.vector_search(namespace, query, kind="Chunk", k=3, filters=filters, include_embeddings=True)
        assert bare[0].node.id == full[0].node.id == "mast"
        assert [hit.node.id for hit in bare] == [hit.node.id for hit in full]
        assert [hit.score for hit in bare] == pytest.approx([hit.score for hit in full], abs=TOLERANCE)
        assert all(hit.node.embedding is None for hit in bare)
        assert all(hit.node == stored[hit.node.id] for hit in full)  # the stored vector, and every other field
        assert all(hit.node == stored[hit.node.id].model_copy(update={"embedding": None}) for hit in bare)
    default = await store.vector_search(namespace, query, kind="Chunk", k=1)
    assert default[0].node.embedding is None
    asked = await store.vector_search(namespace, query, kind="Chunk", k=1, include_embeddings=True)
    assert asked[0].node.embedding == EMBEDDER.embed_one("the mast of the ship")


async def test_scores_are_exact_cosines(store: GraphStore, namespace: str) -> None:
    rng = np.random.default_rng(7)
    query = rng.normal(size=DIMENSION)
    vectors = rng.normal(size=(40, DIMENSION)) * rng.uniform(0.1, 10.0, size=(40, 1))
    vectors[0], vectors[1], vectors[2] = 3 * query, -0.5 * query, query + 0.5 * rng.normal(size=DIMENSION)
    await store.upsert_nodes([vector_node(namespace, index, vector) for index, vector in enumerate(vectors)])

    hits = await store.vector_search(namespace, query.tolist(), kind="Chunk", k=40)
    assert sorted(ids(hits)) == [node_id(index) for index in range(40)]
    exact = dict(zip(map(node_id, range(40)), cosines(vectors, query), strict=True))
    for hit in hits:
        assert hit.score == pytest.approx(exact[hit.node.id], abs=TOLERANCE), hit.node.id
    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)
    assert (ids(hits)[:2], ids(hits)[-1]) == ([node_id(0), node_id(2)], node_id(1))
    assert [hits[0].score, hits[-1].score] == pytest.approx([1.0, -1.0], abs=TOLERANCE)
    top = await store.vector_search(namespace, query.tolist(), kind="Chunk", k=5)
    assert ids(top) == exact_top(vectors, query, 5)


def recall(found: list[str], exact: list[str]) -> float:
    return len(set(found) & set(exact)) / len(exact)


@pytest.mark.usefixtures("approximate")
async def test_a_large_kind_finds_the_exact_neighbours(store: GraphStore, namespace: str) -> None:
    vectors, queries = clustered(LARGE, seed=23)
    await load_large(store, namespace, vectors)
    group = np.flatnonzero(np.arange(LARGE) % 10 == 3)

    plain, grouped = [], []
    for query in queries:
        hits = await store.vector_search(namespace, query.tolist(), kind="Chunk", k=10)
        assert len(hits) == 10
        exact = cosines(vectors, query)
        assert [hit.score for hit in hits] == pytest.approx([exact[int(hit.node.id[1:])] for hit in hits], abs=TOLERANCE)
        assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)
        plain.append(recall(ids(hits), exact_top(vectors, query, 10)))

        in_group = await store.vector_search(namespace, query.tolist(), kind="Chunk", k=10, filters={"group": 3})
        assert len(in_group) == 10 and all(hit.node.properties["group"] == 3 for hit in in_group)
        grouped.append(recall(ids(in_group), exact_top(vectors, query, 10, group)))

        rare = await store.vector_search(namespace, query.tolist(), kind="Chunk", k=10, filters={"rare": True})
        assert ids(rare) == exact_top(vectors, query, 10, np.array(RARE))
    assert sum(plain) / QUERIES >= 0.9, plain
    assert sum(grouped) / QUERIES >= 0.9, grouped
    for filters in (None, {"group": 3}, {"rare": True}):  # asked-for vectors come back on every path
        hits = await store.vector_search(
            namespace, queries[0].tolist(), kind="Chunk", k=10, filters=filters, include_embeddings=True
        )
        assert hits and all(hit.node.embedding == vectors[int(hit.node.id[1:])].tolist() for hit in hits)


@pytest.mark.usefixtures("approximate")
async def test_a_large_kind_follows_writes_updates_and_deletes(
    store: GraphStore, namespace: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    vectors, queries = clustered(LARGE, seed=29)
    await load_large(store, namespace, vectors)
    first, second, third, fourth = (query.tolist() for query in queries[:4])
    assert len(await store.vector_search(namespace, first, kind="Chunk", k=10)) == 10  # builds or warms any index

    await store.upsert_nodes([NodeRecord(id="fresh", namespace=namespace, kind="Chunk", embedding=[2 * x for x in first])])
    hits = await store.vector_search(namespace, first, kind="Chunk", k=10)
    assert hits[0].node.id == "fresh" and hits[0].score == pytest.approx(1.0, abs=TOLERANCE)

    [moved] = exact_top(vectors, queries[1], 1)  # the best match of the second query gets the third query's vector
    vectors[int(moved[1:])] = queries[2]
    await store.upsert_nodes([vector_node(namespace, int(moved[1:]), queries[2], group=int(moved[1:]) % 10)])
    assert ids(await store.vector_search(namespace, third, kind="Chunk", k=1)) == [moved]
    assert moved not in ids(await store.vector_search(namespace, second, kind="Chunk", k=10))

    await store.delete_nodes(namespace, ["fresh"])
    after = await store.vector_search(namespace, first, kind="Chunk", k=10)
    assert "fresh" not in {hit.node.id for hit in after} and len(after) == 10
    assert recall(ids(after), exact_top(vectors, queries[0], 10)) >= 0.9

    # another store object on the same database: what one writes or deletes, the other's next search sees
    uri = request.getfixturevalue("neo4j_uri") if store.backend == "neo4j" else None
    other = new_store(store.backend, neo4j_uri=uri, sqlite_path=tmp_path / "memory.db")
    await other.setup()
    try:
        await other.upsert_nodes(
            [NodeRecord(id="theirs", namespace=namespace, kind="Chunk", embedding=second, properties={"group": 3})]
        )
        assert (await store.vector_search(namespace, second, kind="Chunk", k=1))[0].node.id == "theirs"
        assert (await store.vector_search(namespace, second, kind="Chunk", k=1, filters={"group": 3}))[0].node.id == "theirs"
        await store.upsert_nodes([NodeRecord(id="ours", namespace=namespace, kind="Chunk", embedding=fourth)])
        assert (await other.vector_search(namespace, fourth, kind="Chunk", k=1))[0].node.id == "ours"
        await other.delete_nodes(namespace, ["theirs"])
        assert "theirs" not in {hit.node.id for hit in await store.vector_search(namespace, second, kind="Chunk", k=10)}
    finally:
        await other.close()
    assert await store.count_nodes(namespace, "Chunk") == LARGE + 1
