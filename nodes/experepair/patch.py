"""The Patch Agent's phase of a repair (``graphs/library/experepair.yaml``): candidates, reviews, refinement.

generate -> evaluate -> review -> [variants | refine -> evaluate | validate] (variants and validation live in
``validate.py``). As the paper: one candidate per temperature (0.0, 0.8, 0.8, 0.8), each applied in a fresh
throwaway worktree where the reproduction script runs; several reviewers rank the round's candidates and mark the
correct ones, and their verdicts are combined; when none is correct, the top-ranked candidate is refined once per
review (with that review's analysis and advice and an R3 wrong -> correct pair), up to ``max_rounds`` rounds.
Without a reproduction there is nothing to refine against: the round goes straight to the variants.

A reply that does not validate is recorded in ``errors`` and the run carries on: an unreadable patch loses that
one candidate, an unreadable review counts as a reviewer who accepts nothing.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mnemoflow.errors import LLMOutputError
from mnemoflow.llm.gateway import Message
from mnemoflow.nodes.context import RunContext
from mnemoflow.nodes.experepair.agents import (
    MAX_PROMPT_OUTPUT,
    Patch,
    ReplyConfig,
    Review,
    candidates_text,
    patch_messages,
    refine_messages,
    reproduction_text,
    review_messages,
)
from mnemoflow.nodes.experepair.episodes import PatchRound
from mnemoflow.nodes.experepair.repository import SandboxConfig, describe_execution, run_patch
from mnemoflow.nodes.experepair.retrieval import ScoredDemo, reads_episodic, retrieve_demos, with_demo
from mnemoflow.nodes.experepair.state import RepairState
from mnemoflow.nodes.registry import node, router
from mnemoflow.nodes.tokens import clip

__all__ = ["GenerateConfig", "RefineConfig", "ReviewConfig", "RoundsConfig", "combine_reviews"]

Temperature = Annotated[float, Field(ge=0, le=2)]
Origin = Literal["generate", "refine"]


class GenerateConfig(ReplyConfig):
    temperatures: list[Temperature] = Field(
        default_factory=lambda: [0.0, 0.8, 0.8, 0.8], min_length=1, max_length=8,
        description="One candidate patch per entry, sampled at that temperature (the paper: 0.0, 0.8, 0.8, 0.8).",
    )  # fmt: skip


class ReviewConfig(ReplyConfig):
    reviews: int = Field(4, ge=1, le=8, description="Times the reviewer is asked; the verdicts are combined.")
    temperature: Temperature = Field(
        0.8, description="Temperature of every review after the first (which is at 0.0): the reviews are samples."
    )
    exit_code_gate: bool = Field(
        False, description="Accept a candidate only when the reproduction script exits 0 on it (not in the paper)."
    )


class RefineConfig(ReplyConfig):
    temperature: Temperature = Field(
        0.0, description="Temperature of each refinement; the prompts already differ by the review each carries."
    )


class RoundsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_rounds: int = Field(3, ge=0, le=10, description="Refinement rounds after the initial generation (the paper: 3).")


def _new_entries(patches: list[str], round_: int, origin: Origin) -> list[dict[str, Any]]:
    """Pool entries (see ``RepairState.pool``) for a round's patches, numbered ``r{round}c{n}`` in the order the
    reviewers see them; evaluation and review fill in the rest."""
    return [
        {
            "id": f"r{round_}c{number}", "round": round_, "origin": origin, "patch": patch, "applied": None,
            "error": "", "diff": "", "output": "", "passed": False, "correct": False, "votes": 0, "reviews": 0,
            "review_score": 0.0, "rank": None, "diff_outputs": [],
        }  # fmt: skip
        for number, patch in enumerate(patches, start=1)
    ]


async def _ask_patches(
    context: RunContext, calls: list[tuple[str, list[Message], float]], max_tokens: int | None
) -> tuple[list[str], list[str]]:
    """One :class:`Patch` per call (label, prompt, temperature), asked one after the other so that the candidates
    and the call records keep the calls' order; an unreadable reply loses its candidate. Returns the patches and
    the errors."""
    patches: list[str] = []
    errors: list[str] = []
    for label, messages, temperature in calls:
        try:
            reply = await context.llm.structured(messages, Patch, temperature=temperature, max_tokens=max_tokens)
        except LLMOutputError as exc:
            context.log.warning("experepair.patch_unreadable", call=label, error=str(exc))
            errors.append(f"{label}: the patch could not be read: {exc}")
            continue
        patches.append(reply.patch)
    return patches, errors


@node(
    "experepair.generate",
    state=RepairState,
    reads={"issue", "insights", "code", "reproduced", "test_script", "test_output", "errors"},
    writes={"candidates", "round", "errors"},
    config=GenerateConfig,
)
async def generate(state: RepairState, config: GenerateConfig, context: RunContext) -> dict[str, Any]:
    """The Patch Agent writes one unified diff per temperature, all from the same prompt (coder insights in the
    system prompt; no demonstration, as the reference's initial generation)."""
    messages = patch_messages(state.insights.get("coder", []), state.issue, state.code, reproduction_text(state))
    calls = [
        (f"generate (candidate {number}, temperature {temperature:g})", messages, temperature)
        for number, temperature in enumerate(config.temperatures, start=1)
    ]
    patches, errors = await _ask_patches(context, calls, config.max_tokens)
    return {"candidates": _new_entries(patches, 0, "generate"), "round": 0, "errors": [*state.errors, *errors]}


@node(
    "experepair.evaluate",
    state=RepairState,
    reads={"repo_path", "commit", "candidates", "reproduced", "test_script", "round", "errors"},
    writes={"candidates", "errors"},
    config=SandboxConfig,
)
async def evaluate(state: RepairState, config: SandboxConfig, context: RunContext) -> dict[str, Any]:
    """Each candidate in a fresh worktree: apply it (one that does not is recorded and skipped), then run the
    reproduction script there when the judge accepted one (a script that reproduces nothing says nothing about a
    patch); ``passed`` when it exits 0 in time."""
    limits = config.limits()
    scripts = [state.test_script] if state.reproduced and state.test_script else []
    evaluated: list[dict[str, Any]] = []
    errors = list(state.errors)
    for number, candidate in enumerate(state.candidates, start=1):
        run = await run_patch(state.repo_path, state.commit, str(candidate["patch"]), scripts, limits)
        entry = {**candidate, "applied": run.applied, "error": run.error, "diff": run.diff}
        if run.executions:
            [execution] = run.executions
            entry.update(output=describe_execution(execution, limits), passed=execution.passed)
        if not run.applied:
            errors.append(f"evaluate (round {state.round}, candidate {number}): the patch was not applied: {run.error}")
        evaluated.append(entry)
    return {"candidates": evaluated, "errors": errors}


def _order(ranking: list[int], candidates: list[dict[str, Any]]) -> list[int]:
    """A reviewer's full order of the candidate numbers: its ranking (unknown numbers and repeats dropped), then the
    applied candidates it left out, then the rest, each by number."""
    numbers = range(1, len(candidates) + 1)
    order = [number for number in dict.fromkeys(ranking) if number in numbers]
    order += [number for number in numbers if number not in order and candidates[number - 1]["applied"]]
    return order + [number for number in numbers if number not in order]


def combine_reviews(candidates: list[dict[str, Any]], verdicts: list[Review | None], gate: bool) -> dict[str, Any]:
    """Score ``candidates`` (in place) from the reviewers' ``verdicts`` (None: an unreadable review) and return
    the combined review.

    - ``votes``: the reviewers that marked the candidate correct; ``reviews``: the reviewers asked (unreadable
      ones included, so they count as accepting nothing).
    - ``review_score``: ``1 - (mean position - 1) / (N - 1)`` over the readable reviewers' full orders (see
      :func:`_order`), N the round's candidates: 1 when every readable reviewer ranked it first, 0 when every one
      ranked it last; 1 for a lone candidate; 0 when no review could be read. Rounded to 4 places.
    - ``correct``: a majority (``votes * 2 > reviews``), the patch applied and, with ``gate``, the reproduction
      script exited 0 on it.
    - ``rank``: 1.. by correct, then review_score, then passed (ties by number).

    The combined review: ``ranking`` (candidate numbers by rank), ``correct`` (the numbers accepted, by rank) and
    the ``analysis`` and ``advice`` of the first readable reviewer who ranked the top candidate first (else of the
    first readable one; empty when none could be read).
    """
    readable = [verdict for verdict in verdicts if verdict is not None]
    orders = [_order(verdict.ranking, candidates) for verdict in readable]
    count = len(candidates)
    for number, candidate in enumerate(candidates, start=1):
        votes = sum(number in verdict.correct for verdict in readable)
        score = 0.0
        if orders:
            mean = sum(order.index(number) + 1 for order in orders) / len(orders)
            score = 1.0 if count == 1 else 1 - (mean - 1) / (count - 1)
        accepted = votes * 2 > len(verdicts) and bool(candidate["applied"]) and (bool(candidate["passed"]) or not gate)
        candidate.update(votes=votes, reviews=len(verdicts), review_score=round(score, 4), correct=accepted)
    ranking = sorted(
        range(1, count + 1),
        key=lambda n: (not candidates[n - 1]["correct"], -candidates[n - 1]["review_score"], not candidates[n - 1]["passed"], n),
    )
    for rank, number in enumerate(ranking, start=1):
        candidates[number - 1]["rank"] = rank
    top = ranking[0] if ranking else None
    chosen = next((verdict for verdict, order in zip(readable, orders, strict=True) if order[0] == top), None)
    chosen = chosen or (readable[0] if readable else Review())
    correct = [number for number in ranking if candidates[number - 1]["correct"]]
    return {"ranking": ranking, "correct": correct, "analysis": chosen.analysis, "advice": chosen.advice}


@node(
    "experepair.review",
    state=RepairState,
    reads={"issue", "candidates", "reproduced", "test_script", "test_output", "round", "rounds", "pool", "errors"},
    writes={"candidates", "rounds", "review", "reviews", "pool", "errors"},
    config=ReviewConfig,
)
async def review(state: RepairState, config: ReviewConfig, context: RunContext) -> dict[str, Any]:
    """``reviews`` reviewers (the first at temperature 0, the rest sampled) rank the round's candidates and mark the
    correct ones; :func:`combine_reviews` scores and ranks them. The scored candidates join the ``pool``; the
    round's top-ranked patch and whether it was accepted join ``rounds`` (the patch demonstrations)."""
    candidates = [dict(candidate) for candidate in state.candidates]
    errors = list(state.errors)
    if not candidates:  # nothing to review: the refinement starts over from the feedback below
        verdict = Review(analysis="no candidate patch could be read", advice="write one unified diff against the files as shown")
        return {"review": verdict.model_dump(), "reviews": [verdict.model_dump()], "errors": errors}
    messages = review_messages(state.issue, reproduction_text(state), candidates_text(candidates, tested=state.reproduced))
    verdicts: list[Review | None] = []
    for number in range(1, config.reviews + 1):
        temperature = 0.0 if number == 1 else config.temperature
        try:
            verdicts.append(await context.llm.structured(messages, Review, temperature=temperature, max_tokens=config.max_tokens))
        except LLMOutputError as exc:
            context.log.warning("experepair.review_unreadable", review=number, error=str(exc))
            errors.append(f"review (round {state.round}, review {number}): the review could not be read; it accepts no candidate: {exc}")
            verdicts.append(None)
    combined = combine_reviews(candidates, verdicts, gate=config.exit_code_gate and state.reproduced)
    best = candidates[combined["ranking"][0] - 1]
    chosen = PatchRound(patch=str(best["diff"] or best["patch"]), correct=bool(best["correct"]))
    return {
        "candidates": candidates,
        "pool": [*state.pool, *candidates],
        "rounds": [*state.rounds, chosen.model_dump()],
        "review": combined,
        "reviews": [(verdict or Review()).model_dump() for verdict in verdicts],
        "errors": errors,
    }


@router(
    "experepair.after_review",
    state=RepairState,
    reads={"candidates", "reproduced", "round"},
    outcomes={"variants", "refine", "validate"},
    config=RoundsConfig,
)
def after_review(state: RepairState, config: RoundsConfig) -> str:
    """``variants`` when a candidate of this round is correct, or when there is no reproduction (as the reference:
    without one there is nothing to refine against); ``refine`` while rounds remain; ``validate`` when they are
    spent."""
    if not state.reproduced or any(candidate["correct"] for candidate in state.candidates):
        return "variants"
    return "refine" if state.round < config.max_rounds else "validate"


@node(
    "experepair.refine",
    state=RepairState,
    reads={
        "repo", "issue_id", "issue", "memory", "episodic", "phase", "insights", "code", "candidates", "reviews",
        "round", "demos_used", "errors",
    },  # fmt: skip
    writes={"candidates", "round", "demos_used", "errors"},
    config=RefineConfig,
)
async def refine(state: RepairState, config: RefineConfig, context: RunContext) -> dict[str, Any]:
    """The next round: the top-ranked (rejected) candidate refined once per review, each prompt carrying that
    review's analysis and advice, the candidate's test result and an R3 (wrong -> correct) pair, retrieved once
    for the round and listed in ``demos_used`` once per prompt it is put into (none when ``reads_episodic`` is
    false: memory off, episodic memory off, or the seed phase)."""
    ranked = sorted((c for c in state.candidates if c["rank"] is not None), key=lambda c: c["rank"])
    best = ranked[0] if ranked else None
    patch = str(best["diff"] or best["patch"]) if best else ""
    result = (str(best["output"]) or str(best["error"])) if best else "no candidate"
    demo: ScoredDemo | None = None
    if reads_episodic(state):
        demos = await retrieve_demos(
            context.store, context.namespace, phase="patch_refine", repo=state.repo, exclude_issue=state.issue_id,
            queries={"issue_description": state.issue, "old_patch": patch}, issue_text=state.issue,
        )  # fmt: skip
        demo = demos[0] if demos else None
    round_ = state.round + 1
    calls = [
        (
            f"refine (round {round_}, review {number})",
            refine_messages(
                state.insights.get("coder", []), state.issue, state.code, patch, clip(result, MAX_PROMPT_OUTPUT),
                str(verdict.get("analysis", "")), str(verdict.get("advice", "")),
                demo.old_patch if demo else "", demo.new_patch if demo else "",
            ),  # fmt: skip
            config.temperature,
        )
        for number, verdict in enumerate(state.reviews, start=1)
    ]
    patches, errors = await _ask_patches(context, calls, config.max_tokens)
    used = state.demos_used
    for _ in calls:
        used = with_demo(used, "patch_refine", demo)
    return {
        "candidates": _new_entries(patches, round_, "refine"),
        "round": round_,
        "demos_used": used,
        "errors": [*state.errors, *errors],
    }
