"""What ComoRAG keeps in the store: the three-layer index of a book and each question's workspace.

This module is the contract between ingestion (which writes the index), question answering (which reads it
and writes workspaces) and anything that inspects them. Every id is a stable id of the namespace, the kind
and the content's identity (below, per kind), so re-ingesting a book, retrying a step or resuming a run
rewrites the same records instead of adding new ones. ``Chunk`` and the ``PART_OF`` and ``NEXT`` relationships
are the memory layer's own; the other kinds and relationships are registered here.

Index of a book (``book_id`` property on every record, so searches filter by book):

- ``Book``: ``{book_id, title, chunks, window}``; text = the title (the book id when there is none).
  Id from (namespace, book_id).
- ``Chunk`` (embedded): ``{book_id, order, tokens}``; text = the passage. ``(:Chunk)-[:PART_OF]->(:Book)``,
  ``(:Chunk)-[:NEXT]->(:Chunk)`` in reading order. Id from (namespace, book_id, order).
- ``Entity`` (embedded): ``{book_id, name, num_chunks}``; text = name (the spelling of its first mention).
  ``(:Chunk)-[:MENTIONS]->(:Entity)``, ``(:Entity)-[:SYNONYM {score}]->(:Entity)`` once per pair of names whose
  embeddings have a cosine of at least the node's threshold (0.8 by default). Id from (namespace, book_id,
  normalized name).
- ``Fact`` (embedded): ``{book_id, subject, predicate, object}``; text = "subject predicate object".
  ``(:Fact)-[:SUBJECT]->(:Entity)``, ``(:Fact)-[:OBJECT]->(:Entity)``, ``(:Fact)-[:EXTRACTED_FROM]->(:Chunk)``.
  Id from (namespace, book_id, the normalized subject, predicate and object). Retrieval's PageRank graph
  (:mod:`~mnemoflow.nodes.comorag.pagerank`) joins two entities once per fact linking them: it is read from
  these links, and nothing else is stored for it.
- ``SemanticSummary`` (embedded): ``{book_id, level}`` (level 1 summarizes chunks, level 2 summaries...);
  ``(:SemanticSummary)-[:SUMMARIZES {membership}]->(:Chunk | :SemanticSummary)``. Id from (namespace,
  book_id, level, the sorted ids of what it summarizes).
- ``EpisodicSummary`` (embedded): ``{book_id, window_index, first_order, last_order}``;
  ``(:EpisodicSummary)-[:COVERS]->(:Chunk)``, ``(:EpisodicSummary)-[:NEXT]->(:EpisodicSummary)``. Id from
  (namespace, book_id, first_order, last_order).

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
from mnemoflow.memory.records import stable_id

__all__ = [
    "BOOK",
    "CHUNK",
    "CYCLE",
    "ENTITY",
    "EPISODIC_SUMMARY",
    "FACT",
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


def book_record_id(namespace: str, book_id: str) -> str:
    return stable_id(namespace, BOOK, book_id)


def chunk_id(namespace: str, book_id: str, order: int) -> str:
    return stable_id(namespace, CHUNK, book_id, order)


def entity_id(namespace: str, book_id: str, name: str) -> str:
    return stable_id(namespace, ENTITY, book_id, normalize_name(name))


def fact_id(namespace: str, book_id: str, subject: str, predicate: str, object_: str) -> str:
    """A (subject, predicate, object) triple of a book, by the normalized forms of its three parts."""
    return stable_id(namespace, FACT, book_id, normalize_name(subject), normalize_name(predicate), normalize_name(object_))


def semantic_summary_id(namespace: str, book_id: str, level: int, member_ids: Sequence[str]) -> str:
    """The summary of a cluster at ``level``, by the ids of what it summarizes (in any order)."""
    return stable_id(namespace, SEMANTIC_SUMMARY, book_id, level, sorted(member_ids))


def episodic_summary_id(namespace: str, book_id: str, first_order: int, last_order: int) -> str:
    """The summary of the window of chunks ``first_order``..``last_order`` (inclusive)."""
    return stable_id(namespace, EPISODIC_SUMMARY, book_id, first_order, last_order)


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
