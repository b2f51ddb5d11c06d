"""What ComoRAG keeps in the store: the three-layer index of a book and each question's workspace.

This module is the contract between ingestion (which writes the index), question answering (which reads it
and writes workspaces) and anything that inspects them. Every id is a stable id of the namespace, the kind
and the content's identity (below, per kind), so retrying a step, resuming a run or ingesting the same book again
rewrites the same records instead of adding new ones. ``Chunk`` and the ``PART_OF`` and ``NEXT`` relationships
are the memory layer's own; the other kinds and relationships are registered here.

Index of a book (``book_id`` and ``generation`` properties on every record, so searches filter by book and
generation):

- ``Book``: ``{book_id, title, chunks, window, generation}``; text = the title (the book id when there is none).
  Id from (namespace, book_id). It is the book's pointer to its current index: written once, when an ingest has
  written everything else (``comorag.publish``), so its single upsert switches readers from one generation to the
  next.
- The generation (:func:`ingest_generation`) is a short fingerprint of what an ingest's records depend on: the
  text, ``chunk_tokens``, ``kg`` and the chat and embedding models. It is part of the id of every other record of
  the index, so a changed book is written beside the current index, never over it, and an unchanged one rewrites
  the same records. Readers take the Book's generation and read that generation only; a Book without one (a store
  written before generations existed) names an index whose records have no generation and the ids below without it.
- ``Chunk`` (embedded): ``{book_id, generation, order, tokens}``; text = the passage.
  ``(:Chunk)-[:PART_OF]->(:Book)``, ``(:Chunk)-[:NEXT]->(:Chunk)`` in reading order. Id from (namespace, book_id,
  generation, order).
- ``Entity`` (embedded): ``{book_id, generation, name, num_chunks}``; text = name (the spelling of its first mention).
  ``(:Chunk)-[:MENTIONS]->(:Entity)``, ``(:Entity)-[:SYNONYM {score}]->(:Entity)`` once per pair of names whose
  embeddings have a cosine of at least the node's threshold (0.8 by default). Id from (namespace, book_id,
  generation, normalized name).
- ``Fact`` (embedded): ``{book_id, generation, subject, predicate, object}``; text = "subject predicate object".
  ``(:Fact)-[:SUBJECT]->(:Entity)``, ``(:Fact)-[:OBJECT]->(:Entity)``, ``(:Fact)-[:EXTRACTED_FROM]->(:Chunk)``.
  Id from (namespace, book_id, generation, the normalized subject, predicate and object). Retrieval's PageRank graph
  (:mod:`~mnemoflow.nodes.comorag.pagerank`) joins two entities once per fact linking them: it is read from
  these links, and nothing else is stored for it.
- ``SemanticSummary`` (embedded): ``{book_id, generation, level}`` (level 1 summarizes chunks, level 2 summaries...);
  ``(:SemanticSummary)-[:SUMMARIZES {membership}]->(:Chunk | :SemanticSummary)``. Id from (namespace,
  book_id, generation, level, the sorted ids of what it summarizes).
- ``EpisodicSummary`` (embedded): ``{book_id, generation, window_index, first_order, last_order}``;
  ``(:EpisodicSummary)-[:COVERS]->(:Chunk)``, ``(:EpisodicSummary)-[:NEXT]->(:EpisodicSummary)``. Id from
  (namespace, book_id, generation, first_order, last_order).

Workspace of a question (ids below the question's derive from the question's id):

- ``Question``: ``{book_id, question, options, status, final_answer, cycles}``; text = the question. status is
  ``open`` while the run works, then ``answered`` or ``unresolved`` (final answer ``*``).
  ``(:Question)-[:HAS_CYCLE]->(:Cycle)``. Id from (namespace, book_id, question, run thread id): a resumed run
  finds its workspace, another run of the same question opens its own.
- ``Cycle``: ``{index, prediction, failed}``; cycle 0 is the attempt on the question's own evidence, cycle n
  the attempt after the n-th round of probes. ``(:Cycle)-[:NEXT]->(:Cycle)``, ``(:Cycle)-[:ISSUED]->(:Probe)``.
  Id from (question id, index).
- ``Probe``: ``{text}``; text = the probe (for cycle 0, the question itself), ISSUED by the cycle whose attempt
  reads its units. ``(:Probe)-[:YIELDED]->(:MemoryUnit)``. Id from (question id, cycle, text).
- ``MemoryUnit`` (embedded): ``{layer, probe, cycle, in_pool, question_id}`` with layer one of ``veridical``,
  ``semantic``, ``episodic``, ``fusion``; text = the cue (a fusion unit: the merged narrative, its probe the
  question). A layer unit's embedding is of "probe cue", a fusion unit's of its narrative. ``in_pool`` turns
  true when the unit joins the memory pool.
  ``(:MemoryUnit)-[:EVIDENCE {rank}]->(:Chunk | :SemanticSummary | :EpisodicSummary)``,
  fusion units ``-[:FUSED_FROM]->(:MemoryUnit)``. Id from (question id, cycle, probe, layer).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mnemoflow.memory.names import REGISTRY
from mnemoflow.memory.records import NodeRecord, stable_id

__all__ = [
    "BOOK",
    "CHUNK",
    "CYCLE",
    "ENTITY",
    "EPISODIC_SUMMARY",
    "FACT",
    "INDEX_KINDS",
    "LAYERS",
    "MEMORY_UNIT",
    "PROBE",
    "QUESTION",
    "SEMANTIC_SUMMARY",
    "book_record_id",
    "chunk_id",
    "cycle_id",
    "entity_id",
    "episodic_summary_id",
    "fact_id",
    "generation_of",
    "ingest_generation",
    "memory_unit_id",
    "normalize_name",
    "probe_id",
    "question_id",
    "semantic_summary_id",
]

BOOK, CHUNK, ENTITY, FACT = "Book", "Chunk", "Entity", "Fact"
SEMANTIC_SUMMARY, EPISODIC_SUMMARY = "SemanticSummary", "EpisodicSummary"
QUESTION, CYCLE, PROBE, MEMORY_UNIT = "Question", "Cycle", "Probe", "MemoryUnit"
LAYERS = ("veridical", "semantic", "episodic")
"""The index's three layers, as the ``layer`` of a memory unit names them (a fusion unit's is ``fusion``)."""
INDEX_KINDS = (CHUNK, ENTITY, FACT, SEMANTIC_SUMMARY, EPISODIC_SUMMARY)
"""The kinds of a book's index besides its Book record: each record carries the book's id and its generation."""

for kind, embedded, description in (
    (BOOK, False, "A text ingested by ComoRAG."),
    (ENTITY, True, "A named entity of a book, from the model's NER."),
    (FACT, True, "A (subject, predicate, object) triple of a book."),
    (SEMANTIC_SUMMARY, True, "A summary of a cluster of chunks or of lower summaries."),
    (EPISODIC_SUMMARY, True, "A summary of a window of consecutive chunks."),
    (QUESTION, False, "A question asked of a book, with its status and final answer."),
    (CYCLE, False, "One answer attempt of a question and what followed it."),
    (PROBE, False, "A question the regulation agent asked to clear an impasse."),
    (MEMORY_UNIT, True, "A cue synthesized from one layer's evidence for a probe, or a fusion of cues."),
):
    REGISTRY.register_kind(kind, embedded=embedded, description=description)
for relationship in (
    "MENTIONS", "SYNONYM", "SUBJECT", "OBJECT", "EXTRACTED_FROM", "SUMMARIZES", "COVERS",
    "HAS_CYCLE", "ISSUED", "YIELDED", "EVIDENCE", "FUSED_FROM",
):  # fmt: skip
    REGISTRY.register_relationship(relationship)


def normalize_name(name: str) -> str:
    """The identity of an entity name: lower case, single spaces, no surrounding punctuation."""
    return re.sub(r"\s+", " ", name.strip().strip(".,;:!?\"'()[]").lower())


def ingest_generation(text: str, chunk_tokens: int, kg: bool, chat_model: str, embedding_model: str) -> str:
    """The generation of an ingest: a short fingerprint of every input its records depend on, so the same input
    gives the same ids (and the reply cache answers its model calls) and a changed one gives new ids."""
    return stable_id(text, chunk_tokens, kg, chat_model, embedding_model)[:12]


def generation_of(book: NodeRecord | None) -> str:
    """The generation a Book record points to: ``""`` for a Book written before generations (or no Book)."""
    value = book.properties.get("generation", "") if book is not None else ""
    return value if isinstance(value, str) else ""


def _index_id(namespace: str, kind: str, book_id: str, generation: str, *parts: object) -> str:
    """An index record's id; without a generation, the id stores written before generations hold."""
    return stable_id(namespace, kind, book_id, *((generation,) if generation else ()), *parts)


def book_record_id(namespace: str, book_id: str) -> str:
    """The Book record: one per book and namespace, whatever its generation (it points to the current one)."""
    return stable_id(namespace, BOOK, book_id)


def chunk_id(namespace: str, book_id: str, order: int, generation: str = "") -> str:
    return _index_id(namespace, CHUNK, book_id, generation, order)


def entity_id(namespace: str, book_id: str, name: str, generation: str = "") -> str:
    return _index_id(namespace, ENTITY, book_id, generation, normalize_name(name))


def fact_id(namespace: str, book_id: str, subject: str, predicate: str, object_: str, generation: str = "") -> str:
    """A (subject, predicate, object) triple of a book, by the normalized forms of its three parts."""
    parts = (normalize_name(subject), normalize_name(predicate), normalize_name(object_))
    return _index_id(namespace, FACT, book_id, generation, *parts)


def semantic_summary_id(namespace: str, book_id: str, level: int, member_ids: Sequence[str], generation: str = "") -> str:
    """The summary of a cluster at ``level``, by the ids of what it summarizes (in any order)."""
    return _index_id(namespace, SEMANTIC_SUMMARY, book_id, generation, level, sorted(member_ids))


def episodic_summary_id(namespace: str, book_id: str, first_order: int, last_order: int, generation: str = "") -> str:
    """The summary of the window of chunks ``first_order``..``last_order`` (inclusive)."""
    return _index_id(namespace, EPISODIC_SUMMARY, book_id, generation, first_order, last_order)


# -- ids of a question's workspace (question answering) ---------------------------------------------------


def question_id(namespace: str, book_id: str, question: str, thread_id: str) -> str:
    """A question asked of a book on one run thread: a resumed run (same thread) finds the same workspace."""
    return stable_id(namespace, QUESTION, book_id, question, thread_id)


def cycle_id(question: str, index: int) -> str:
    """Cycle ``index`` of a question (by the question's id)."""
    return stable_id(question, CYCLE, index)


def probe_id(question: str, cycle: int, text: str) -> str:
    """A probe issued in a cycle of a question."""
    return stable_id(question, PROBE, cycle, text)


def memory_unit_id(question: str, cycle: int, probe: str, layer: str) -> str:
    """The memory unit one layer's evidence gave for a probe in a cycle (``fusion``: the cycle's fusion)."""
    return stable_id(question, MEMORY_UNIT, cycle, probe, layer)
