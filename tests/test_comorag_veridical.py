"""ComoRAG's veridical layer as HippoRAG 2 builds it: the whole book's graph, its weights, the seeds and the ranking.

The book is written as the ingestion writes it (:func:`~mnemoflow.nodes.comorag.knowledge.build_graph_records`),
so it is also a book indexed before the graph was read this way: nothing is added to answer from it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import mnemoflow.nodes.comorag.qa  # noqa: F401  (registers the comorag.* QA nodes)
from mnemoflow.graphs import load_graph, run_graph, with_node_config
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import NodeRecord, RelationshipRecord
from mnemoflow.nodes.comorag.knowledge import build_graph_records
from mnemoflow.nodes.comorag.model import book_record_id, chunk_id, entity_id
from mnemoflow.nodes.comorag.pagerank import BookGraph, entity_seeds, personalized_pagerank, read_book_graph
from mnemoflow.settings import Settings, StoreSettings
from tests.conftest import EMBEDDER
from tests.support.comorag_book import answer
from tests.support.openai_server import Rule, ScriptedOpenAIServer

BOOK = "harbour"
CHUNKS = [
    "Ivo Brand hired Lena Fisk at the quay.",
    "Lena Fisk sailed to Port Vey, traded in Port Vey and wintered at Port Vey.",
    "The lighthouse of Port Vey burned while the Vey harbour froze.",
    "Ivo Brand counted crates.",
    "Ivo Brand mended nets.",
    "Ivo Brand paid the crew.",
    "Ivo Brand slept late.",
    "Ivo Brand sang at dusk.",
    "Ivo Brand rowed home.",
]
EXTRACTIONS: list[tuple[list[str], list[list[str]]]] = [
    (["Ivo Brand", "Lena Fisk"], [["Ivo Brand", "hired", "Lena Fisk"]]),
    (
        ["Lena Fisk", "Port Vey"],
        [["Lena Fisk", "sailed to", "Port Vey"], ["Lena Fisk", "traded in", "Port Vey"], ["Lena Fisk", "wintered at", "Port Vey"]],
    ),
    (["Port Vey", "Vey harbour"], []),
    *[(["Ivo Brand"], [])] * 6,
]
SYNONYM_SCORE = 0.9
QUESTION = "Who was hired at the quay?"
HIRED = "Ivo Brand hired Lena Fisk"


async def write_book(store: GraphStore, namespace: str) -> None:
    """The book's Book, Chunk, Entity and Fact records and links, as ``comorag-ingest`` writes them."""
    ids = [chunk_id(namespace, BOOK, order) for order in range(len(CHUNKS))]
    graph = build_graph_records(namespace, BOOK, ids, EXTRACTIONS)
    book = book_record_id(namespace, BOOK)
    properties = {"book_id": BOOK, "title": "Harbour", "chunks": len(CHUNKS), "window": 3}
    nodes = [NodeRecord(id=book, namespace=namespace, kind="Book", text="Harbour", properties=properties)]
    nodes += [
        NodeRecord(
            id=node_id, namespace=namespace, kind="Chunk", text=text, embedding=EMBEDDER.embed_one(text),
            properties={"book_id": BOOK, "order": order, "tokens": len(text.split())},
        )
        for order, (node_id, text) in enumerate(zip(ids, CHUNKS, strict=True))
    ]  # fmt: skip
    nodes += [record.model_copy(update={"embedding": EMBEDDER.embed_one(record.text or "")}) for record in graph.entities + graph.facts]
    links = [RelationshipRecord(namespace=namespace, type="PART_OF", source_id=node_id, target_id=book) for node_id in ids]
    links += [RelationshipRecord(namespace=namespace, type="NEXT", source_id=a, target_id=b) for a, b in zip(ids, ids[1:], strict=False)]
    links += graph.relationships
    port, harbour = entity_id(namespace, BOOK, "Port Vey"), entity_id(namespace, BOOK, "Vey harbour")
    links.append(
        RelationshipRecord(namespace=namespace, type="SYNONYM", source_id=port, target_id=harbour, properties={"score": SYNONYM_SCORE})
    )
    await store.upsert_nodes(nodes)
    await store.upsert_relationships(links)


def entity(namespace: str, name: str) -> str:
    return entity_id(namespace, BOOK, name)


def chunk(namespace: str, order: int) -> str:
    return chunk_id(namespace, BOOK, order)


async def book_graph(store: GraphStore, namespace: str) -> BookGraph:
    return await read_book_graph(store, namespace, [chunk(namespace, order) for order in range(len(CHUNKS))])


async def test_the_whole_books_graph_has_hipporag_2s_edges_and_weights(store: GraphStore, namespace: str) -> None:
    await write_book(store, namespace)
    graph = await book_graph(store, namespace)
    ivo, lena, port, harbour = (entity(namespace, name) for name in ("Ivo Brand", "Lena Fisk", "Port Vey", "Vey harbour"))
    assert set(graph.entities) == {ivo, lena, port, harbour} and len(graph.facts) == 4
    assert graph.nodes == [chunk(namespace, order) for order in range(len(CHUNKS))] + list(graph.entities)

    def weight(left: str, right: str) -> float | None:
        return graph.edges.get((left, right) if left < right else (right, left))

    assert weight(ivo, lena) == 1.0  # one fact links them
    assert weight(lena, port) == 3.0  # three facts: the co-occurrence count
    assert weight(port, harbour) == SYNONYM_SCORE  # the synonym's cosine
    assert weight(chunk(namespace, 2), port) == weight(chunk(namespace, 2), harbour) == 1.0  # mentions weigh 1
    assert weight(ivo, port) is None and weight(chunk(namespace, 2), ivo) is None
    mentions = sum(len(names) for names, _ in EXTRACTIONS)
    assert len(graph.edges) == 3 + mentions  # the three entity pairs, then one edge per mention


async def test_the_seeds_are_the_kept_facts_mean_scores_over_each_entitys_chunk_count(store: GraphStore, namespace: str) -> None:
    await write_book(store, namespace)
    graph = await book_graph(store, namespace)
    fact_of = {f"{graph.entities[s].text} {graph.entities[o].text}": fact for fact, (s, o) in graph.facts.items()}
    hired, sailed = fact_of["Ivo Brand Lena Fisk"], next(fact for fact, ends in graph.facts.items() if ends[1] == entity(namespace, "Port Vey"))
    ivo, lena, port = (entity(namespace, name) for name in ("Ivo Brand", "Lena Fisk", "Port Vey"))
    seeds = entity_seeds([(hired, 1.0), (sailed, 0.6)], graph, top_k=5)
    # Ivo: 1.0 over 7 chunks; Lena: the mean of 1.0 and 0.6 over 2 chunks; Port Vey: 0.6 over 2 chunks
    assert seeds == pytest.approx({ivo: 1.0 / 7, lena: 0.8 / 2, port: 0.6 / 2})
    assert entity_seeds([(hired, 1.0), (sailed, 0.6)], graph, top_k=2) == pytest.approx({ivo: 1.0 / 7, lena: 0.8 / 2})
    assert entity_seeds([("no-such-fact", 1.0)], graph, top_k=5) == {}


def two_hop_ranking(subgraphs: list[Any], seeds: dict[str, float], chunks: list[str]) -> list[str]:
    """What the retrieval ran before: PageRank over the entities' two-hop neighbourhood, facts as nodes."""
    nodes = {node.id for graph in subgraphs for node in graph.nodes} | set(chunks)
    edges = {
        (link.source_id, link.target_id): float(link.properties.get("score", 1.0))
        for graph in subgraphs
        for link in graph.relationships
    }
    ranks = personalized_pagerank(sorted(nodes), edges, seeds, 0.5)
    return sorted(chunks, key=lambda node: (-ranks.get(node, 0.0), node))


@pytest.fixture
def server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer() as running:
        yield running


def keep_the_hiring(body: dict[str, Any]) -> dict[str, list[int]]:
    """The fact filter keeps the numbered fact that says who hired whom."""
    listed = re.findall(r"^(\d+)\. (.*)$", body["messages"][-1]["content"], re.MULTILINE)
    return {"keep": [int(number) for number, fact in listed if fact == HIRED]}


async def test_pagerank_over_the_whole_book_reaches_a_chunk_the_two_hop_graph_never_did(
    store: GraphStore, namespace: str, server: ScriptedOpenAIServer, tmp_path: Path
) -> None:
    """The kept fact seeds Ivo Brand and Lena Fisk; the chunk about Port Vey mentions neither. Over the whole graph
    it is two steps from Lena Fisk (three shared facts, then a mention) and ranks third, after the chunks naming the
    seeds; in the two-hop graph around the seeds (facts as nodes) it is three steps away, never reached, and a chunk
    about Ivo takes its place."""
    await write_book(store, namespace)
    server.script(Rule(system="recognition memory", respond=keep_the_hiring))
    server.script(Rule(system="careful reader", json=answer("Lena Fisk")))
    retrieval = {"ver_top_k": 3, "sem_top_k": 1, "epi_top_k": 1}
    graph = with_node_config(load_graph("comorag-qa"), {"retrieve": retrieval})
    before = {type_: await store.count_relationships(namespace, type_) for type_ in ("MENTIONS", "SYNONYM", "SUBJECT", "OBJECT")}
    result = await run_graph(
        graph,
        {"book_id": BOOK, "question": QUESTION, "max_cycles": 0, "encode_first": False},
        store=store, embedder=EMBEDDER, llm=server.gateway(), namespace=namespace, checkpointer=None,
        settings=Settings(store=StoreSettings(backend="sqlite", sqlite_path=tmp_path / "memory.db")),
    )  # fmt: skip
    assert result.state["final_answer"] == "Lena Fisk"
    veridical = result.state["evidence"]["veridical"]
    by_rank = [item.id for item in sorted(veridical, key=lambda item: -item.score)]
    assert by_rank == [chunk(namespace, 0), chunk(namespace, 1), chunk(namespace, 2)]
    [_, prompt] = [request["body"]["messages"][-1]["content"] for request in server.requests if request["path"].endswith("/completions")]
    assert prompt.startswith("### Detail Chunks\n" + "\n".join(CHUNKS[:3]) + "\n\n### Semantic Summary")  # narrative order

    book = await book_graph(store, namespace)
    seeds = entity_seeds([(fact, 1.0) for fact, ends in book.facts.items() if ends[0] == entity(namespace, "Ivo Brand")], book, 5)
    assert seeds == pytest.approx({entity(namespace, "Ivo Brand"): 1 / 7, entity(namespace, "Lena Fisk"): 1 / 2})
    local = [
        await store.neighbourhood(
            namespace, seed, depth=2, relationship_types=["MENTIONS", "SYNONYM", "SUBJECT", "OBJECT", "EXTRACTED_FROM"],
            direction="both", include_embeddings=False,
        )
        for seed in seeds
    ]  # fmt: skip
    old = two_hop_ranking(local, seeds, book.chunks)
    assert chunk(namespace, 2) not in {node.id for graph in local for node in graph.nodes}
    # there the three facts' nodes lead to the chunk that states them first, a chunk about Ivo comes third, and the
    # chunk about Port Vey, unreached, last
    assert old[:2] == [chunk(namespace, 1), chunk(namespace, 0)] and old[-1] == chunk(namespace, 2)
    assert old[2] in {chunk(namespace, order) for order in range(3, len(CHUNKS))}
    after = {type_: await store.count_relationships(namespace, type_) for type_ in before}
    assert after == before  # the graph is read from the index as the ingestion wrote it; nothing is added


async def test_without_a_kept_fact_the_dense_ranking_stands_in(
    sqlite_store: GraphStore, namespace: str, server: ScriptedOpenAIServer, tmp_path: Path
) -> None:
    await write_book(sqlite_store, namespace)
    server.script(Rule(system="recognition memory", json={"keep": []}))
    server.script(Rule(system="careful reader", json=answer("*")))
    graph = with_node_config(load_graph("comorag-qa"), {"retrieve": {"ver_top_k": 2}})
    result = await run_graph(
        graph,
        {"book_id": BOOK, "question": "Who sang at dusk?", "max_cycles": 0, "encode_first": False},
        store=sqlite_store, embedder=EMBEDDER, llm=server.gateway(), namespace=namespace, checkpointer=None,
        settings=Settings(store=StoreSettings(backend="sqlite", sqlite_path=tmp_path / "memory.db")),
    )  # fmt: skip
    dense = await sqlite_store.vector_search(namespace, EMBEDDER.embed_one("Who sang at dusk?"), kind="Chunk", k=2)
    assert {item.id for item in result.state["evidence"]["veridical"]} == {hit.node.id for hit in dense}
    assert chunk(namespace, 7) in {hit.node.id for hit in dense}
