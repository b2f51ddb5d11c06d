"""The state of an ExpeRepair run: one issue, its reproduction attempts, its patch rounds and the outcome."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from mnemoflow.nodes.registry import state_model

__all__ = ["RepairState"]


@state_model("experepair.RepairState")
class RepairState(BaseModel):
    """One issue: the reproduction attempts, the localized code, the candidate patches per round and the outcome."""

    repo: str = Field(min_length=1, max_length=300)
    """The repository's name (``owner/name``); demos are drawn from other issues of the same name."""
    repo_path: str = Field(min_length=1)
    """A local clone; only read, never written."""
    commit: str = "HEAD"
    """The commit of the clone the issue is repaired at."""
    issue_id: str = Field(min_length=1, max_length=300)
    """The issue's id within the repository (its number, or any stable key)."""
    issue: str
    """The issue's text."""
    memory: bool = True
    """Whether the run uses ExpeRepair's memories. False (the ablation baseline): no insights in the system prompts,
    no retrieved demonstrations, and nothing learned afterwards (no demonstrations recorded, no insight edits); only
    the issue's outcome is recorded. False overrides ``episodic`` and ``semantic``."""
    episodic: bool = True
    """Whether the run reads and grows episodic memory (test and patch demonstrations); False: the ablation without it."""
    semantic: bool = True
    """Whether the run reads and grows semantic memory (the roles' insights); False: the ablation without it."""
    phase: Literal["seed", "inference"] = "inference"
    """The paper's two phases. ``seed``: static prompts (nothing retrieved, no insights shown) while the run still
    records what it learns, to build the memory from a seed set of issues; ``inference``: read and grow memory."""
    insights: dict[str, list[str]] = Field(default_factory=dict)
    """Per role (tester, coder): the insights shown in that agent's system prompt."""
    insight_ids: dict[str, list[str]] = Field(default_factory=dict)
    """Per role: the record ids of the insights shown, in the same order (for ``USED_INSIGHT``)."""
    test_tries: int = 0
    """Times the Test Agent was asked for a script (a reply that could not be read counts)."""
    attempts: list[dict[str, Any]] = Field(default_factory=list)
    """Each run attempt: script, output, returncode, reproduces, analysis, advice (``episodes.TestAttempt``)."""
    test_script: str = ""
    """The latest reproduction script (empty when the last reply could not be read)."""
    test_output: str = ""
    """Its output on the unfixed code, with a note when it was killed or cut."""
    test_returncode: int | None = None
    """Its exit code on the unfixed code (None when it did not run or finish)."""
    reproduced: bool = False
    """Whether the judge said the latest script reproduces the issue."""
    suspicious_files: list[str] = Field(default_factory=list)
    """Localization stage 1: the files the model named as likely to need a change (at most ``max_files``)."""
    functions: list[dict[str, Any]] = Field(default_factory=list)
    """Localization stage 2: the classes and functions in those files to look at (file, function, reason)."""
    locations: list[dict[str, Any]] = Field(default_factory=list)
    """Localization stage 3: the edit locations (file, function, start, end, reason); line numbers are 1-based."""
    code: str = ""
    """The code as the Patch Agent sees it: the edit locations, then each file whole when small, else windows of
    ``context_lines`` around the locations (verbatim, the line numbers in the headers)."""
    candidates: list[dict[str, Any]] = Field(default_factory=list)
    """This round's candidates, each a pool entry (see ``pool``) once evaluated and reviewed."""
    pool: list[dict[str, Any]] = Field(default_factory=list)
    """Every evaluated candidate of every round, and the variants, in order; what validation chooses from. Each:
    ``{id, round, origin: generate|refine|expanded|compressed, patch, applied, error, diff, output, passed,
    correct, votes, reviews, review_score, rank, diff_outputs}``: ``passed`` when the reproduction script exits 0
    on it, ``votes`` of ``reviews`` reviewers marked it correct, ``review_score`` in [0, 1] (1: ranked first by
    every reviewer), ``correct`` when the reviews accept it and the gate holds, ``diff_outputs`` its output per
    differential test. A variant (origin expanded or compressed, id ``<parent id>-expanded`` or ``-compressed``) is
    not reviewed: it inherits its parent's votes, reviews and review_score, has rank None, and is correct only when
    its parent is, it applies, and it passes the reproduction script when its parent did."""
    round: int = 0
    """The refinement round (0: the initial generation)."""
    rounds: list[dict[str, Any]] = Field(default_factory=list)
    """Per round: its selected patch and whether the reviewer accepted it (``episodes.PatchRound``)."""
    review: dict[str, Any] = Field(default_factory=dict)
    """The last round's combined review: ``{ranking, correct}`` (candidate numbers by rank) and the analysis and
    advice of the first readable reviewer who ranked the top candidate first."""
    reviews: list[dict[str, Any]] = Field(default_factory=list)
    """The last round's reviews, one per reviewer run: ranking, correct, analysis, advice; a refinement writes one
    patch per review (an unreadable review is an empty verdict)."""
    diff_tests: list[str] = Field(default_factory=list)
    """The differential test scripts: each prints the outputs of up to ``max_inputs`` inputs of the changed code."""
    diff_baseline: list[str] = Field(default_factory=list)
    """Each differential test's output on the unfixed code."""
    validation: dict[str, Any] = Field(default_factory=dict)
    """How the final patch was chosen: ``{groups: [{number, members (ids, best first), passed, votes, review_score,
    selected, mean_rank}], selected: [group numbers], ranks: [per differential test: group numbers, best first],
    order: [applied entry ids, best first], chosen: id}``."""
    final_patch: str = ""
    """The accepted patch as a unified diff; empty when unresolved."""
    status: Literal["resolved", "unresolved", ""] = ""
    """The outcome; empty until the run finishes."""
    evidence: dict[str, Any] = Field(default_factory=dict)
    """What the outcome rests on: the reproduction, its output before and after the patch, the rounds, the review."""
    demos_used: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)
    """Per retrieval phase (``test_initial``, ``test_retry``, ``patch_refine``): each demonstration put into a
    prompt, in order, as ``{id, rank, score}`` (its place and weighted BM25 score in that retrieval's result), one
    entry per retrieval (``retrieval.with_demo``); ``record`` links them with ``USED_DEMO``."""
    errors: list[str] = Field(default_factory=list)
    """What went wrong along the way (unreadable replies, patches that did not apply), in order; the run carries on."""
