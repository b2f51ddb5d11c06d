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
    the issue's outcome is recorded."""
    insights: dict[str, list[str]] = Field(default_factory=dict)
    """Per role (tester, coder): the insights shown in that agent's system prompt."""
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
    locations: list[dict[str, Any]] = Field(default_factory=list)
    """The files and functions to change, as the localizer named them (file, function, reason)."""
    code: str = ""
    """The localized files' code as the Patch Agent sees it."""
    candidates: list[dict[str, Any]] = Field(default_factory=list)
    """This round's candidates: patch, applied, error, diff, output, passed, correct, rank."""
    round: int = 0
    """The refinement round (0: the initial generation)."""
    rounds: list[dict[str, Any]] = Field(default_factory=list)
    """Per round: its selected patch and whether the reviewer accepted it (``episodes.PatchRound``)."""
    review: dict[str, Any] = Field(default_factory=dict)
    """The last review's analysis and advice."""
    final_patch: str = ""
    """The accepted patch as a unified diff; empty when unresolved."""
    status: Literal["resolved", "unresolved", ""] = ""
    """The outcome; empty until the run finishes."""
    evidence: dict[str, Any] = Field(default_factory=dict)
    """What the outcome rests on: the reproduction, its output before and after the patch, the rounds, the review."""
    demos_used: dict[str, list[str]] = Field(default_factory=dict)
    """Per retrieval phase: the ids of the demonstrations put into a prompt."""
    errors: list[str] = Field(default_factory=list)
    """What went wrong along the way (unreadable replies, patches that did not apply), in order; the run carries on."""
