"""ComoRAG ingestion: chunking, window sizes, clustering, and the three-layer index on both stores."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mnemoflow.nodes.comorag.ingest as comorag_ingest
from mnemoflow.errors import ConfigError
from mnemoflow.graphs import load_graph, run_graph, with_node_config
from mnemoflow.llm import LLM, OpenAIBackend, ResponseCache
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.nodes.comorag.agents import EPISODIC_SYSTEM, NER_SYSTEM, SEMANTIC_SYSTEM, TRIPLES_SYSTEM, Triples
from mnemoflow.nodes.comorag.chunking import chunk_text, count_tokens, episode_window
from mnemoflow.nodes.comorag.clustering import cluster_level, reduce, require_umap, soft_clusters
from mnemoflow.nodes.comorag.knowledge import synonym_pairs
from mnemoflow.nodes.comorag.model import book_record_id, chunk_id, entity_id
from mnemoflow.settings import LLMSettings, Settings, StoreSettings
from tests.conftest import EMBEDDER, offline_llm
from tests.support.openai_server import Rule, ScriptedOpenAIServer
from tests.test_cli import run as run_cli

BOOK = Path(__file__).parents[1] / "nodes" / "comorag" / "data" / "the-salt-road.txt"
INDEX_KINDS = ("Book", "Chunk", "Entity", "Fact", "SemanticSummary", "EpisodicSummary")
INDEX_TYPES = ("PART_OF", "NEXT", "MENTIONS", "SYNONYM", "SUBJECT", "OBJECT", "EXTRACTED_FROM", "SUMMARIZES", "COVERS")
CHUNK_TOKENS = 256


def opening(words: int = 1500) -> str:
    """The first paragraphs of the bundled story, about ``words`` words."""
    kept: list[str] = []
    for paragraph in BOOK.read_text(encoding="utf-8").split("\n\n"):
        if sum(len(p.split()) for p in kept) >= words:
            break
        kept.append(paragraph)
    return "\n\n".join(kept)


# -- chunking, windows, clustering ------------------------------------------------------------------------


def test_chunks_respect_the_budget_and_keep_every_word() -> None:
    text = opening()
    chunks = chunk_text(text, 128)
    assert len(chunks) > 5
    assert all(count_tokens(chunk) <= 128 for chunk in chunks)
    assert " ".join(" ".join(chunks).split()) == " ".join(text.split())
    assert chunk_text(text) == chunk_text(text)  # deterministic
    assert chunk_text("") == []


def test_a_long_sentence_is_cut_at_words_and_paragraphs_stay_apart() -> None:
    assert chunk_text("word " * 30, 10) == ["word " * 9 + "word"] * 3
    assert chunk_text("One two.\n\nThree four.", 100) == ["One two.\n\nThree four."]
    assert chunk_text("One two three. Four five six.", 4) == ["One two three.", "Four five six."]
    with pytest.raises(ValueError):
        chunk_text("text", 0)


@pytest.mark.parametrize(
    ("chunks", "window"),
    [(0, 2), (1, 2), (5, 2), (6, 3), (20, 3), (21, 5), (50, 5), (51, 8), (100, 8), (101, 10), (200, 10),
     (201, 15), (1000, 19), (5000, 20)],
)  # fmt: skip
def test_episode_window(chunks: int, window: int) -> None:
    assert episode_window(chunks) == window


def blobs(seed: int = 0) -> np.ndarray[Any, Any]:
    generator = np.random.default_rng(seed)
    centres = generator.normal(size=(3, 32)) * 10
    return np.vstack([centre + generator.normal(scale=0.1, size=(10, 32)) for centre in centres])


def test_soft_clusters_find_separated_groups() -> None:
    clusters = soft_clusters(blobs()[:, :5])
    assert sorted(sorted(row for row, _ in cluster) for cluster in clusters) == [
        list(range(0, 10)),
        list(range(10, 20)),
        list(range(20, 30)),
    ]
    assert soft_clusters(np.zeros((2, 4))) == [[(0, 1.0), (1, 1.0)]]
    assert soft_clusters(np.zeros((0, 4))) == []


def test_cluster_level_covers_every_row_and_is_deterministic() -> None:
    vectors = blobs()
    clusters = cluster_level(vectors)
    assert clusters == cluster_level(vectors)
    assert {row for cluster in clusters for row in cluster.members} == set(range(30))
    for cluster in clusters:
        assert len(cluster.members) == len(cluster.memberships)
        assert list(cluster.memberships) == sorted(cluster.memberships, reverse=True)
        groups = {row // 10 for row in cluster.members}
        assert len(groups) == 1  # never mixes well-separated groups
    assert len(cluster_level(vectors[:1])) == 1


@pytest.mark.slow  # numba compiles UMAP on its first fit in a process: about 12 s, once
def test_umap_reduction_follows_the_reference_and_is_seeded() -> None:
    vectors = blobs()
    reduced = reduce(vectors, reduction="umap")
    assert reduced.shape == (30, 10)  # min(10, n - 2) dimensions
    assert np.array_equal(reduced, reduce(vectors, reduction="umap"))  # seeded: the same vectors, the same points
    assert reduce(vectors[:6], reduction="umap").shape == (6, 4)
    assert np.array_equal(reduce(vectors[:2], reduction="umap"), vectors[:2] - vectors[:2].mean(axis=0))  # too few to reduce
    clusters = cluster_level(vectors[::2], reduction="umap")  # five of each group (fewer mixtures to fit)
    assert {row for cluster in clusters for row in cluster.members} == set(range(15))
    assert all(len({row // 5 for row in cluster.members}) == 1 for cluster in clusters)  # never mixes the groups


def test_umap_without_its_extra_is_refused_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util
    import sys

    monkeypatch.setitem(sys.modules, "umap", None)  # importing it raises ImportError, as when it is not installed
    with pytest.raises(ConfigError, match=r"reduction 'umap' needs the umap extra.*pip install 'mnemoflow\[umap\]'"):
        cluster_level(blobs(), reduction="umap")
    cluster_level(blobs()[:5])  # PCA needs no extra
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: None if name == "umap" else real_find_spec(name, *rest))
    with pytest.raises(ConfigError, match="needs the umap extra"):
        require_umap()


def test_synonym_pairs_and_malformed_triples() -> None:
    names = ["Sea of Glass", "the Sea of Glass", "Nima Orsk"]
    pairs = synonym_pairs(np.array([EMBEDDER.embed_one(name) for name in names]))
    assert [(left, right) for left, right, _ in pairs] == [(0, 1)]
    parsed = Triples.model_validate({"triples": [["a", "b", "c"], ["x", "y"], "z", ["a", "", "c"], [1, "is", 2]]})
    assert parsed.triples == [["a", "b", "c"], ["1", "is", "2"]]


# -- ingestion on both stores --------------------------------------------------------------------------------

ENTITIES = ["Nima Orsk", "Hollin Pan", "Sea of Glass", "the Sea of Glass"]
TRIPLES = [
    ["Nima Orsk", "lives in", "Hollin Pan"],
    ["Nima Orsk", "is missing an object"],
    ["Sea of Glass", "lies beyond", "Hollin Pan"],
]


@pytest.fixture
def server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer() as running:
        running.script(
            Rule(system=NER_SYSTEM, json={"named_entities": ENTITIES}, latency=0.05),
            Rule(system=TRIPLES_SYSTEM, json={"triples": TRIPLES}),
            Rule(system=SEMANTIC_SYSTEM, replies=[f"Summary {i}: Nima Orsk counts the years in Hollin Pan." for i in range(200)]),
            Rule(
                system=EPISODIC_SYSTEM,
                replies=[f"Episode {i}: the caravan returns and the debt is read out." for i in range(200)],
            ),
        )
        yield running


def cached_gateway(server: ScriptedOpenAIServer, tmp_path: Path) -> LLM:
    config = LLMSettings(cache=True, cache_path=tmp_path / "llm-cache.db", initial_backoff=0.0, max_backoff=0.01)
    backend = OpenAIBackend(base_url=server.base_url, api_key="test", timeout=config.request_timeout)
    return LLM(backend, config, cache=ResponseCache(config.cache_path))


async def ingest(store: GraphStore, llm: LLM, namespace: str, tmp_path: Path, text: str, **values: Any) -> Any:
    settings = Settings(store=StoreSettings(sqlite_path=tmp_path / "memory.db"))
    result = await run_graph(
        load_graph("comorag-ingest"),
        {"book_id": "salt", "title": "The Salt Road", "text": text, "chunk_tokens": CHUNK_TOKENS, **values},
        store=store,
        embedder=EMBEDDER,
        llm=llm,
        settings=settings,
        checkpointer=None,
        namespace=namespace,
    )
    assert result.status == "completed"
    return result


async def counts(store: GraphStore, namespace: str) -> dict[str, int]:
    found = {kind: await store.count_nodes(namespace, kind) for kind in INDEX_KINDS}
    found.update({type_: await store.count_relationships(namespace, type_) for type_ in INDEX_TYPES})
    return found


async def linked(store: GraphStore, namespace: str, node_id: str, type_: str, direction: str, kind: str) -> list[str]:
    around = await store.neighbourhood(namespace, node_id, relationship_types=[type_], direction=direction)  # type: ignore[arg-type]
    return [node.id for node in around.nodes if node.kind == kind and node.id != node_id]


@pytest.mark.slow
async def test_ingest_builds_the_three_layers_once(
    store: GraphStore, namespace: str, server: ScriptedOpenAIServer, tmp_path: Path
) -> None:
    text = opening()
    expected_chunks = chunk_text(text, CHUNK_TOKENS)
    n = len(expected_chunks)
    window = episode_window(n)
    llm = cached_gateway(server, tmp_path)
    try:
        result = await ingest(store, llm, namespace, tmp_path, text)
        state = result.state
        levels, episodes = state["semantic_levels"], math.ceil(n / window)
        assert state["chunks"] == expected_chunks and state["window"] == window and state["episodes"] == episodes
        multi_chunk_windows = sum(1 for start in range(0, n, window) if min(start + window, n) - start > 1)
        assert server.count("/chat/completions") == 2 * n + sum(levels) + multi_chunk_windows
        assert server.max_concurrent > 1  # calls per chunk run concurrently

        found = await counts(store, namespace)
        assert found["Book"] == 1 and found["Chunk"] == n and found["PART_OF"] == n
        assert found["Entity"] == 4 and found["MENTIONS"] == 4 * n
        assert found["Fact"] == 2 and found["SUBJECT"] == 2 and found["OBJECT"] == 2 and found["EXTRACTED_FROM"] == 2 * n
        assert found["SemanticSummary"] == sum(levels) and levels[0] >= 1 and (levels[-1] == 1 or len(levels) == 5)
        assert found["EpisodicSummary"] == episodes and found["COVERS"] == n
        assert found["NEXT"] == (n - 1) + (episodes - 1)

        book = (await store.get_nodes(namespace, [book_record_id(namespace, "salt")]))[0]
        generation = state["generation"]
        assert book is not None and book.properties == {
            "book_id": "salt",
            "title": "The Salt Road",
            "chunks": n,
            "window": window,
            "generation": generation,
        }
        assert len(generation) == 12 and state["superseded"] == 0
        ids = [chunk_id(namespace, "salt", order, generation) for order in range(n)]
        assert ids == state["chunk_ids"]
        for order, node_id in enumerate(ids):
            if order + 1 < n:
                assert await linked(store, namespace, node_id, "NEXT", "out", "Chunk") == [ids[order + 1]]
            assert len(await linked(store, namespace, node_id, "COVERS", "in", "EpisodicSummary")) == 1
            assert len(await linked(store, namespace, node_id, "MENTIONS", "out", "Entity")) == 4
            assert len(await linked(store, namespace, node_id, "EXTRACTED_FROM", "in", "Fact")) == 2
        level_one = await store.vector_search(
            namespace, EMBEDDER.embed_one("Nima"), kind="SemanticSummary", k=100, filters={"book_id": "salt", "level": 1}
        )
        assert len(level_one) == levels[0]
        covered: set[str] = set()
        for hit in level_one:
            members = await linked(store, namespace, hit.node.id, "SUMMARIZES", "out", "Chunk")
            assert members
            covered.update(members)
        assert covered == set(ids)

        sea, the_sea, nima = (
            entity_id(namespace, "salt", name, generation) for name in ("Sea of Glass", "the Sea of Glass", "Nima Orsk")
        )
        assert await linked(store, namespace, sea, "SYNONYM", "both", "Entity") == [the_sea]
        assert await linked(store, namespace, nima, "SYNONYM", "both", "Entity") == []
        nima_node = (await store.get_nodes(namespace, [nima]))[0]
        assert nima_node is not None and nima_node.properties["num_chunks"] == n and nima_node.properties["book_id"] == "salt"
        facts = await linked(store, namespace, nima, "SUBJECT", "in", "Fact")
        assert len(facts) == 1
        fact = (await store.get_nodes(namespace, facts))[0]
        assert fact is not None and fact.text == "Nima Orsk lives in Hollin Pan"

        before, requests = found, server.count("/chat/completions")
        again = await ingest(store, llm, namespace, tmp_path, text)
        assert server.count("/chat/completions") == requests  # everything came from the cache
        assert again.llm_usage["cache_hits"] == again.llm_calls > 0
        assert await counts(store, namespace) == before
        assert again.state["semantic_levels"] == levels
        assert again.state["generation"] == generation and again.state["superseded"] == 0
    finally:
        await llm.aclose()


async def test_ingest_without_a_model_or_a_knowledge_graph(store: GraphStore, namespace: str, tmp_path: Path) -> None:
    text = opening(700)
    result = await ingest(store, offline_llm(), namespace, tmp_path, text, kg=False)
    n = len(chunk_text(text, CHUNK_TOKENS))
    assert result.offline_model and result.state["entity_ids"] == [] and result.state["facts"] == 0
    found = await counts(store, namespace)
    assert found["Chunk"] == n and found["Entity"] == 0 and found["Fact"] == 0
    assert found["EpisodicSummary"] == math.ceil(n / episode_window(n)) and found["SemanticSummary"] >= 1


@pytest.mark.slow  # the first UMAP fit of a process compiles it
async def test_umap_reduction_clusters_the_book_and_without_the_extra_stops_before_any_summary(
    store: GraphStore, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = opening(700)
    seen: list[dict[str, Any]] = []
    clustering = comorag_ingest.cluster_level

    def spy(vectors: Any, **options: Any) -> Any:
        seen.append(options)
        return clustering(vectors, **options)

    monkeypatch.setattr(comorag_ingest, "cluster_level", spy)
    graph = with_node_config(load_graph("comorag-ingest"), {"semantic": {"reduction": "umap"}})
    settings = Settings(store=StoreSettings(sqlite_path=tmp_path / "memory.db"))
    values = {"book_id": "salt", "text": text, "chunk_tokens": CHUNK_TOKENS, "kg": False}

    async def run(where: str) -> Any:
        return await run_graph(
            graph,
            values,
            store=store,
            embedder=EMBEDDER,
            llm=offline_llm(),
            settings=settings,
            checkpointer=None,
            namespace=where,
        )

    result = await run(namespace)
    vectors = np.array([EMBEDDER.embed_one(chunk) for chunk in result.state["chunks"]])
    expected = cluster_level(vectors, reduction="umap")
    assert seen and all(options["reduction"] == "umap" for options in seen)
    assert result.state["semantic_levels"][0] == len(expected)
    level_one = await store.vector_search(
        namespace, EMBEDDER.embed_one("Nima"), kind="SemanticSummary", k=100, filters={"level": 1}
    )
    members = [sorted(await linked(store, namespace, hit.node.id, "SUMMARIZES", "out", "Chunk")) for hit in level_one]
    ids = result.state["chunk_ids"]
    assert sorted(members) == sorted(sorted(ids[row] for row in cluster.members) for cluster in expected)

    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: None if name == "umap" else real_find_spec(name, *rest))
    with pytest.raises(ConfigError, match="needs the umap extra"):
        await run(f"{namespace}-without")
    assert await store.count_nodes(f"{namespace}-without", "Chunk") == len(ids)
    assert await store.count_nodes(f"{namespace}-without", "SemanticSummary") == 0  # refused before any summary


async def test_offline_ingestion_extracts_a_graph(store: GraphStore, namespace: str, tmp_path: Path) -> None:
    result = await ingest(store, offline_llm(), namespace, tmp_path, opening(800))
    assert result.llm_calls > 0
    found = await counts(store, namespace)
    assert found["Entity"] > 5 and found["MENTIONS"] >= found["Entity"]
    names = {node.text for node in (await store.get_nodes(namespace, result.state["entity_ids"])) if node is not None}
    assert {"Nima Orsk", "Hollin Pan", "Saba Thorn"} <= names
    assert "The" not in names and "She" not in names


def test_cli_refuses_umap_without_its_extra_before_any_model_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from typer.testing import CliRunner

    from mnemoflow.cli import app

    book = tmp_path / "salt-road.txt"
    book.write_text(opening(200), encoding="utf-8")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: None if name == "umap" else real_find_spec(name, *rest))
    monkeypatch.chdir(tmp_path)
    arguments = ["ingest", "comorag", str(book), "--book", "salt", "--reduction", "umap", "--store", "sqlite"]
    result = CliRunner().invoke(app, arguments, env={"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"})
    assert result.exit_code == 2 and "reduction 'umap' needs the umap extra" in result.output
    assert not (tmp_path / ".mnemoflow").exists()  # stopped before a store was opened or a model asked


@pytest.mark.subprocess
@pytest.mark.slow
def test_cli_ingests_then_finds_everything_in_the_cache(server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    book = tmp_path / "salt-road.txt"
    book.write_text(opening(600), encoding="utf-8")
    arguments = ("ingest", "comorag", str(book), "--book", "salt", "--store", "sqlite", "--namespace", "cli")
    environment = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "test", "MNEMOFLOW_LOG_LEVEL": "info"}
    first = run_cli(*arguments, cwd=tmp_path, **environment)
    assert first.returncode == 0, first.stderr
    n = len(chunk_text(opening(600)))
    assert f"book 'salt': {n} chunks" in first.stdout and "entities: 4, facts: 2" in first.stdout
    assert "comorag.progress" in first.stderr and "episodic summaries: 1" in first.stdout
    requests = server.count("/chat/completions")
    assert requests > 0 and f"{requests} requests" in first.stdout
    second = run_cli(*arguments, cwd=tmp_path, **environment)
    assert second.returncode == 0, second.stderr
    assert server.count("/chat/completions") == requests and "0 requests" in second.stdout
    assert second.stdout.split("LLM calls")[0] == first.stdout.split("LLM calls")[0]
    missing = run_cli("ingest", "comorag", str(tmp_path / "nope.txt"), "--book", "x", cwd=tmp_path)
    assert missing.returncode == 2 and "cannot read" in missing.stderr
