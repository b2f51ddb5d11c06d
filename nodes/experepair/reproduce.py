"""The Test Agent's phase of a repair (``graphs/library/experepair.yaml``): reproduce the issue.

load_insights -> write_test -> run_test -> judge_test -> [retry write_test with an R2 demo | localize, in
``patch.py``]. The first script is written from the issue and an R1 example (a working script of another issue);
a retry from the failed script, its output, the judge's advice and an R2 pair (a failing script of another issue
and the one that then worked). A script whose reply cannot be read is a failed attempt; an unreadable verdict
counts as NO.

What the prompts get follows the run's switches (``model.py``): insights in the system prompt only when
:func:`~mnemoflow.nodes.experepair.insights.reads_semantic`, R1/R2 demos only when
:func:`~mnemoflow.nodes.experepair.retrieval.reads_episodic`. In the seed phase both are off: the Test Agent
works from the static prompts (an example reads "Not available"), as on an empty memory, while ``record`` and
``update_insights`` still learn from the run.

The Test Agent's phase holds no gate of its own: the judge alone decides whether a script reproduces the issue
(it sees the exit code as part of the run). The prompt does ask for a script that exits non-zero while the bug is
present, the convention review's optional exit-code gate relies on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mnemoflow.errors import LLMOutputError, NodeError
from mnemoflow.nodes.context import RunContext
from mnemoflow.nodes.experepair.agents import (
    MAX_PROMPT_OUTPUT,
    Judgement,
    ReplyConfig,
    TestScript,
    judge_messages,
    tester_messages,
)
from mnemoflow.nodes.experepair.episodes import TestAttempt
from mnemoflow.nodes.experepair.insights import load_insight_records, reads_semantic
from mnemoflow.nodes.experepair.model import ROLES
from mnemoflow.nodes.experepair.repository import SandboxConfig, describe_execution, run_script
from mnemoflow.nodes.experepair.retrieval import Phase, ScoredDemo, reads_episodic, retrieve_demos, trim_output, with_demo
from mnemoflow.nodes.experepair.state import RepairState
from mnemoflow.nodes.registry import NoConfig, node, router
from mnemoflow.nodes.tokens import clip

__all__ = ["TestLoopConfig"]


class TestLoopConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_test_attempts: int = Field(3, ge=1, le=10, description="Scripts the Test Agent may write before giving up.")


@node(
    "experepair.load_insights",
    state=RepairState,
    reads={"repo_path", "issue", "memory", "semantic", "phase"},
    writes={"insights", "insight_ids"},
)
async def load_insights_node(state: RepairState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """The tester's and the coder's current insights (semantic memory) and their record ids, for the system
    prompts and the ``USED_INSIGHT`` links; none when the run does not read semantic memory (memory or semantic
    off, or the seed phase). Refuse a missing clone or an empty issue."""
    if not state.issue.strip():
        raise NodeError(f"issue {state.issue_id!r}: the issue text is empty; nothing to repair")
    if not Path(state.repo_path).is_dir():
        raise NodeError(f"repo_path {state.repo_path!r} is not a folder: give a local clone of {state.repo!r}")
    if not reads_semantic(state):
        return {"insights": {role: [] for role in ROLES}, "insight_ids": {role: [] for role in ROLES}}
    records = {role: await load_insight_records(context.store, context.namespace, role) for role in ROLES}
    return {
        "insights": {role: [str(node.properties["text"]) for node in nodes] for role, nodes in records.items()},
        "insight_ids": {role: [node.id for node in nodes] for role, nodes in records.items()},
    }


@node(
    "experepair.write_test",
    state=RepairState,
    reads={
        "repo",
        "issue_id",
        "issue",
        "memory",
        "episodic",
        "phase",
        "insights",
        "attempts",
        "test_script",
        "test_output",
        "test_tries",
        "demos_used",
        "errors",
    },
    writes={"test_script", "test_tries", "demos_used", "errors"},
    config=ReplyConfig,
)
async def write_test(state: RepairState, config: ReplyConfig, context: RunContext) -> dict[str, Any]:
    """The Test Agent writes a reproduction script: first from the issue and an R1 example; on a retry from the
    failed script, its output, the judge's advice and an R2 (failing -> working) pair. A run that does not read
    episodic memory (memory or episodic off, or the seed phase) retrieves nothing: the prompts are the static ones
    an empty memory gives."""
    retry = bool(state.attempts)
    phase: Phase
    if retry:
        last = state.attempts[-1]
        queries = {"old_exec_result": trim_output(str(last["output"])), "old_test": str(last["script"])}
        phase = "test_retry"
    else:
        queries = {"issue_description": state.issue, "new_test": state.issue}
        phase = "test_initial"
    demo: ScoredDemo | None = None
    if reads_episodic(state):
        demos = await retrieve_demos(
            context.store, context.namespace, phase=phase, repo=state.repo, exclude_issue=state.issue_id,
            queries=queries, issue_text=state.issue,
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
    update: dict[str, Any] = {"test_tries": state.test_tries + 1, "demos_used": with_demo(state.demos_used, phase, demo)}
    try:
        reply = await context.llm.structured(messages, TestScript, max_tokens=config.max_tokens)
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
    execution = await run_script(state.repo_path, state.commit, state.test_script, limits)
    return {"test_output": describe_execution(execution, limits), "test_returncode": execution.returncode}


@node(
    "experepair.judge_test",
    state=RepairState,
    reads={"issue", "test_script", "test_output", "test_returncode", "attempts", "errors"},
    writes={"attempts", "reproduced", "errors"},
    config=ReplyConfig,
)
async def judge_test(state: RepairState, config: ReplyConfig, context: RunContext) -> dict[str, Any]:
    """The judge decides whether the run reproduces the issue; an unreadable verdict counts as NO."""
    if not state.test_script:
        return {"reproduced": False}
    errors = state.errors
    try:
        verdict = await context.llm.structured(
            judge_messages(state.issue, state.test_script, clip(state.test_output, MAX_PROMPT_OUTPUT), state.test_returncode),
            Judgement,
            max_tokens=config.max_tokens,
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
