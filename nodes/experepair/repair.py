"""Repair one issue of a Python repository (``experepair.*`` nodes; graph ``graphs/library/experepair.yaml``).

load_insights -> write_test -> run_test -> judge_test -> [retry write_test with an R2 demo | localize] ->
generate -> evaluate -> review -> [refine (R3 demo) -> evaluate | finish] -> record -> update_insights.

Untrusted code (the reproduction script, the patched repository) only ever runs inside a throwaway
:class:`~mnemoflow.nodes.sandbox.Worktree`; the clone at ``repo_path`` is only read (``git ls-tree``/``git show``).
A model reply that does not validate is recorded in ``errors`` and the run carries on: a missing script is a failed
attempt, a missing localization falls back to the whole listing, missing patches leave the round empty, and the
run ends ``unresolved`` when no candidate is both applied and judged correct.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from mnemoflow.errors import LLMOutputError, NodeError
from mnemoflow.nodes.context import RunContext
from mnemoflow.nodes.experepair.agents import (
    InsightEdits,
    Judgement,
    Localization,
    Patches,
    Review,
    TestScript,
    insight_messages,
    judge_messages,
    localize_messages,
    patch_messages,
    refine_messages,
    review_messages,
    tester_messages,
)
from mnemoflow.nodes.experepair.memory import (
    InsightEdit,
    PatchRound,
    TestAttempt,
    apply_insight_edits,
    load_insights,
    record_issue,
    record_patch_rounds,
    record_test_attempts,
)
from mnemoflow.nodes.experepair.retrieval import Phase, ScoredDemo, retrieve_demos, trim_output
from mnemoflow.nodes.registry import NoConfig, node, router, state_model
from mnemoflow.nodes.sandbox import Execution, Limits, Worktree, run_python
from mnemoflow.nodes.tokens import clip

__all__ = ["RepairState", "is_unified_diff", "repository_listing"]

Role = Literal["tester", "coder"]
ROLES: tuple[Role, ...] = ("tester", "coder")
MAX_LISTING_CHARS = 12_000
"""Bound on the repository listing the localizer sees (files with their class/def lines)."""
MAX_CODE_CHARS = 16_000
"""Bound on the code of the localized files shown to the Patch Agent."""
MAX_FILES = 4
MAX_PROMPT_OUTPUT = 4_000
"""Bound on one execution output inside a prompt (head and tail kept)."""


@state_model("experepair.RepairState")
class RepairState(BaseModel):
    """One issue: the reproduction attempts, the localized code, the candidate patches per round and the outcome."""

    repo: str = Field(min_length=1, max_length=300)
    """The repository's name (``owner/name``); demos are drawn from other issues of the same name."""
    repo_path: str = Field(min_length=1)
    """A local clone; only read, never written."""
    commit: str = "HEAD"
    issue_id: str = Field(min_length=1, max_length=300)
    issue: str
    insights: dict[str, list[str]] = Field(default_factory=dict)
    """Per role (tester, coder): the insights shown in that agent's system prompt."""
    test_tries: int = 0
    """Times the Test Agent was asked for a script (a reply that could not be read counts)."""
    attempts: list[dict[str, Any]] = Field(default_factory=list)
    """Each run attempt: script, output, returncode, reproduces, analysis, advice (``memory.TestAttempt``)."""
    test_script: str = ""
    test_output: str = ""
    test_returncode: int | None = None
    reproduced: bool = False
    locations: list[dict[str, Any]] = Field(default_factory=list)
    code: str = ""
    """The localized files' code as the Patch Agent sees it."""
    candidates: list[dict[str, Any]] = Field(default_factory=list)
    """This round's candidates: patch, applied, error, diff, output, passed, correct, rank."""
    round: int = 0
    """The refinement round (0: the initial generation)."""
    rounds: list[dict[str, Any]] = Field(default_factory=list)
    """Per round: its selected patch and whether the reviewer accepted it (``memory.PatchRound``)."""
    review: dict[str, Any] = Field(default_factory=dict)
    """The last review's analysis and advice."""
    final_patch: str = ""
    status: Literal["resolved", "unresolved", ""] = ""
    evidence: dict[str, Any] = Field(default_factory=dict)
    demos_used: dict[str, list[str]] = Field(default_factory=dict)
    """Per retrieval phase: the ids of the demonstrations put into a prompt."""
    errors: list[str] = Field(default_factory=list)


class SandboxConfig(BaseModel):
    timeout_s: float = Field(60.0, gt=0, le=3_600, description="Wall-clock limit of one script run.")
    memory_mb: int = Field(512, ge=32, le=65_536, description="Address-space limit of the script's process.")

    def limits(self) -> Limits:
        return Limits(timeout_s=self.timeout_s, memory_mb=self.memory_mb)


class TestLoopConfig(BaseModel):
    max_test_attempts: int = Field(3, ge=1, le=10, description="Scripts the Test Agent may write before giving up.")


class CandidatesConfig(BaseModel):
    candidates: int = Field(3, ge=1, le=8, description="Candidate patches asked for per round.")


class RoundsConfig(BaseModel):
    max_rounds: int = Field(2, ge=0, le=10, description="Refinement rounds after the initial generation.")


# -- helpers --------------------------------------------------------------------------------------------------


async def _git(repo: Path, *args: str) -> str:
    """A read-only git command in the clone; NodeError naming the repository when it fails."""
    process = await asyncio.create_subprocess_exec(
        "git", *args, cwd=repo, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise NodeError(f"git {' '.join(args[:2])} in {str(repo)!r} failed: {err.decode(errors='replace').strip()}")
    return out.decode(errors="replace")


async def _python_files(repo: Path, commit: str) -> list[str]:
    names = (await _git(repo, "ls-tree", "-r", "--name-only", commit)).splitlines()
    return sorted(name for name in names if name.endswith(".py"))


_DEFINITION = re.compile(r"^\s*(?:async\s+)?(?:def|class)\s+\w+.*$", re.MULTILINE)


async def repository_listing(repo: Path, commit: str, limit: int = MAX_LISTING_CHARS) -> str:
    """The commit's Python files, each with its class and def lines, cut at ``limit`` characters."""
    lines: list[str] = []
    size = 0
    files = await _python_files(repo, commit)
    for index, name in enumerate(files):
        source = await _git(repo, "show", f"{commit}:{name}")
        block = [name, *(f"    {match.group(0).strip()}" for match in _DEFINITION.finditer(source))]
        text = "\n".join(block)
        if size + len(text) > limit:
            lines.append(f"... {len(files) - index} more files not shown")
            break
        lines.append(text)
        size += len(text) + 1
    return "\n".join(lines)


async def _code_of(repo: Path, commit: str, files: list[str], limit: int = MAX_CODE_CHARS) -> str:
    parts: list[str] = []
    size = 0
    for name in files[:MAX_FILES]:
        source = await _git(repo, "show", f"{commit}:{name}")
        block = f"--- {name}\n{source}"
        if size + len(block) > limit:
            block = block[: max(0, limit - size)] + "\n... [cut]"
        parts.append(block)
        size += len(block)
        if size >= limit:
            break
    return "\n".join(parts)


def is_unified_diff(text: str) -> bool:
    """Has the shape of a unified diff: a ``---``/``+++`` file header and at least one ``@@`` hunk."""
    return bool(re.search(r"^--- .+\n\+\+\+ .+\n@@ ", text, re.MULTILINE))


def _reproduction(state: RepairState) -> str:
    if state.reproduced:
        return f"Script (fails on the unfixed code):\n{state.test_script}\n\nIts output:\n{clip(state.test_output, MAX_PROMPT_OUTPUT)}"
    if state.test_script:
        return (
            "No script was judged to reproduce the issue. The last attempt:\n"
            f"{state.test_script}\n\nIts output:\n{clip(state.test_output, MAX_PROMPT_OUTPUT)}"
        )
    return "No reproduction script is available."


async def _run_script(state: RepairState, script: str, limits: Limits, diff: str = "") -> Execution:
    """Run ``script`` in a fresh worktree of the commit (with ``diff`` applied first when given)."""
    async with Worktree(Path(state.repo_path), state.commit) as tree:
        if diff:
            applied = await tree.apply(diff)
            if not applied.applied:
                raise NodeError(f"the diff no longer applies: {applied.error}")
        return await run_python(tree, script, limits)


def _describe(execution: Execution, limits: Limits) -> str:
    output = execution.output
    if execution.timed_out:
        output += f"\n[killed: the script ran longer than {limits.timeout_s:g} s]"
    if execution.truncated:
        output += "\n[output truncated]"
    return output.strip()


def _demos_used(state: RepairState, phase: str, demo: ScoredDemo | None) -> dict[str, list[str]]:
    if demo is None:
        return state.demos_used
    return {**state.demos_used, phase: [*state.demos_used.get(phase, []), demo.id]}


# -- test agent -----------------------------------------------------------------------------------------------


@node("experepair.load_insights", state=RepairState, reads={"repo_path", "issue"}, writes={"insights"})
async def load_insights_node(state: RepairState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """The tester's and the coder's current insights (semantic memory); refuse a missing clone or an empty issue."""
    if not state.issue.strip():
        raise NodeError(f"issue {state.issue_id!r}: the issue text is empty; nothing to repair")
    if not Path(state.repo_path).is_dir():
        raise NodeError(f"repo_path {state.repo_path!r} is not a folder: give a local clone of {state.repo!r}")
    return {"insights": {role: await load_insights(context.store, context.namespace, role) for role in ROLES}}


@node(
    "experepair.write_test",
    state=RepairState,
    reads={
        "repo",
        "issue_id",
        "issue",
        "insights",
        "attempts",
        "test_script",
        "test_output",
        "test_tries",
        "demos_used",
        "errors",
    },
    writes={"test_script", "test_tries", "demos_used", "errors"},
)
async def write_test(state: RepairState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """The Test Agent writes a reproduction script: first from the issue and an R1 example; on a retry from the
    failed script, its output, the judge's advice and an R2 (failing -> working) pair."""
    retry = bool(state.attempts)
    phase: Phase
    if retry:
        last = state.attempts[-1]
        queries = {"old_exec_result": trim_output(str(last["output"])), "old_test": str(last["script"])}
        phase = "test_retry"
    else:
        queries = {"issue_description": state.issue, "new_test": state.issue}
        phase = "test_initial"
    demos = await retrieve_demos(
        context.store, context.namespace, phase=phase, repo=state.repo, exclude_issue=state.issue_id, queries=queries,
        issue_text=state.issue,
    )  # fmt: skip
    demo = demos[0] if demos else None
    insights = state.insights.get("tester", [])
    if retry:
        last = state.attempts[-1]
        messages = tester_messages(
            insights, state.issue, previous=str(last["script"]), output=clip(str(last["output"]), MAX_PROMPT_OUTPUT),
            analysis=str(last.get("analysis", "")), advice=str(last.get("advice", "")),
            demo_old=demo.old_test if demo else "", demo_new=demo.new_test if demo else "",
        )  # fmt: skip
    else:
        messages = tester_messages(insights, state.issue, example=demo.new_test if demo else "")
    update: dict[str, Any] = {"test_tries": state.test_tries + 1, "demos_used": _demos_used(state, phase, demo)}
    try:
        reply = await context.llm.structured(messages, TestScript)
    except LLMOutputError as exc:
        context.log.warning("experepair.write_test_unreadable", error=str(exc))
        return {
            **update,
            "test_script": "",
            "errors": [*state.errors, f"write_test (try {state.test_tries + 1}): the script could not be read: {exc}"],
        }
    return {**update, "test_script": reply.script}


@node(
    "experepair.run_test",
    state=RepairState,
    reads={"repo_path", "commit", "test_script"},
    writes={"test_output", "test_returncode"},
    config=SandboxConfig,
)
async def run_test(state: RepairState, config: SandboxConfig, context: RunContext) -> dict[str, Any]:
    """Run the script on the unfixed code, in a throwaway worktree, bounded in time, memory and output."""
    if not state.test_script:
        return {"test_output": "", "test_returncode": None}
    limits = config.limits()
    execution = await _run_script(state, state.test_script, limits)
    return {"test_output": _describe(execution, limits), "test_returncode": execution.returncode}


@node(
    "experepair.judge_test",
    state=RepairState,
    reads={"issue", "test_script", "test_output", "test_returncode", "attempts", "errors"},
    writes={"attempts", "reproduced", "errors"},
)
async def judge_test(state: RepairState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """The judge decides whether the run reproduces the issue; an unreadable verdict counts as NO."""
    if not state.test_script:
        return {"reproduced": False}
    errors = state.errors
    try:
        verdict = await context.llm.structured(
            judge_messages(state.issue, state.test_script, clip(state.test_output, MAX_PROMPT_OUTPUT), state.test_returncode),
            Judgement,
        )
    except LLMOutputError as exc:
        context.log.warning("experepair.judge_unreadable", error=str(exc))
        errors = [*errors, f"judge_test: the verdict could not be read, counted as not reproduced: {exc}"]
        verdict = Judgement(analysis="", reproduces=False, advice="")
    attempt = TestAttempt(
        script=state.test_script, output=state.test_output, returncode=state.test_returncode,
        reproduces=verdict.reproduces, analysis=verdict.analysis, advice=verdict.advice,
    )  # fmt: skip
    return {"attempts": [*state.attempts, attempt.model_dump()], "reproduced": verdict.reproduces, "errors": errors}


@router(
    "experepair.after_judge",
    state=RepairState,
    reads={"reproduced", "test_tries"},
    outcomes={"reproduced", "retry", "exhausted"},
    config=TestLoopConfig,
)
def after_judge(state: RepairState, config: TestLoopConfig) -> str:
    """Localize once reproduced; write another script while attempts remain; localize without one when exhausted."""
    if state.reproduced:
        return "reproduced"
    return "retry" if state.test_tries < config.max_test_attempts else "exhausted"


# -- patch agent ----------------------------------------------------------------------------------------------


@node(
    "experepair.localize",
    state=RepairState,
    reads={"repo_path", "commit", "issue", "reproduced", "test_script", "test_output", "errors"},
    writes={"locations", "code", "errors"},
)
async def localize(state: RepairState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """Pick the files and functions to change from a bounded listing of the repository's Python files."""
    repo = Path(state.repo_path)
    listing = await repository_listing(repo, state.commit)
    known = set(await _python_files(repo, state.commit))
    errors = state.errors
    try:
        reply = await context.llm.structured(localize_messages(state.issue, _reproduction(state), listing), Localization)
        locations = [location for location in reply.locations if location.file in known]
    except LLMOutputError as exc:
        context.log.warning("experepair.localize_unreadable", error=str(exc))
        errors = [*errors, f"localize: the locations could not be read; showing the first files instead: {exc}"]
        locations = []
    files = list(dict.fromkeys(location.file for location in locations)) or sorted(known)
    return {
        "locations": [location.model_dump() for location in locations],
        "code": await _code_of(repo, state.commit, files),
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
    messages = patch_messages(state.insights.get("coder", []), state.issue, state.code, _reproduction(state), config.candidates)
    try:
        reply = await context.llm.structured(messages, Patches)
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
                        candidate.update(output=_describe(execution, limits), passed=execution.passed)
        if not candidate["applied"]:
            errors.append(f"evaluate (round {state.round}, candidate {number}): the patch was not applied: {candidate['error']}")
        evaluated.append(candidate)
    return {"candidates": evaluated, "errors": errors}


def _candidates_text(candidates: list[dict[str, Any]]) -> str:
    blocks = []
    for number, candidate in enumerate(candidates, start=1):
        if not candidate["applied"]:
            status = f"did not apply: {candidate['error']}"
        else:
            verdict = "passed" if candidate["passed"] else "failed"
            status = f"applied; reproduction test {verdict}. Output:\n{clip(str(candidate['output']), 2_000)}"
        blocks.append(f"[{number}]\n{candidate['diff'] or candidate['patch']}\n{status}")
    return "\n\n".join(blocks)


@node(
    "experepair.review",
    state=RepairState,
    reads={"issue", "candidates", "reproduced", "test_script", "test_output", "round", "rounds", "errors"},
    writes={"candidates", "rounds", "review", "errors"},
)
async def review(state: RepairState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """The reviewer ranks the candidates and marks the correct ones; a candidate that did not apply, or whose
    reproduction test fails (when there is one), is never correct."""
    candidates = [dict(candidate) for candidate in state.candidates]
    errors = state.errors
    applied = [number for number, candidate in enumerate(candidates, start=1) if candidate["applied"]]
    verdict = Review(analysis="no candidate applied" if candidates else "no candidate patch", advice="write a patch that applies")
    if applied:
        try:
            verdict = await context.llm.structured(
                review_messages(state.issue, _reproduction(state), _candidates_text(candidates)), Review
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
    reads={"repo", "issue_id", "issue", "insights", "code", "candidates", "rounds", "review", "round", "demos_used", "errors"},
    writes={"candidates", "round", "demos_used", "errors"},
    config=CandidatesConfig,
)
async def refine(state: RepairState, config: CandidatesConfig, context: RunContext) -> dict[str, Any]:
    """Refine the rejected best patch with the reviewer's analysis and advice and an R3 (wrong -> correct) pair."""
    ranked = sorted((c for c in state.candidates if c["rank"] is not None), key=lambda c: c["rank"])
    best = ranked[0] if ranked else None
    patch = str(best["diff"] or best["patch"]) if best else ""
    result = (str(best["output"]) or str(best["error"])) if best else "no candidate"
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
    update: dict[str, Any] = {"round": state.round + 1, "demos_used": _demos_used(state, "patch_refine", demo)}
    try:
        reply = await context.llm.structured(messages, Patches)
    except LLMOutputError as exc:
        context.log.warning("experepair.refine_unreadable", error=str(exc))
        errors = [*state.errors, f"refine (round {state.round + 1}): the patches could not be read: {exc}"]
        return {**update, "candidates": [], "errors": errors}
    return {**update, "candidates": _new_candidates(reply.patches[: config.candidates])}


# -- outcome and memory ---------------------------------------------------------------------------------------


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


@node(
    "experepair.record",
    state=RepairState,
    reads={"repo", "issue_id", "issue", "attempts", "rounds", "status", "final_patch", "evidence"},
    writes=set(),
)
async def record(state: RepairState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """Episodic memory: the issue's outcome, its test demos (attempt pairs) and patch demos (rejected -> correct)."""
    common = {"repo": state.repo, "issue_id": state.issue_id, "issue_text": state.issue}
    status: Literal["resolved", "unresolved"] = "resolved" if state.status == "resolved" else "unresolved"
    await record_issue(
        context.store, context.namespace, **common, status=status, final_patch=state.final_patch, evidence=state.evidence
    )
    attempts = [TestAttempt.model_validate(attempt) for attempt in state.attempts]
    await record_test_attempts(context.store, context.namespace, **common, attempts=attempts)
    rounds = [PatchRound.model_validate(entry) for entry in state.rounds]
    await record_patch_rounds(context.store, context.namespace, **common, rounds=rounds)
    return {}


def _trajectory(state: RepairState, role: Role) -> str:
    lines = [f"Issue: {clip(state.issue, 1_500)}", f"Outcome: {state.status}"]
    if role == "tester":
        for number, attempt in enumerate(state.attempts, start=1):
            verdict = "reproduced" if attempt["reproduces"] else "did not reproduce"
            lines.append(f"Attempt {number} ({verdict}): {attempt.get('analysis', '')}")
            lines.append(f"Script:\n{clip(str(attempt['script']), 1_500)}")
    else:
        for number, entry in enumerate(state.rounds):
            verdict = "accepted" if entry["correct"] else "rejected"
            lines.append(f"Round {number} ({verdict}):\n{clip(str(entry['patch']), 1_500)}")
        if state.review:
            lines.append(f"Last review: {state.review.get('analysis', '')} {state.review.get('advice', '')}")
    return "\n".join(lines)


@node(
    "experepair.update_insights",
    state=RepairState,
    reads={"issue", "status", "attempts", "rounds", "review", "insights", "errors"},
    writes={"insights", "errors"},
)
async def update_insights(state: RepairState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """Semantic memory: per role, the model proposes ADD/EDIT/REMOVE edits of the numbered insights from this
    issue's trajectory; they are applied in order (cap 15). An unreadable proposal changes nothing."""
    insights = dict(state.insights)
    errors = list(state.errors)
    for role in ROLES:
        current = await load_insights(context.store, context.namespace, role)
        try:
            reply = await context.llm.structured(insight_messages(role, current, _trajectory(state, role)), InsightEdits)
        except LLMOutputError as exc:
            context.log.warning("experepair.insights_unreadable", role=role, error=str(exc))
            errors.append(f"update_insights ({role}): the edits could not be read; the insights are unchanged: {exc}")
            insights[role] = current
            continue
        edits = [
            InsightEdit(operation=edit.operation, number=edit.number if edit.operation != "ADD" else None, text=edit.text)
            for edit in reply.edits
        ]
        outcome = await apply_insight_edits(context.store, context.namespace, role, edits)
        insights[role] = list(outcome["insights"])
        errors += [f"update_insights ({role}): edit {item['index'] + 1} ignored: {item['reason']}" for item in outcome["ignored"]]
    return {"insights": insights, "errors": errors}
