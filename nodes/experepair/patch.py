"""The Patch Agent's phase of a repair (``graphs/library/experepair.yaml``): localize, patch, test, review.

localize -> generate -> evaluate -> review -> [refine (R3 demo) -> evaluate | finish]. Each candidate is applied
in a fresh throwaway worktree and the reproduction script runs there. A model reply that does not validate is
recorded in ``errors`` and the run carries on: a missing localization falls back to the whole listing, missing
patches leave the round empty, and the run ends ``unresolved`` when no candidate is both applied and judged
correct.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mnemoflow.errors import LLMOutputError
from mnemoflow.nodes.context import RunContext
from mnemoflow.nodes.experepair.agents import (
    MAX_PROMPT_OUTPUT,
    Localization,
    Patches,
    ReplyConfig,
    Review,
    candidates_text,
    localize_messages,
    patch_messages,
    refine_messages,
    reproduction_text,
    review_messages,
)
from mnemoflow.nodes.experepair.episodes import PatchRound
from mnemoflow.nodes.experepair.repository import (
    SandboxConfig,
    code_of,
    describe_execution,
    is_unified_diff,
    python_files,
    repository_listing,
)
from mnemoflow.nodes.experepair.retrieval import ScoredDemo, retrieve_demos, with_demo
from mnemoflow.nodes.experepair.state import RepairState
from mnemoflow.nodes.registry import NoConfig, node, router
from mnemoflow.nodes.sandbox import Worktree, run_python
from mnemoflow.nodes.tokens import clip

__all__ = ["CandidatesConfig", "RoundsConfig"]


class CandidatesConfig(ReplyConfig):
    candidates: int = Field(3, ge=1, le=8, description="Candidate patches asked for per round.")


class RoundsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_rounds: int = Field(2, ge=0, le=10, description="Refinement rounds after the initial generation.")


@node(
    "experepair.localize",
    state=RepairState,
    reads={"repo_path", "commit", "issue", "reproduced", "test_script", "test_output", "errors"},
    writes={"locations", "code", "errors"},
    config=ReplyConfig,
)
async def localize(state: RepairState, config: ReplyConfig, context: RunContext) -> dict[str, Any]:
    """Pick the files and functions to change from a bounded listing of the repository's Python files."""
    repo = Path(state.repo_path)
    listing = await repository_listing(repo, state.commit)
    known = set(await python_files(repo, state.commit))
    errors = state.errors
    try:
        reply = await context.llm.structured(
            localize_messages(state.issue, reproduction_text(state), listing), Localization, max_tokens=config.max_tokens
        )
        locations = [location for location in reply.locations if location.file in known]
    except LLMOutputError as exc:
        context.log.warning("experepair.localize_unreadable", error=str(exc))
        errors = [*errors, f"localize: the locations could not be read; showing the first files instead: {exc}"]
        locations = []
    files = list(dict.fromkeys(location.file for location in locations)) or sorted(known)
    return {
        "locations": [location.model_dump() for location in locations],
        "code": await code_of(repo, state.commit, files),
        "errors": errors,
    }


def _new_candidates(patches: list[str]) -> list[dict[str, Any]]:
    return [
        {"patch": patch, "applied": None, "error": "", "diff": "", "output": "", "passed": False, "correct": False, "rank": None}
        for patch in patches
    ]


@node(
    "experepair.generate",
    state=RepairState,
    reads={"issue", "insights", "code", "reproduced", "test_script", "test_output", "errors"},
    writes={"candidates", "round", "errors"},
    config=CandidatesConfig,
)
async def generate(state: RepairState, config: CandidatesConfig, context: RunContext) -> dict[str, Any]:
    """The Patch Agent writes ``candidates`` unified diffs against the localized code (coder insights in system)."""
    messages = patch_messages(state.insights.get("coder", []), state.issue, state.code, reproduction_text(state), config.candidates)
    try:
        reply = await context.llm.structured(messages, Patches, max_tokens=config.max_tokens)
    except LLMOutputError as exc:
        context.log.warning("experepair.generate_unreadable", error=str(exc))
        return {"candidates": [], "round": 0, "errors": [*state.errors, f"generate: the patches could not be read: {exc}"]}
    return {"candidates": _new_candidates(reply.patches[: config.candidates]), "round": 0}


@node(
    "experepair.evaluate",
    state=RepairState,
    reads={"repo_path", "commit", "candidates", "test_script", "round", "errors"},
    writes={"candidates", "errors"},
    config=SandboxConfig,
)
async def evaluate(state: RepairState, config: SandboxConfig, context: RunContext) -> dict[str, Any]:
    """Each candidate in a fresh worktree: apply it (a bad diff is recorded and skipped), then run the reproduction
    script there; ``passed`` when it exits 0 in time."""
    limits = config.limits()
    evaluated: list[dict[str, Any]] = []
    errors = list(state.errors)
    for number, candidate in enumerate(state.candidates, start=1):
        candidate = dict(candidate)
        patch = str(candidate["patch"])
        if not is_unified_diff(patch):
            candidate.update(applied=False, error="not a unified diff (no ---/+++ header followed by an @@ hunk)")
        else:
            async with Worktree(Path(state.repo_path), state.commit) as tree:
                result = await tree.apply(patch)
                candidate.update(applied=result.applied, error=result.error)
                if result.applied:
                    candidate["diff"] = await tree.diff()
                    if state.test_script:
                        execution = await run_python(tree, state.test_script, limits)
                        candidate.update(output=describe_execution(execution, limits), passed=execution.passed)
        if not candidate["applied"]:
            errors.append(f"evaluate (round {state.round}, candidate {number}): the patch was not applied: {candidate['error']}")
        evaluated.append(candidate)
    return {"candidates": evaluated, "errors": errors}


@node(
    "experepair.review",
    state=RepairState,
    reads={"issue", "candidates", "reproduced", "test_script", "test_output", "round", "rounds", "errors"},
    writes={"candidates", "rounds", "review", "errors"},
    config=ReplyConfig,
)
async def review(state: RepairState, config: ReplyConfig, context: RunContext) -> dict[str, Any]:
    """The reviewer ranks the candidates and marks the correct ones; a candidate that did not apply, or whose
    reproduction test fails (when there is one), is never correct."""
    candidates = [dict(candidate) for candidate in state.candidates]
    errors = state.errors
    applied = [number for number, candidate in enumerate(candidates, start=1) if candidate["applied"]]
    verdict = Review(analysis="no candidate applied" if candidates else "no candidate patch", advice="write a patch that applies")
    if applied:
        try:
            verdict = await context.llm.structured(
                review_messages(state.issue, reproduction_text(state), candidates_text(candidates)),
                Review,
                max_tokens=config.max_tokens,
            )
        except LLMOutputError as exc:
            context.log.warning("experepair.review_unreadable", error=str(exc))
            errors = [*errors, f"review (round {state.round}): the review could not be read; no candidate accepted: {exc}"]
            verdict = Review(analysis="", advice="")
    order = [number for number in dict.fromkeys(verdict.ranking) if 1 <= number <= len(candidates)]
    order += [number for number in applied if number not in order]
    order += [number for number in range(1, len(candidates) + 1) if number not in order]
    for rank, number in enumerate(order, start=1):
        candidate = candidates[number - 1]
        gate = bool(candidate["applied"]) and (bool(candidate["passed"]) or not state.reproduced)
        candidate.update(rank=rank, correct=gate and number in verdict.correct)
    ranked = sorted(candidates, key=lambda candidate: candidate["rank"])
    best = next((c for c in ranked if c["correct"]), next((c for c in ranked if c["applied"]), ranked[0] if ranked else None))
    rounds = state.rounds
    if best is not None:
        chosen = PatchRound(patch=str(best["diff"] or best["patch"]), correct=bool(best["correct"]))
        rounds = [*rounds, chosen.model_dump()]
    return {
        "candidates": candidates,
        "rounds": rounds,
        "review": {"analysis": verdict.analysis, "advice": verdict.advice},
        "errors": errors,
    }


@router(
    "experepair.after_review",
    state=RepairState,
    reads={"candidates", "round"},
    outcomes={"resolved", "refine", "unresolved"},
    config=RoundsConfig,
)
def after_review(state: RepairState, config: RoundsConfig) -> str:
    """Finish with a correct candidate; refine while rounds remain; otherwise finish unresolved."""
    if any(candidate["correct"] for candidate in state.candidates):
        return "resolved"
    return "refine" if state.round < config.max_rounds else "unresolved"


@node(
    "experepair.refine",
    state=RepairState,
    reads={
        "repo",
        "issue_id",
        "issue",
        "memory",
        "insights",
        "code",
        "candidates",
        "rounds",
        "review",
        "round",
        "demos_used",
        "errors",
    },
    writes={"candidates", "round", "demos_used", "errors"},
    config=CandidatesConfig,
)
async def refine(state: RepairState, config: CandidatesConfig, context: RunContext) -> dict[str, Any]:
    """Refine the rejected best patch with the reviewer's analysis and advice and an R3 (wrong -> correct) pair
    (none with memory off)."""
    ranked = sorted((c for c in state.candidates if c["rank"] is not None), key=lambda c: c["rank"])
    best = ranked[0] if ranked else None
    patch = str(best["diff"] or best["patch"]) if best else ""
    result = (str(best["output"]) or str(best["error"])) if best else "no candidate"
    demo: ScoredDemo | None = None
    if state.memory:
        demos = await retrieve_demos(
            context.store, context.namespace, phase="patch_refine", repo=state.repo, exclude_issue=state.issue_id,
            queries={"issue_description": state.issue, "old_patch": patch}, issue_text=state.issue,
        )  # fmt: skip
        demo = demos[0] if demos else None
    messages = refine_messages(
        state.insights.get("coder", []), state.issue, state.code, patch, clip(result, MAX_PROMPT_OUTPUT),
        str(state.review.get("analysis", "")), str(state.review.get("advice", "")),
        demo.old_patch if demo else "", demo.new_patch if demo else "", config.candidates,
    )  # fmt: skip
    update: dict[str, Any] = {"round": state.round + 1, "demos_used": with_demo(state.demos_used, "patch_refine", demo)}
    try:
        reply = await context.llm.structured(messages, Patches, max_tokens=config.max_tokens)
    except LLMOutputError as exc:
        context.log.warning("experepair.refine_unreadable", error=str(exc))
        errors = [*state.errors, f"refine (round {state.round + 1}): the patches could not be read: {exc}"]
        return {**update, "candidates": [], "errors": errors}
    return {**update, "candidates": _new_candidates(reply.patches[: config.candidates])}


@node(
    "experepair.finish",
    state=RepairState,
    reads={"candidates", "reproduced", "test_script", "test_output", "round", "review", "errors"},
    writes={"final_patch", "status", "evidence", "errors"},
)
async def finish(state: RepairState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """The top-ranked correct candidate is the final patch (resolved); none: unresolved, with the reason."""
    correct = sorted((c for c in state.candidates if c["correct"]), key=lambda c: c["rank"])
    evidence: dict[str, Any] = {
        "reproduced": state.reproduced,
        "test_script": state.test_script,
        "buggy_output": state.test_output,
        "rounds": state.round + 1,
        "review": state.review,
    }
    if not correct:
        reason = f"unresolved: no candidate patch was applied and accepted after {state.round + 1} round(s)"
        return {"final_patch": "", "status": "unresolved", "evidence": evidence, "errors": [*state.errors, reason]}
    best = correct[0]
    evidence.update(patched_output=best["output"], passed=best["passed"])
    return {"final_patch": str(best["diff"] or best["patch"]), "status": "resolved", "evidence": evidence}
