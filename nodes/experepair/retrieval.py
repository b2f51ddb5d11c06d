"""Field-weighted BM25 retrieval of ExpeRepair demonstrations, faithful to the reference code.

Per phase a knowledge base (KB) of demos of the SAME repository, other issues only, is scored field by field with
``BM25Okapi`` (rank_bm25 defaults k1=1.5, b=0.75, epsilon=0.25) over the tokenizer below; each field's scores are
min-max normalised, combined with the phase's weights, the top 10 kept, then deduplicated by issue text (the first
hit plus hits whose issue differs from every kept one) down to ``k``.

- ``test_initial``: ``TestDemo`` of kind ``initial``; issue_description 0.6, new_test 0.4 (both queried with the
  issue text).
- ``test_retry``: ``TestDemo`` of kind ``repair``; old_exec_result 0.9 (query: the current output after
  :func:`trim_output`), old_test 0.1 (query: the current script).
- ``patch_refine``: ``PatchDemo``; issue_description 0.7, old_patch 0.3 (query: the current failing patch).

Whether a run retrieves at all is :func:`reads_episodic`: memory and episodic memory on, and the run in the
inference phase (a seed-phase run writes its demos but is shown none). What was put into a prompt is kept in the
state's ``demos_used`` by :func:`with_demo`, which ``experepair.record`` turns into ``USED_DEMO`` links.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from rank_bm25 import BM25Okapi  # type: ignore[import-untyped, unused-ignore]

from mnemoflow.errors import UsageError
from mnemoflow.memory.paging import all_nodes
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.nodes.experepair.model import PATCH_DEMO, TEST_DEMO
from mnemoflow.nodes.experepair.state import RepairState

__all__ = [
    "PHASE_WEIGHTS",
    "TOP_N",
    "Phase",
    "ScoredDemo",
    "reads_episodic",
    "retrieve_demos",
    "score_demos",
    "tokenize",
    "trim_output",
    "with_demo",
]

Phase = Literal["test_initial", "test_retry", "patch_refine"]
PHASE_WEIGHTS: dict[str, dict[str, float]] = {
    "test_initial": {"issue_description": 0.6, "new_test": 0.4},
    "test_retry": {"old_exec_result": 0.9, "old_test": 0.1},
    "patch_refine": {"issue_description": 0.7, "old_patch": 0.3},
}
_KB: dict[str, tuple[str, str | None]] = {
    "test_initial": (TEST_DEMO, "initial"),
    "test_retry": (TEST_DEMO, "repair"),
    "patch_refine": (PATCH_DEMO, None),
}
TOP_N = 10
"""Hits considered before the issue-level deduplication."""

_NON_WORD = re.compile(r"\W")
_SUMMARY = re.compile(r"^[ \t]*Summary:[ \t]*\d+[ \t]+cases\b.*?(?:\n[ \t]*\n|\Z)", re.MULTILINE | re.DOTALL)
_FRAME = re.compile(r'^[ \t]*File "[^"\n]*".*$', re.MULTILINE)


class ScoredDemo(BaseModel):
    """A retrieved demo: its record's fields (those of the other demo kind stay empty), its id and its score."""

    model_config = ConfigDict(frozen=True)

    id: str
    score: float
    rank: int = 1
    """Its place in the retrieval's result, from 1 (the demo the prompts use)."""
    demo_kind: Literal["TestDemo", "PatchDemo"]
    repo: str
    issue_id: str
    issue_description: str
    kind: str = ""
    """``initial`` or ``repair`` for a test demo."""
    old_test: str = ""
    old_exec_result: str = ""
    new_test: str = ""
    new_exec_result: str = ""
    old_patch: str = ""
    old_result: bool = False
    new_patch: str = ""
    new_result: bool = False


def tokenize(text: str) -> list[str]:
    """Lowercase, every non-word character to a space, split on whitespace (as the reference)."""
    return _NON_WORD.sub(" ", text.lower()).split()


def trim_output(text: str) -> str:
    """The execution output as the retry query: without a ``Summary: N cases ...`` block (up to the next blank
    line), and when a traceback is present only what follows its last ``File "..."`` frame line."""
    text = _SUMMARY.sub("", text)
    if "Traceback (most recent call last)" in text:
        frames = list(_FRAME.finditer(text))
        if frames:
            text = text[frames[-1].end() :]
    return text.strip()


def _field_scores(documents: Sequence[str], query: str) -> list[float]:
    corpus = [tokenize(document) for document in documents]
    terms = tokenize(query)
    if not terms or not any(corpus):  # rank_bm25 divides by zero on a corpus without any token
        return [0.0] * len(documents)
    scores = [float(score) for score in BM25Okapi(corpus).get_scores(terms)]
    low, high = min(scores), max(scores)
    return [(score - low) / (high - low + 1e-8) for score in scores]


def score_demos(demos: Sequence[Mapping[str, Any]], weights: Mapping[str, float], queries: Mapping[str, str]) -> list[float]:
    """Weighted sum of the min-max normalised BM25 score of each weighted field, one score per demo."""
    totals = [0.0] * len(demos)
    for field, weight in weights.items():
        documents = [str(demo.get(field) or "") for demo in demos]
        for index, score in enumerate(_field_scores(documents, queries.get(field, ""))):
            totals[index] += weight * score
    return totals


async def retrieve_demos(
    store: GraphStore,
    namespace: str,
    *,
    phase: Phase,
    repo: str,
    exclude_issue: str,
    queries: dict[str, str],
    k: int = 3,
    issue_text: str | None = None,
) -> list[ScoredDemo]:
    """The best ``k`` demos for ``phase`` from other issues of ``repo``, best first; [] for an empty KB.

    ``queries`` maps each field of the phase's weights to its query text (a missing one scores 0). The current
    issue is excluded by ``exclude_issue`` (its issue_id) and by identical issue text: ``issue_text``, or else
    ``queries["issue_description"]``.
    """
    if phase not in PHASE_WEIGHTS:
        raise UsageError(f"retrieval phase {phase!r} is unknown; use one of {', '.join(PHASE_WEIGHTS)}")
    kind, subtype = _KB[phase]
    current_text = issue_text if issue_text is not None else queries.get("issue_description", "")
    candidates = [
        node
        for node in await all_nodes(store, namespace, kind)
        if node.properties.get("repo") == repo
        and (subtype is None or node.properties.get("kind") == subtype)
        and node.properties.get("issue_id") != exclude_issue
        and not (current_text and node.properties.get("issue_description") == current_text)
    ]
    if not candidates or k <= 0:
        return []
    scores = score_demos([node.properties for node in candidates], PHASE_WEIGHTS[phase], queries)
    ranked = sorted(zip(candidates, scores, strict=True), key=lambda pair: -pair[1])[:TOP_N]
    kept: list[ScoredDemo] = []
    for node, score in ranked:
        issue = node.properties.get("issue_description", "")
        if kept and any(demo.issue_description == issue for demo in kept):
            continue
        fields = {name: node.properties[name] for name in ScoredDemo.model_fields if name in node.properties}
        kept.append(ScoredDemo(**{**fields, "id": node.id, "score": score, "rank": len(kept) + 1, "demo_kind": kind}))
        if len(kept) == k:
            break
    return kept


def reads_episodic(state: RepairState) -> bool:
    """Whether the run's prompts get retrieved demonstrations (R1, R2, R3): memory and episodic memory on, in the
    inference phase. The seed phase runs with static prompts; the ablations without memory or without episodic
    memory never retrieve."""
    return state.memory and state.episodic and state.phase == "inference"


def with_demo(used: dict[str, list[dict[str, Any]]], phase: str, demo: ScoredDemo | None) -> dict[str, list[dict[str, Any]]]:
    """``used`` (per retrieval phase, the demos put into a prompt, in order) with ``demo`` added under ``phase`` as
    ``{id, rank, score}``; unchanged when no demo was retrieved. One entry per retrieval: the same demo
    retrieved again (on the next retry) appears again, while a step that puts one retrieved demo into several
    prompts (a refinement per review) adds it once."""
    if demo is None:
        return used
    entry = {"id": demo.id, "rank": demo.rank, "score": round(demo.score, 6)}
    return {**used, phase: [*used.get(phase, []), entry]}
