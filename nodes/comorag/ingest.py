"""ComoRAG ingestion: chunk a book and build its three-layer index in the store.

The nodes run in this order (``graphs/library/comorag-ingest.yaml``): ``comorag.chunk_book`` (the chunks
in reading order), ``comorag.extract_graph`` (entities and facts, when ``kg``), ``comorag.link_synonyms``,
``comorag.summarize_semantic`` (recursive clusters), ``comorag.summarize_episodes`` (the timeline) and
``comorag.publish`` (the switch to the new index, then the removal of the old one).

Every record has a stable id from :mod:`mnemoflow.nodes.comorag.model` and ``book_id`` and ``generation``
properties. The generation fingerprints the ingest's input, so a changed book is written beside the index readers
use, which stays whole until ``comorag.publish`` upserts the Book record (one write: the switch) and deletes what
this ingest did not write. A crash before the switch leaves the previous index in use (the partial new one is
never read, and the next ingest of the book rewrites or deletes it); a crash after it leaves records that no reader
reads and that the next ingest deletes. Every model call is a temperature-0 call the gateway caches, so ingesting
the same book twice leaves the same index and sends no request the second time. Calls per chunk, cluster or window
run concurrently; the gateway caps how many are in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from mnemoflow.errors import ConfigError, NodeError
from mnemoflow.memory.paging import all_nodes
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import NodeRecord, RelationshipRecord
from mnemoflow.nodes.comorag.agents import (
    NamedEntities,
    Triples,
    episodic_messages,
    ner_messages,
    semantic_messages,
    triples_messages,
)
from mnemoflow.nodes.comorag.chunking import chunk_text, count_tokens, episode_window
from mnemoflow.nodes.comorag.clustering import MAX_LEVELS, THRESHOLD, Reduction, cluster_level, require_umap
from mnemoflow.nodes.comorag.knowledge import build_graph_records, synonym_pairs
from mnemoflow.nodes.comorag.model import (
    BOOK,
    CHUNK,
    EPISODIC_SUMMARY,
    INDEX_KINDS,
    SEMANTIC_SUMMARY,
    book_record_id,
    chunk_id,
    episodic_summary_id,
    ingest_generation,
    semantic_summary_id,
)
from mnemoflow.nodes.comorag.state import IngestState
from mnemoflow.nodes.context import RunContext
from mnemoflow.nodes.registry import NoConfig, node

__all__ = ["SemanticConfig", "SummaryConfig", "SynonymConfig", "write_records"]

T = TypeVar("T")
BATCH = 500
"""Records per upsert transaction."""


async def write_records(store: GraphStore, nodes: Sequence[NodeRecord], relationships: Sequence[RelationshipRecord]) -> None:
    """Upsert nodes, then relationships, in batches of :data:`BATCH`."""
    for start in range(0, len(nodes), BATCH):
        await store.upsert_nodes(nodes[start : start + BATCH])
    for start in range(0, len(relationships), BATCH):
        await store.upsert_relationships(relationships[start : start + BATCH])


async def _gather(context: RunContext, step: str, calls: Sequence[Awaitable[T]]) -> list[T]:
    """Await ``calls`` concurrently, reporting each one done (a progress bar) and logging about every tenth."""
    total, done = len(calls), 0
    every = max(1, total // 10)
    context.progress(step, done, total)

    async def tracked(call: Awaitable[T]) -> T:
        nonlocal done
        result = await call
        done += 1
        context.progress(step, done, total)
        if done % every == 0 or done == total:
            context.log.info("comorag.progress", step=step, done=done, total=total)
        return result

    return list(await asyncio.gather(*(tracked(call) for call in calls)))


async def _summary(context: RunContext, messages: list[dict[str, Any]], max_tokens: int) -> tuple[str, list[float]]:
    """A summary and its vector: embedded as soon as it is written, while the model writes the next one (the server
    answers one request at a time, so calls made together queue there, and the embedding leaves the model's
    critical path)."""
    summary = (await context.llm.text(messages, max_tokens=max_tokens)).strip()
    [vector] = await context.embedder.embed([summary])
    return summary, vector


async def _stored_vectors(context: RunContext, ids: list[str], texts: list[str]) -> list[list[float]]:
    """The vectors the store holds for ``ids`` (``chunk_book`` embedded the chunks), embedding only what it lacks."""
    found = await context.store.get_nodes(context.namespace, ids)
    lacking = [index for index, record in enumerate(found) if record is None or not record.embedding]
    embedded = (
        dict(zip(lacking, await context.embedder.embed([texts[index] for index in lacking]), strict=True)) if lacking else {}
    )
    return [embedded[index] if record is None or not record.embedding else record.embedding for index, record in enumerate(found)]


def _rel(context: RunContext, type_: str, source: str, target: str, **properties: Any) -> RelationshipRecord:
    return RelationshipRecord(namespace=context.namespace, type=type_, source_id=source, target_id=target, properties=properties)


@node(
    "comorag.chunk_book",
    state=IngestState,
    reads={"book_id", "text", "chunk_tokens", "kg"},
    writes={"generation", "chunks", "chunk_ids", "window"},
)
async def chunk_book(state: IngestState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """Split the book into token-bounded chunks and store them in reading order (Chunk, NEXT) as a new generation.

    The Book record is not written here: it points readers to an index, so ``comorag.publish`` writes it once the
    index is whole.
    """
    chunks = chunk_text(state.text, state.chunk_tokens)
    if not chunks:
        raise ConfigError(f"book {state.book_id!r} has no text to ingest")
    namespace, book = context.namespace, state.book_id
    generation = ingest_generation(state.text, state.chunk_tokens, state.kg, context.llm.model, context.embedder.model)
    window = episode_window(len(chunks))
    ids = [chunk_id(namespace, book, order, generation) for order in range(len(chunks))]
    vectors = await context.embedder.embed(chunks)
    records = [
        NodeRecord(
            id=node_id,
            namespace=namespace,
            kind=CHUNK,
            text=chunk,
            embedding=vector,
            properties={"book_id": book, "generation": generation, "order": order, "tokens": count_tokens(chunk)},
        )
        for order, (node_id, chunk, vector) in enumerate(zip(ids, chunks, vectors, strict=True))
    ]
    links = [_rel(context, "NEXT", left, right) for left, right in zip(ids, ids[1:], strict=False)]
    await write_records(context.store, records, links)
    context.log.info("comorag.chunked", book=book, chunks=len(chunks), window=window, generation=generation)
    return {"generation": generation, "chunks": chunks, "chunk_ids": ids, "window": window}


@node(
    "comorag.extract_graph",
    state=IngestState,
    reads={"book_id", "generation", "kg", "chunks", "chunk_ids"},
    writes={"entity_ids", "fact_ids", "facts"},
)
async def extract_graph(state: IngestState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """Per chunk, ask the model for named entities, then triples among them; store Entity and Fact records."""
    if not state.kg:
        return {"entity_ids": [], "fact_ids": [], "facts": 0}

    async def extract(passage: str) -> tuple[list[str], list[list[str]]]:
        names = (await context.llm.structured(ner_messages(passage), NamedEntities)).named_entities
        triples = (await context.llm.structured(triples_messages(passage, names), Triples)).triples
        return names, triples

    results = await _gather(context, "extracting entities and facts", [extract(passage) for passage in state.chunks])
    graph = build_graph_records(context.namespace, state.book_id, state.chunk_ids, results, state.generation)
    entity_vectors = await context.embedder.embed([record.text or "" for record in graph.entities])
    fact_vectors = await context.embedder.embed([record.text or "" for record in graph.facts])
    nodes = [
        record.model_copy(update={"embedding": vector}) for record, vector in zip(graph.entities, entity_vectors, strict=True)
    ]
    nodes += [record.model_copy(update={"embedding": vector}) for record, vector in zip(graph.facts, fact_vectors, strict=True)]
    await write_records(context.store, nodes, graph.relationships)
    context.log.info("comorag.graph", entities=len(graph.entities), facts=len(graph.facts))
    return {
        "entity_ids": [record.id for record in graph.entities],
        "fact_ids": [record.id for record in graph.facts],
        "facts": len(graph.facts),
    }


class SynonymConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    threshold: float = Field(0.8, gt=0, le=1, description="Cosine similarity at or above which two names are synonyms.")
    max_neighbours: int = Field(100, ge=1, le=2047, description="Synonyms kept per entity, most similar first.")


@node("comorag.link_synonyms", state=IngestState, reads={"entity_ids"}, writes={"synonyms"}, config=SynonymConfig)
async def link_synonyms(state: IngestState, config: SynonymConfig, context: RunContext) -> dict[str, Any]:
    """Link entities whose name embeddings are similar (SYNONYM {score}), once per pair."""
    if len(state.entity_ids) < 2:
        return {"synonyms": 0}
    found = await context.store.get_nodes(context.namespace, state.entity_ids)
    missing = [node_id for node_id, record in zip(state.entity_ids, found, strict=True) if record is None or not record.embedding]
    if missing:
        raise NodeError(f"{len(missing)} entities of this run are missing from the store or have no embedding")
    vectors = np.array([record.embedding for record in found if record is not None and record.embedding], dtype=np.float64)
    pairs = synonym_pairs(vectors, threshold=config.threshold, max_neighbours=config.max_neighbours)
    ids = state.entity_ids
    links = [_rel(context, "SYNONYM", ids[left], ids[right], score=round(score, 6)) for left, right, score in pairs]
    await write_records(context.store, [], links)
    context.log.info("comorag.synonyms", pairs=len(links))
    return {"synonyms": len(links)}


class SummaryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_tokens: int = Field(500, ge=16, le=8192, description="Longest summary the model may write, in tokens.")


class SemanticConfig(SummaryConfig):
    max_tokens: int = Field(100, ge=16, le=8192, description="Longest cluster summary the model may write, in tokens.")
    max_levels: int = Field(MAX_LEVELS, ge=1, le=10, description="Levels of summaries at most.")
    threshold: float = Field(THRESHOLD, gt=0, lt=1, description="Soft membership threshold of the clustering.")
    reduction: Reduction = Field("pca", description="Reduction before clustering: pca, or umap (the paper's; the umap extra).")


@node(
    "comorag.summarize_semantic",
    state=IngestState,
    reads={"book_id", "generation", "chunks", "chunk_ids"},
    writes={"semantic_levels", "semantic_ids"},
    config=SemanticConfig,
)
async def summarize_semantic(state: IngestState, config: SemanticConfig, context: RunContext) -> dict[str, Any]:
    """Cluster the chunks, summarize each cluster, and recurse on the summaries until one remains (RAPTOR).

    Stops early when a level's clustering no longer reduces the number of texts. ``reduction: umap`` without
    the umap extra stops before any summary, with a ``ConfigError`` naming the extra.
    """
    if config.reduction == "umap":
        require_umap()
    namespace, book, generation = context.namespace, state.book_id, state.generation
    ids, texts = list(state.chunk_ids), list(state.chunks)
    vectors = await _stored_vectors(context, ids, texts)
    levels: list[int] = []
    written_ids: list[str] = []
    for level in range(1, config.max_levels + 1):
        clusters = cluster_level(np.array(vectors, dtype=np.float64), threshold=config.threshold, reduction=config.reduction)
        if level > 1 and len(clusters) >= len(ids):
            break
        calls = [
            _summary(context, semantic_messages([texts[m] for m in cluster.members]), config.max_tokens) for cluster in clusters
        ]
        written = await _gather(context, f"semantic summaries, level {level}", calls)
        summaries, summary_vectors = [summary for summary, _ in written], [vector for _, vector in written]
        summary_ids = [
            semantic_summary_id(namespace, book, level, [ids[m] for m in cluster.members], generation) for cluster in clusters
        ]
        records = [
            NodeRecord(
                id=sid,
                namespace=namespace,
                kind=SEMANTIC_SUMMARY,
                text=text,
                embedding=vector,
                properties={"book_id": book, "generation": generation, "level": level},
            )
            for sid, text, vector in zip(summary_ids, summaries, summary_vectors, strict=True)
        ]
        links = [
            _rel(context, "SUMMARIZES", sid, ids[member], membership=membership)
            for sid, cluster in zip(summary_ids, clusters, strict=True)
            for member, membership in zip(cluster.members, cluster.memberships, strict=True)
        ]
        await write_records(context.store, records, links)
        levels.append(len(clusters))
        written_ids += summary_ids
        if len(clusters) == 1:
            break
        ids, texts, vectors = summary_ids, summaries, summary_vectors
    context.log.info("comorag.semantic", levels=levels)
    return {"semantic_levels": levels, "semantic_ids": written_ids}


@node(
    "comorag.summarize_episodes",
    state=IngestState,
    reads={"book_id", "generation", "chunks", "chunk_ids", "window"},
    writes={"episodes", "episode_ids"},
    config=SummaryConfig,
)
async def summarize_episodes(state: IngestState, config: SummaryConfig, context: RunContext) -> dict[str, Any]:
    """Summarize non-overlapping windows of consecutive chunks into a timeline (a 1-chunk window is copied)."""
    namespace, book, generation = context.namespace, state.book_id, state.generation
    window = state.window or episode_window(len(state.chunks))
    starts = list(range(0, len(state.chunks), window))

    async def summarize(start: int) -> tuple[str, list[float]]:
        passages = state.chunks[start : start + window]
        if len(passages) == 1:
            [vector] = await context.embedder.embed(passages)
            return passages[0], vector
        return await _summary(context, episodic_messages(passages), config.max_tokens)

    written = await _gather(context, "episodic summaries", [summarize(start) for start in starts])
    summaries, vectors = [summary for summary, _ in written], [vector for _, vector in written]
    ids: list[str] = []
    records: list[NodeRecord] = []
    links: list[RelationshipRecord] = []
    for index, (start, text, vector) in enumerate(zip(starts, summaries, vectors, strict=True)):
        last = min(start + window, len(state.chunks)) - 1
        episode = episodic_summary_id(namespace, book, start, last, generation)
        ids.append(episode)
        properties = {"book_id": book, "generation": generation, "window_index": index, "first_order": start, "last_order": last}
        records.append(
            NodeRecord(id=episode, namespace=namespace, kind=EPISODIC_SUMMARY, text=text, embedding=vector, properties=properties)
        )
        links += [_rel(context, "COVERS", episode, state.chunk_ids[order]) for order in range(start, last + 1)]
    links += [_rel(context, "NEXT", left, right) for left, right in zip(ids, ids[1:], strict=False)]
    await write_records(context.store, records, links)
    context.log.info("comorag.episodic", windows=len(ids), window=window)
    return {"episodes": len(ids), "episode_ids": ids}


async def _book_records(store: GraphStore, namespace: str, book_id: str) -> list[NodeRecord]:
    """Every record of the book's index in the namespace, of any generation (the Book record aside)."""
    found: list[NodeRecord] = []
    for kind in INDEX_KINDS:
        found += await all_nodes(store, namespace, kind, where={"book_id": book_id})
    return found


@node(
    "comorag.publish",
    state=IngestState,
    reads={"book_id", "title", "generation", "chunk_ids", "window", "entity_ids", "fact_ids", "semantic_ids", "episode_ids"},
    writes={"superseded"},
)
async def publish(state: IngestState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """Point the book at this ingest's index, then delete the book's records this ingest did not write.

    The Book record's upsert is the switch: one write, so readers see the previous index whole until it lands and
    this one after. The chunks' PART_OF links follow it (they need the Book to exist). The records deleted are the
    earlier generations', those of a store written before generations, and those of this generation that it no
    longer makes (a node's config changed); a crash before the deletion leaves records no reader reads, which the
    next ingest of the book deletes.
    """
    if not state.generation:
        raise NodeError("comorag.publish needs the generation comorag.chunk_book writes; run it after the index nodes")
    namespace, book = context.namespace, state.book_id
    book_node = book_record_id(namespace, book)
    properties = {
        "book_id": book, "title": state.title, "chunks": len(state.chunk_ids), "window": state.window,
        "generation": state.generation,
    }  # fmt: skip
    pointer = NodeRecord(id=book_node, namespace=namespace, kind=BOOK, text=state.title or book, properties=properties)
    await context.store.upsert_nodes([pointer])
    await write_records(context.store, [], [_rel(context, "PART_OF", node_id, book_node) for node_id in state.chunk_ids])
    written = {*state.chunk_ids, *state.entity_ids, *state.fact_ids, *state.semantic_ids, *state.episode_ids}
    stale = [record.id for record in await _book_records(context.store, namespace, book) if record.id not in written]
    for start in range(0, len(stale), BATCH):
        await context.store.delete_nodes(namespace, stale[start : start + BATCH])
    context.log.info("comorag.published", book=book, generation=state.generation, superseded=len(stale))
    return {"superseded": len(stale)}
