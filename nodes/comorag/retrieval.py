"""Tri-layer retrieval over one book's index (see :mod:`mnemoflow.nodes.comorag.model`), for a question or a probe.

- **veridical**: HippoRAG 2's. The top facts by vector search, one fact-filter call, then personalized PageRank
  (damping 0.5, numpy power iteration) over the whole book's graph of chunks and entities
  (:mod:`mnemoflow.nodes.comorag.pagerank`), seeded with the kept facts' scores on their entities and, on every
  chunk, its min-max normalized dense score times ``passage_weight``. When no fact survives the filter, dense
  chunk retrieval stands in.
- **semantic**: vector search over ``SemanticSummary`` (similarity order).
- **episodic**: vector search over ``EpisodicSummary``.

Every layer reads the book's current index only: the generation its Book record points to (see
:mod:`~mnemoflow.nodes.comorag.model`), read once per retrieval, so an ingest under way or a superseded index is never
retrieved. A Book without a generation (a store written before generations) reads the records without one.

Veridical and episodic evidence is re-sorted into narrative order. Evidence whose id is in ``exclude`` (what
the memory pool already holds) is dropped before the top k are taken and the token budget is spent, so the
next best fills its place. Each layer keeps whole texts until the next one would overflow its budget; a first
text that alone exceeds the budget is cut at it (:func:`fit_budget`), never dropped. Tokens are approximated
from words: ``ceil(words * 4 / 3)``, about right for English with BPE tokenizers, and needing no tokenizer. The
caller embeds the query once and passes the vector, so every search of one retrieval shares it.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from mnemoflow.memory.batches import MAX_K
from mnemoflow.memory.records import JsonScalar, NodeRecord, ScoredNode
from mnemoflow.nodes.comorag.agents import FactSelection, fact_filter_messages
from mnemoflow.nodes.comorag.model import (
    CHUNK,
    EPISODIC_SUMMARY,
    FACT,
    SEMANTIC_SUMMARY,
    book_record_id,
    chunk_id,
    generation_of,
)
from mnemoflow.nodes.comorag.pagerank import entity_seeds, personalized_pagerank, read_book_graph
from mnemoflow.nodes.comorag.state import EvidenceItem
from mnemoflow.nodes.context import RunContext

__all__ = ["CUT", "RetrievalConfig", "approx_tokens", "cut_text", "fit_budget", "tri_retrieve"]

CUT = "[...]"
"""What ends a text cut at a token budget."""


class RetrievalConfig(BaseModel):
    """How much each layer retrieves and keeps (the reference's values; the token budgets bound the prompt)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fact_top_k: int = Field(
        5, ge=1, le=50, description="Facts given to the fact filter, and entities seeded at most (linking top k)."
    )
    ver_top_k: int = Field(50, ge=1, le=200, description="Chunks ranked for the veridical layer.")
    sem_top_k: int = Field(50, ge=1, le=200, description="Semantic summaries retrieved.")
    epi_top_k: int = Field(50, ge=1, le=200, description="Episodic summaries retrieved.")
    ver_tokens: int = Field(3600, ge=1, description="Token budget of the veridical layer (the paper's 8 of 13 parts of 6k).")
    sem_tokens: int = Field(900, ge=1, description="Token budget of the semantic layer.")
    epi_tokens: int = Field(900, ge=1, description="Token budget of the episodic layer.")
    damping: float = Field(0.5, gt=0, lt=1, description="PageRank damping.")
    passage_weight: float = Field(
        0.005, ge=0, le=1, description="Weight of a chunk's normalized dense score in the PageRank seeds."
    )


def approx_tokens(text: str) -> int:
    """Tokens of a text, approximated from its words (``ceil(words * 4 / 3)``)."""
    return math.ceil(len(text.split()) * 4 / 3)


def cut_text(text: str, tokens: int) -> str:
    """The first words of ``text`` and :data:`CUT`, as many as fit in ``tokens``; "" when not one word fits."""
    words = math.floor(tokens * 3 / 4) - 1  # n words and the marker: ceil((n + 1) * 4 / 3) <= tokens
    ends = [match.end() for match in itertools.islice(re.finditer(r"\S+", text), max(words, 0))]
    return f"{text[: ends[-1]].lstrip()} {CUT}" if ends else ""


def fit_budget(texts: Sequence[str], tokens: int) -> list[str]:
    """Whole texts, in order, while they fit in ``tokens``; the first that does not fit ends the list, except that
    a first text alone over the budget is cut at it (:func:`cut_text`) rather than lost."""
    kept: list[str] = []
    used = 0
    for text in texts:
        cost = approx_tokens(text)
        if used + cost > tokens:
            if not kept and (cut := cut_text(text, tokens)):
                kept.append(cut)
            break
        kept.append(text)
        used += cost
    return kept


def _budget(items: list[EvidenceItem], tokens: int) -> list[EvidenceItem]:
    """The items :func:`fit_budget` keeps, a cut one with its cut text."""
    texts = fit_budget([item.text for item in items], tokens)
    return [
        item if item.text == text else item.model_copy(update={"text": text}) for item, text in zip(items, texts, strict=False)
    ]


def _item(node: NodeRecord, score: float, order_key: str) -> EvidenceItem:
    order = node.properties.get(order_key, 0)
    return EvidenceItem(
        id=node.id, text=node.text or "", order=float(order) if isinstance(order, int | float) else 0.0, score=score
    )


def _wider(k: int, exclude: set[str]) -> int:
    """How many hits to ask for so that ``k`` remain after dropping the excluded ones."""
    return min(k + len(exclude), 1000)


def _normalized(hits: Sequence[ScoredNode]) -> list[float]:
    """Min-max normalized scores (all 1.0 when they are equal)."""
    scores = [hit.score for hit in hits]
    low, high = min(scores, default=0.0), max(scores, default=0.0)
    return [1.0 if high == low else (score - low) / (high - low) for score in scores]


@dataclass(frozen=True)
class _Index:
    """The book's current index, as its Book record names it."""

    generation: str
    """``""`` for a book indexed before generations."""
    chunk_ids: list[str]
    """Its chunks' ids, in reading order (none when the book is not indexed)."""
    where: dict[str, JsonScalar]
    """The search filters of its records."""

    def current(self, hits: list[ScoredNode]) -> list[ScoredNode]:
        """The hits of this generation: without one, the store cannot filter out records that have one (an ingest of
        a book indexed before generations, under way or interrupted), so they are dropped here."""
        return [hit for hit in hits if hit.node.properties.get("generation", "") == self.generation]


async def _current_index(context: RunContext, book_id: str) -> _Index:
    """The generation the Book record points to and its chunks' ids (one read)."""
    namespace = context.namespace
    [book] = await context.store.get_nodes(namespace, [book_record_id(namespace, book_id)])
    generation = generation_of(book)
    count = book.properties.get("chunks", 0) if book is not None else 0
    count = min(count if isinstance(count, int) else 0, MAX_K)
    where: dict[str, JsonScalar] = {"book_id": book_id, "generation": generation} if generation else {"book_id": book_id}
    return _Index(generation, [chunk_id(namespace, book_id, order, generation) for order in range(count)], where)


async def _veridical(
    context: RunContext, index: _Index, query: str, vector: list[float], exclude: set[str], config: RetrievalConfig
) -> list[EvidenceItem]:
    store, namespace = context.store, context.namespace
    k = max(len(index.chunk_ids), _wider(config.ver_top_k, exclude))  # every chunk: the PageRank graph's seeds
    chunk_hits, fact_hits = await asyncio.gather(
        store.vector_search(namespace, vector, kind=CHUNK, k=k, filters=index.where),
        store.vector_search(namespace, vector, kind=FACT, k=config.fact_top_k, filters=index.where),
    )
    chunks, facts = index.current(chunk_hits), index.current(fact_hits)
    scored = [_item(hit.node, score, "order") for hit, score in zip(chunks, _normalized(chunks), strict=True)]
    dense = [item for item in scored if item.id not in exclude][: config.ver_top_k]
    if not facts:
        return dense
    # read the book's graph while the model filters the facts: the reads leave the critical path
    graph = asyncio.ensure_future(read_book_graph(store, namespace, index.chunk_ids or [item.id for item in scored]))
    try:
        selection = await context.llm.structured(
            fact_filter_messages(query, [hit.node.text or "" for hit in facts]), FactSelection
        )
    except BaseException:
        graph.cancel()
        raise
    book_graph = await graph
    kept = sorted({number - 1 for number in selection.keep if 1 <= number <= len(facts)})
    best = max(hit.score for hit in facts)  # the best fact scores 1, as the top of the reference's min-max scale
    seeds = entity_seeds(
        [(facts[position].node.id, max(facts[position].score, 0.0) / best if best > 0 else 1.0) for position in kept],
        book_graph,
        config.fact_top_k,
    )
    if not seeds:  # no fact kept, or none names an entity of the book's graph
        return dense
    for item in scored:
        seeds[item.id] = seeds.get(item.id, 0.0) + config.passage_weight * item.score
    ranks = personalized_pagerank(book_graph.nodes, book_graph.edges, seeds, config.damping)
    candidates = dict.fromkeys([*book_graph.chunks, *(item.id for item in scored)])
    top = sorted((node for node in candidates if node not in exclude), key=lambda node: (-ranks.get(node, 0.0), node))
    top = top[: config.ver_top_k]
    texts = {item.id: item for item in scored}
    missing = [node for node in top if node not in texts]  # a chunk the dense search did not return
    for record in await store.get_nodes(namespace, missing) if missing else []:
        if record is not None:
            texts[record.id] = _item(record, 0.0, "order")
    return [texts[node].model_copy(update={"score": ranks.get(node, 0.0)}) for node in top if node in texts]


async def tri_retrieve(
    context: RunContext,
    *,
    book_id: str,
    query: str,
    vector: list[float],
    exclude: set[str],
    config: RetrievalConfig,
) -> dict[str, list[EvidenceItem]]:
    """Evidence per layer (``veridical``, ``semantic``, ``episodic``) for ``query`` embedded as ``vector``, from the
    book's current index."""
    store, namespace = context.store, context.namespace
    index = await _current_index(context, book_id)
    # the summary layers need no model call: search them while the veridical layer waits on its fact filter
    veridical, semantic_hits, episodic_hits = await asyncio.gather(
        _veridical(context, index, query, vector, exclude, config),
        store.vector_search(namespace, vector, kind=SEMANTIC_SUMMARY, k=_wider(config.sem_top_k, exclude), filters=index.where),
        store.vector_search(namespace, vector, kind=EPISODIC_SUMMARY, k=_wider(config.epi_top_k, exclude), filters=index.where),
    )
    semantic = [_item(hit.node, hit.score, "level") for hit in index.current(semantic_hits)]
    episodic = [_item(hit.node, hit.score, "first_order") for hit in index.current(episodic_hits)]

    def fresh(items: list[EvidenceItem], k: int) -> list[EvidenceItem]:
        return [item for item in items if item.id not in exclude and item.text.strip()][:k]

    return {
        "veridical": sorted(_budget(fresh(veridical, config.ver_top_k), config.ver_tokens), key=lambda item: item.order),
        "semantic": _budget(fresh(semantic, config.sem_top_k), config.sem_tokens),
        "episodic": sorted(_budget(fresh(episodic, config.epi_top_k), config.epi_tokens), key=lambda item: item.order),
    }
