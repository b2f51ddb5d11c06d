"""What an issue teaches ExpeRepair, after the outcome (``graphs/library/experepair.yaml``): record -> update_insights.

``experepair.record`` writes the episodic memory: the issue's outcome, its test demos (attempt pairs) and patch
demos (rejected -> correct), see ``episodes.py``, and links the issue to the demos and insights its prompts used
(``USED_DEMO``, ``USED_INSIGHT``). ``experepair.update_insights`` edits the semantic memory: per role, the model
proposes edits of its numbered insights from this issue's trajectory (``insights.py``).

Both learn in the seed phase too (that is what the seed phase is for) and each stops with its switch: no demos
without episodic memory, no insight edits without semantic memory, neither with memory off (see the table in
``model.py``).
"""

from __future__ import annotations

from typing import Any, Literal

from mnemoflow.errors import LLMOutputError
from mnemoflow.nodes.context import RunContext
from mnemoflow.nodes.experepair.agents import InsightEdits, ReplyConfig, insight_messages, trajectory_text
from mnemoflow.nodes.experepair.episodes import (
    PatchRound,
    TestAttempt,
    record_issue,
    record_patch_rounds,
    record_test_attempts,
    record_usage,
    writes_episodic,
)
from mnemoflow.nodes.experepair.insights import InsightEdit, apply_insight_edits, load_insights, writes_semantic
from mnemoflow.nodes.experepair.model import ROLES
from mnemoflow.nodes.experepair.state import RepairState
from mnemoflow.nodes.registry import NoConfig, node


@node(
    "experepair.record",
    state=RepairState,
    reads={
        "repo",
        "issue_id",
        "issue",
        "memory",
        "episodic",
        "attempts",
        "rounds",
        "status",
        "final_patch",
        "evidence",
        "demos_used",
        "insight_ids",
    },
    writes=set(),
)
async def record(state: RepairState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """Episodic memory: the issue's outcome and what its prompts used (``USED_DEMO``, ``USED_INSIGHT``), then,
    when the run writes episodic memory (in either phase), its test demos (attempt pairs) and patch demos
    (rejected -> correct). Otherwise only the outcome and the links: the run's record, which no retrieval reads."""
    common = {"repo": state.repo, "issue_id": state.issue_id, "issue_text": state.issue}
    status: Literal["resolved", "unresolved"] = "resolved" if state.status == "resolved" else "unresolved"
    await record_issue(
        context.store, context.namespace, **common, status=status, final_patch=state.final_patch, evidence=state.evidence
    )
    await record_usage(
        context.store, context.namespace, repo=state.repo, issue_id=state.issue_id, demos_used=state.demos_used,
        insight_ids=state.insight_ids,
    )  # fmt: skip
    if not writes_episodic(state):
        return {}
    attempts = [TestAttempt.model_validate(attempt) for attempt in state.attempts]
    await record_test_attempts(context.store, context.namespace, **common, attempts=attempts)
    rounds = [PatchRound.model_validate(entry) for entry in state.rounds]
    await record_patch_rounds(context.store, context.namespace, **common, rounds=rounds)
    return {}


@node(
    "experepair.update_insights",
    state=RepairState,
    reads={"issue", "memory", "semantic", "status", "attempts", "rounds", "review", "insights", "errors"},
    writes={"insights", "errors"},
    config=ReplyConfig,
)
async def update_insights(state: RepairState, config: ReplyConfig, context: RunContext) -> dict[str, Any]:
    """Semantic memory: per role, the model proposes ADD/EDIT/REMOVE edits of the numbered insights from this
    issue's trajectory; they are applied in order (cap 15). An unreadable proposal changes nothing. Runs in the
    seed phase too (its prompts showed no insight, but the list grows). With memory or semantic memory off there
    is no call: a run that never reads insights should not pay for writing them."""
    if not writes_semantic(state):
        return {}
    insights = dict(state.insights)
    errors = list(state.errors)
    for role in ROLES:
        current = await load_insights(context.store, context.namespace, role)
        try:
            messages = insight_messages(role, current, trajectory_text(state, role))
            reply = await context.llm.structured(messages, InsightEdits, max_tokens=config.max_tokens)
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
