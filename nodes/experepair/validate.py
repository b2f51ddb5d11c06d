"""Validation (``graphs/library/experepair.yaml``): patch variants, differential tests, grouping and ranking, the
submission.

variants -> write_diff_tests -> run_diff_tests -> validate -> finish, after the last review (the paper's steps 3-5):

- ``variants``: each accepted patch of the last round (every applied one when no script reproduces the issue)
  gets an expanded and a compressed variant, evaluated like a candidate and appended to the ``pool``. A variant is
  not reviewed: it keeps its parent's ``votes``, ``reviews`` and ``review_score`` (the reviewers judged the same
  fix) and is ``correct`` only when its parent is, it applies and it does no worse on the reproduction script (it
  passes when its parent passed).
- ``write_diff_tests``: when at least two different patches applied, one differential test per temperature: a
  script printing what the changed code does on a few inputs, so candidates that differ show it.
- ``run_diff_tests``: each test on the unfixed code (``diff_baseline``) and on every applied pool entry
  (``diff_outputs``); entries with the same diff share one run.
- ``validate``: applied entries with the same normalised diff, or the same outputs (the reproduction's and every
  differential test's; compared only when a script ran), form a group of equivalent patches; the model selects
  the groups that fix the issue and ranks the groups per differential test (not one that prints the same for every
  group). Order: selected first, then passed the reproduction, then the members'
  mean share of accepting reviews, then their mean review score, then the mean rank.
- ``finish``: submits the first of that order (``submit: best``, the paper's top-1) or the first accepted one
  (``submit: accepted``); ``resolved`` only when the submitted patch was accepted.

An unreadable reply is recorded in ``errors`` and only its signal is lost: a variant not written, a test not
written, no group selected, a test not ranked.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from mnemoflow.errors import LLMOutputError
from mnemoflow.llm.gateway import Message
from mnemoflow.nodes.context import RunContext
from mnemoflow.nodes.experepair.agents import MAX_PROMPT_OUTPUT, ReplyConfig, reproduction_text
from mnemoflow.nodes.experepair.repository import SandboxConfig, describe_execution, run_patch
from mnemoflow.nodes.experepair.state import RepairState
from mnemoflow.nodes.experepair.validate_agents import (
    DiffTest,
    GroupRanking,
    GroupSelection,
    PatchVariants,
    diff_test_messages,
    rank_messages,
    select_messages,
    variant_messages,
)
from mnemoflow.nodes.registry import node
from mnemoflow.nodes.sandbox import SANDBOX_DIR, Execution, Limits, Worktree, run_python
from mnemoflow.nodes.tokens import clip

__all__ = [
    "DiffTestsConfig",
    "SubmitConfig",
    "VariantsConfig",
    "group_pool",
    "normalised_diff",
    "stable_output",
    "validation_summary",
]

MAX_DIFF_CANDIDATES = 8
"""At most this many distinct patches are shown to the Test Agent writing a differential test."""
_REVIEWED = ("generate", "refine")
"""The origins of reviewed pool entries (variants are not reviewed)."""


class VariantsConfig(ReplyConfig, SandboxConfig):
    max_patches: int = Field(4, ge=0, le=16, description="Accepted patches that get an expanded and a compressed variant.")


class DiffTestsConfig(ReplyConfig):
    temperatures: list[float] = Field(
        default_factory=lambda: [0.0, 0.8, 0.8], min_length=0, max_length=8,
        description="One differential test per entry, written at that temperature (the paper: 0.0, 0.8, 0.8).",
    )  # fmt: skip
    max_inputs: int = Field(8, ge=1, le=32, description="Inputs one differential test may try.")


class SubmitConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    submit: Literal["best", "accepted"] = Field(
        "best", description="best: submit the top-ranked patch that applied (the paper); accepted: only an accepted one."
    )


# -- the pool, grouped and ordered ------------------------------------------------------------------------------


def _patch_of(entry: dict[str, Any]) -> str:
    return str(entry.get("diff") or entry.get("patch") or "")


def normalised_diff(diff: str) -> str:
    """``diff`` without its ``diff --git`` and ``index`` lines, trailing spaces and blank ends: the same change,
    written by the model or by git, compares equal."""
    lines = diff.strip().splitlines()
    return "\n".join(line.rstrip() for line in lines if not line.startswith(("diff --git ", "index ")))


_WORKTREE_PATH = re.compile(r"[^\s\"']*mnemoflow-worktree-[^/\s]+/tree/")
"""Where a run's worktree was (``Worktree`` makes a fresh temporary folder for every run)."""
_SCRIPT_NAME = re.compile(re.escape(SANDBOX_DIR) + r"/[0-9a-f]{32}\.py")
"""The name ``run_python`` gave the script (random per run)."""


def stable_output(output: str) -> str:
    """A run's output without what differs from run to run (the worktree's folder, the script's file name), so two
    runs of the same behaviour compare equal: a traceback names both."""
    return _SCRIPT_NAME.sub(f"{SANDBOX_DIR}/script.py", _WORKTREE_PATH.sub("", output))


def _outputs_key(entry: dict[str, Any]) -> tuple[str, ...]:
    outputs = [entry.get("output", ""), *entry.get("diff_outputs", [])]
    return tuple(stable_output(str(output)) for output in outputs)


def _member_key(entry: dict[str, Any]) -> tuple[float, int]:
    """Best review score first; on a tie, the shortest diff."""
    return (-float(entry.get("review_score") or 0.0), len(normalised_diff(_patch_of(entry))))


def group_pool(pool: list[dict[str, Any]], by_outputs: bool) -> list[list[dict[str, Any]]]:
    """The applied entries in groups of equivalent patches: the same normalised diff, or (``by_outputs``: when
    there is a script whose output tells them apart) the same reproduction and differential-test outputs; the
    relation is closed transitively. Groups in the order of their first entry; members best first."""
    applied = [entry for entry in pool if entry.get("applied")]
    parent = list(range(len(applied)))

    def root(index: int) -> int:
        while parent[index] != index:
            index = parent[index]
        return index

    first: dict[tuple[str, ...], int] = {}
    for index, entry in enumerate(applied):
        keys: list[tuple[str, ...]] = [("diff", normalised_diff(_patch_of(entry)))]
        if by_outputs:
            keys.append(("outputs", *_outputs_key(entry)))
        for key in keys:
            if key in first:
                low, high = sorted((root(first[key]), root(index)))
                parent[high] = low
            else:
                first[key] = index
    groups: dict[int, list[dict[str, Any]]] = {}
    for index, entry in enumerate(applied):
        groups.setdefault(root(index), []).append(entry)
    return [sorted(members, key=_member_key) for members in groups.values()]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def validation_summary(groups: list[list[dict[str, Any]]], selected: list[int], ranks: list[list[int]]) -> dict[str, Any]:
    """The ``validation`` state: ``groups`` (per group, numbered from 1 as the prompts show them: ``members`` ids
    best first, ``passed``, ``votes`` (the best member's share of accepting reviews), ``review_score`` (the best
    member's: equivalent patches are as good as the best-reviewed of them), ``selected``, ``mean_rank`` (None when no
    test ranked it)), ``selected`` group numbers, ``ranks`` (per differential test the group numbers best first;
    empty when not ranked), ``order`` (the applied entries' ids, best first) and ``chosen`` (the first of
    ``order``; empty when nothing applied). A group a ranking leaves out ranks last. Scores are rounded to four
    places so that equal scores computed two ways tie."""
    summaries: list[dict[str, Any]] = []
    read = [ranking for ranking in ranks if ranking]
    for number, members in enumerate(groups, start=1):
        places = [ranking.index(number) + 1 if number in ranking else len(groups) for ranking in read]
        summaries.append(
            {
                "number": number,
                "members": [str(entry["id"]) for entry in members],
                "passed": any(entry.get("passed") for entry in members),
                "votes": round(max(int(e.get("votes") or 0) / int(e["reviews"]) if e.get("reviews") else 0.0 for e in members), 4),
                "review_score": round(max(float(entry.get("review_score") or 0.0) for entry in members), 4),
                "selected": number in selected,
                "mean_rank": round(_mean([float(place) for place in places]), 4) if places else None,
            }
        )
    ordered = sorted(
        summaries,
        key=lambda group: (
            not group["selected"],
            not group["passed"],
            -group["votes"],
            -group["review_score"],
            math.inf if group["mean_rank"] is None else group["mean_rank"],
            group["number"],
        ),
    )
    order = [member for group in ordered for member in group["members"]]
    return {"groups": summaries, "selected": selected, "ranks": ranks, "order": order, "chosen": order[0] if order else ""}


def _distinct_patches(pool: list[dict[str, Any]]) -> list[str]:
    """The applied entries' distinct patches, accepted and higher-scored first."""
    applied = sorted(
        (entry for entry in pool if entry.get("applied")),
        key=lambda entry: (not entry.get("correct"), not entry.get("passed"), *_member_key(entry)),
    )
    distinct: dict[str, str] = {}
    for entry in applied:
        distinct.setdefault(normalised_diff(_patch_of(entry)), _patch_of(entry))
    return list(distinct.values())


_ReplyT = TypeVar("_ReplyT", bound=BaseModel)


# -- the nodes ---------------------------------------------------------------------------------------------------


def _variant_parents(state: RepairState, limit: int) -> list[dict[str, Any]]:
    """The last round's accepted entries (every applied one when no script reproduces the issue), best first."""
    reviewed = [entry for entry in state.pool if entry.get("origin") in _REVIEWED]
    if not reviewed:
        return []
    last = max(int(entry["round"]) for entry in reviewed)
    current = [entry for entry in reviewed if entry["round"] == last and entry.get("applied")]
    chosen = [entry for entry in current if entry.get("correct")] if state.reproduced else current
    return sorted(chosen, key=lambda entry: (not entry.get("correct"), entry.get("rank") or math.inf))[:limit]


async def _variant_entry(
    state: RepairState, parent: dict[str, Any], origin: str, patch: str, config: VariantsConfig
) -> dict[str, Any]:
    """The variant evaluated like a candidate (applied in a fresh worktree, the reproduction script run there)."""
    limits = config.limits()
    run = await run_patch(state.repo_path, state.commit, patch, [state.test_script] if state.test_script else [], limits)
    entry: dict[str, Any] = {
        "id": f"{parent['id']}-{origin}", "round": parent["round"], "origin": origin, "patch": patch,
        "applied": run.applied, "error": run.error, "diff": run.diff, "output": "", "passed": False, "correct": False,
        "votes": parent.get("votes", 0), "reviews": parent.get("reviews", 0), "review_score": parent.get("review_score", 0.0),
        "rank": None, "diff_outputs": [],
    }  # fmt: skip
    if run.executions:
        entry.update(output=describe_execution(run.executions[0], limits), passed=run.executions[0].passed)
    entry["correct"] = run.applied and bool(parent.get("correct")) and (entry["passed"] or not parent.get("passed"))
    return entry


@node(
    "experepair.variants",
    state=RepairState,
    reads={"repo_path", "commit", "issue", "insights", "code", "test_script", "reproduced", "pool", "errors"},
    writes={"pool", "errors"},
    config=VariantsConfig,
)
async def variants(state: RepairState, config: VariantsConfig, context: RunContext) -> dict[str, Any]:
    """One call per accepted patch (at most ``max_patches``) for its expanded and compressed variants; each is
    evaluated and appended to the pool (an empty variant is skipped; one that does not apply is kept, not applied)."""
    pool = list(state.pool)
    errors = list(state.errors)
    for parent in _variant_parents(state, config.max_patches):
        result = str(parent.get("output") or "") or "(no reproduction test ran)"
        messages = variant_messages(
            state.insights.get("coder", []), state.issue, state.code, _patch_of(parent), clip(result, MAX_PROMPT_OUTPUT)
        )
        try:
            reply = await context.llm.structured(messages, PatchVariants, max_tokens=config.max_tokens)
        except LLMOutputError as exc:
            context.log.warning("experepair.variants_unreadable", patch=parent["id"], error=str(exc))
            errors.append(f"variants ({parent['id']}): the variants could not be read; none added: {exc}")
            continue
        for origin, patch in (("expanded", reply.expanded), ("compressed", reply.compressed)):
            if not patch.strip():
                continue
            entry = await _variant_entry(state, parent, origin, patch, config)
            if not entry["applied"]:
                errors.append(f"variants ({entry['id']}): the patch was not applied: {entry['error']}")
            pool.append(entry)
    return {"pool": pool, "errors": errors}


@node(
    "experepair.write_diff_tests",
    state=RepairState,
    reads={"issue", "code", "pool", "errors"},
    writes={"diff_tests", "errors"},
    config=DiffTestsConfig,
)
async def write_diff_tests(state: RepairState, config: DiffTestsConfig, context: RunContext) -> dict[str, Any]:
    """One differential test per temperature, only when at least two different patches applied (else there is
    nothing to tell apart and no call); the prompt shows up to :data:`MAX_DIFF_CANDIDATES` of them."""
    patches = _distinct_patches(state.pool)
    if len(patches) < 2:
        return {"diff_tests": []}
    messages = diff_test_messages(state.issue, state.code, patches[:MAX_DIFF_CANDIDATES], config.max_inputs)
    tests: list[str] = []
    errors = list(state.errors)
    for number, temperature in enumerate(config.temperatures, start=1):
        try:
            reply = await context.llm.structured(messages, DiffTest, temperature=temperature, max_tokens=config.max_tokens)
        except LLMOutputError as exc:
            context.log.warning("experepair.diff_test_unreadable", test=number, error=str(exc))
            errors.append(f"write_diff_tests (test {number}): the script could not be read; it is left out: {exc}")
            continue
        if reply.script.strip():
            tests.append(reply.script)
    return {"diff_tests": tests, "errors": errors}


def _shown(execution: Execution, limits: Limits) -> str:
    """A differential test's run as it is kept and compared: described, stable from run to run, bounded."""
    return clip(stable_output(describe_execution(execution, limits)), MAX_PROMPT_OUTPUT)


@node(
    "experepair.run_diff_tests",
    state=RepairState,
    reads={"repo_path", "commit", "pool", "diff_tests", "errors"},
    writes={"pool", "diff_baseline", "errors"},
    config=SandboxConfig,
)
async def run_diff_tests(state: RepairState, config: SandboxConfig, context: RunContext) -> dict[str, Any]:
    """Every differential test on the unfixed code (one worktree) and on each applied entry (one worktree per
    distinct diff, shared by the entries making that change); each output described and bounded."""
    if not state.diff_tests:
        return {}
    limits = config.limits()
    async with Worktree(Path(state.repo_path), state.commit) as tree:
        baseline = [_shown(await run_python(tree, test, limits), limits) for test in state.diff_tests]
    runs: dict[str, list[str]] = {}
    pool: list[dict[str, Any]] = []
    errors = list(state.errors)
    for entry in state.pool:
        outputs: list[str] = []
        if entry.get("applied"):
            key = normalised_diff(_patch_of(entry))
            if key not in runs:
                run = await run_patch(state.repo_path, state.commit, _patch_of(entry), state.diff_tests, limits)
                if not run.applied:
                    errors.append(f"run_diff_tests ({entry['id']}): the patch no longer applies: {run.error}")
                runs[key] = [_shown(execution, limits) for execution in run.executions]
            outputs = runs[key]
        pool.append({**entry, "diff_outputs": outputs})
    return {"pool": pool, "diff_baseline": baseline, "errors": errors}


async def _ask(
    context: RunContext, messages: list[Message], schema: type[_ReplyT], config: ReplyConfig, what: str, errors: list[str]
) -> _ReplyT | None:
    """The reply, or None with the error recorded: that signal is skipped and validation carries on."""
    try:
        return await context.llm.structured(messages, schema, max_tokens=config.max_tokens)
    except LLMOutputError as exc:
        context.log.warning("experepair.validate_unreadable", call=what, error=str(exc))
        errors.append(f"validate ({what}): the reply could not be read; it is skipped: {exc}")
        return None


def _numbers(numbers: list[int], count: int) -> list[int]:
    """The valid group numbers of a reply, once each, in its order."""
    return [number for number in dict.fromkeys(numbers) if 1 <= number <= count]


@node(
    "experepair.validate",
    state=RepairState,
    reads={"issue", "reproduced", "test_script", "test_output", "pool", "diff_tests", "diff_baseline", "errors"},
    writes={"validation", "errors"},
    config=ReplyConfig,
)
async def validate(state: RepairState, config: ReplyConfig, context: RunContext) -> dict[str, Any]:
    """Group the applied entries; with two groups or more, one selection call, then one ranking call per
    differential test whose outputs differ between groups (a test every group passes the same way ranks nothing)."""
    groups = group_pool(state.pool, by_outputs=bool(state.test_script or state.diff_tests))
    errors = list(state.errors)
    selected: list[int] = []
    ranks: list[list[int]] = []
    if len(groups) > 1:
        shown = [
            {"patch": _patch_of(members[0]), "size": len(members), "output": members[0].get("output", ""),
             "diff_outputs": members[0].get("diff_outputs", [])}
            for members in groups
        ]  # fmt: skip
        messages = select_messages(state.issue, reproduction_text(state), state.diff_tests, state.diff_baseline, shown)
        selection = await _ask(context, messages, GroupSelection, config, "selection", errors)
        selected = _numbers(selection.correct, len(groups)) if selection else []
        for index, test in enumerate(state.diff_tests):
            outputs = [str(group["diff_outputs"][index]) if index < len(group["diff_outputs"]) else "" for group in shown]
            if len(set(outputs)) < 2:
                ranks.append([])
                continue
            baseline = state.diff_baseline[index] if index < len(state.diff_baseline) else ""
            ranking = await _ask(
                context, rank_messages(state.issue, test, baseline, outputs), GroupRanking, config, f"ranking {index + 1}", errors
            )
            ranks.append(_numbers(ranking.ranking, len(groups)) if ranking else [])
    return {"validation": validation_summary(groups, selected, ranks), "errors": errors}


@node(
    "experepair.finish",
    state=RepairState,
    reads={"pool", "validation", "reproduced", "test_script", "test_output", "diff_tests", "round", "review", "errors"},
    writes={"final_patch", "status", "evidence", "errors"},
    config=SubmitConfig,
)
async def finish(state: RepairState, config: SubmitConfig, context: RunContext) -> dict[str, Any]:
    """Submit the first patch of the validation order (without validation: the pool in the same order, with no
    model signal), or with ``submit: accepted`` the first accepted one. ``resolved`` only when the submitted patch
    was accepted; a top-ranked patch nobody accepted is still submitted by ``best``, as ``unresolved``."""
    summary = state.validation or validation_summary(
        group_pool(state.pool, by_outputs=bool(state.test_script or state.diff_tests)), [], []
    )
    by_id = {str(entry["id"]): entry for entry in state.pool}
    order = [by_id[entry_id] for entry_id in summary["order"] if entry_id in by_id]
    accepted = [entry for entry in order if entry.get("correct")]
    submitted = order[0] if config.submit == "best" and order else (accepted[0] if accepted else None)
    evidence: dict[str, Any] = {
        "reproduced": state.reproduced,
        "test_script": state.test_script,
        "buggy_output": state.test_output,
        "rounds": state.round + 1,
        "review": state.review,
        "chosen": str(submitted["id"]) if submitted else "",
        "groups": len(summary["groups"]),
        "accepted": bool(submitted and submitted.get("correct")),
    }
    if submitted is None:
        reason = f"unresolved: no candidate patch was applied and accepted after {state.round + 1} round(s)"
        return {"final_patch": "", "status": "unresolved", "evidence": evidence, "errors": [*state.errors, reason]}
    evidence.update(patched_output=submitted.get("output", ""), passed=bool(submitted.get("passed")))
    update: dict[str, Any] = {"final_patch": _patch_of(submitted), "evidence": evidence}
    if submitted.get("correct"):
        return {**update, "status": "resolved"}
    reason = (
        f"unresolved: no reviewer accepted the submitted patch {submitted['id']}; it is submitted as the top-ranked "
        f"of {len(order)} applied patch(es) after {state.round + 1} round(s)"
    )
    return {**update, "status": "unresolved", "errors": [*state.errors, reason]}
