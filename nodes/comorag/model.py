"""What ComoRAG keeps in the store: the three-layer index of a book and each question's workspace.

This module is the contract between ingestion (which writes the index), question answering (which reads it
and writes workspaces) and anything that inspects them. Every id is a stable id of the namespace, the kind
and the content's identity, so re-ingesting or resuming never duplicates a record.

Index of a book (``book_id`` property on every record, so searches filter by book):

- ``Book``: ``{book_id, title, chunks, window}``; text = title.
- ``Chunk`` (embedded): ``{book_id, order, tokens}``; text = the passage. ``(:Chunk)-[:PART_OF]->(:Book)``,
  ``(:Chunk)-[:NEXT]->(:Chunk)`` in reading order.
- ``Entity`` (embedded): ``{book_id, name, num_chunks}``; text = name. ``(:Chunk)-[:MENTIONS]->(:Entity)``,
  ``(:Entity)-[:SYNONYM {score}]->(:Entity)`` for names whose embeddings have cosine >= 0.8.
- ``Fact`` (embedded): ``{book_id, subject, predicate, object}``; text = "subject predicate object".
  ``(:Fact)-[:SUBJECT]->(:Entity)``, ``(:Fact)-[:OBJECT]->(:Entity)``, ``(:Fact)-[:EXTRACTED_FROM]->(:Chunk)``.
- ``SemanticSummary`` (embedded): ``{book_id, level}`` (level 1 summarizes chunks, level 2 summaries...);
  ``(:SemanticSummary)-[:SUMMARIZES {membership}]->(:Chunk | :SemanticSummary)``.
- ``EpisodicSummary`` (embedded): ``{book_id, window_index, first_order, last_order}``;
  ``(:EpisodicSummary)-[:COVERS]->(:Chunk)``, ``(:EpisodicSummary)-[:NEXT]->(:EpisodicSummary)``.

Workspace of a question:

- ``Question``: ``{book_id, question, options, status, final_answer, cycles}``; status is ``answered`` or
  ``unresolved`` (final answer ``*``). ``(:Question)-[:HAS_CYCLE]->(:Cycle)``.
- ``Cycle``: ``{index, prediction, failed}``; ``(:Cycle)-[:ISSUED]->(:Probe)``.
- ``Probe``: ``{text}``; ``(:Probe)-[:YIELDED]->(:MemoryUnit)``.
- ``MemoryUnit`` (embedded, from probe + cue): ``{layer, probe, cycle, in_pool}`` with layer one of
  ``veridical``, ``semantic``, ``episodic``, ``fusion``; text = the cue.
  ``(:MemoryUnit)-[:EVIDENCE {rank}]->(:Chunk | :SemanticSummary | :EpisodicSummary)``,
  fusion units ``-[:FUSED_FROM]->(:MemoryUnit)``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mnemoflow.memory.names import REGISTRY
from mnemoflow.memory.records import stable_id

__all__ = [
    "LAYERS",
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

LAYERS = ("veridical", "semantic", "episodic")

for kind, embedded, description in (
    ("Book", False, "A text ingested by ComoRAG."),
    ("Entity", True, "A named entity of a book, from the model's NER."),
    ("Fact", True, "A (subject, predicate, object) triple of a book."),
    ("SemanticSummary", True, "A summary of a cluster of chunks or of lower summaries."),
    ("EpisodicSummary", True, "A summary of a window of consecutive chunks."),
    ("Question", False, "A question asked of a book, with its status and final answer."),
    ("Cycle", False, "One answer attempt of a question and what followed it."),
    ("Probe", False, "A question the regulation agent asked to clear an impasse."),
    ("MemoryUnit", True, "A cue synthesized from one layer's evidence for a probe, or a fusion of cues."),
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
    return stable_id(namespace, "Book", book_id)


def chunk_id(namespace: str, book_id: str, order: int) -> str:
    return stable_id(namespace, "Chunk", book_id, order)


def entity_id(namespace: str, book_id: str, name: str) -> str:
    return stable_id(namespace, "Entity", book_id, normalize_name(name))


def fact_id(namespace: str, book_id: str, subject: str, predicate: str, object_: str) -> str:
    """A (subject, predicate, object) triple of a book, by the normalized forms of its three parts."""
    return stable_id(namespace, "Fact", book_id, normalize_name(subject), normalize_name(predicate), normalize_name(object_))


def semantic_summary_id(namespace: str, book_id: str, level: int, member_ids: Sequence[str]) -> str:
    """The summary of a cluster at ``level``, by the ids of what it summarizes (in any order)."""
    return stable_id(namespace, "SemanticSummary", book_id, level, sorted(member_ids))


def episodic_summary_id(namespace: str, book_id: str, first_order: int, last_order: int) -> str:
    """The summary of the window of chunks ``first_order``..``last_order`` (inclusive)."""
    return stable_id(namespace, "EpisodicSummary", book_id, first_order, last_order)


# -- ids of a question's workspace (question answering) ---------------------------------------------------


def question_id(namespace: str, book_id: str, question: str, thread_id: str) -> str:
    """A question asked of a book on one run thread: a resumed run (same thread) finds the same workspace."""
    return stable_id(namespace, "Question", book_id, question, thread_id)


def cycle_id(question: str, index: int) -> str:
    """Cycle ``index`` of a question (by the question's id)."""
    return stable_id(question, "Cycle", index)


def probe_id(question: str, cycle: int, text: str) -> str:
    """A probe issued in a cycle of a question."""
    return stable_id(question, "Probe", cycle, text)


def memory_unit_id(question: str, cycle: int, probe: str, layer: str) -> str:
    """The memory unit one layer's evidence gave for a probe in a cycle (``fusion``: the cycle's fusion)."""
    return stable_id(question, "MemoryUnit", cycle, probe, layer)
