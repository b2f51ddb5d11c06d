"""ExpeRepair's model calls: write and judge a reproduction test, write, review and refine patches,
propose insight edits.

Prompts follow the paper's composition: the agent's insights go into the SYSTEM prompt as a numbered list; the
retrieved demonstration (only the first) goes into the user/feedback message; then the issue and the last
feedback. Every reply is validated into the models below; the offline stand-ins let a graph run without a model
(they never claim a reproduction or a correct patch).
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from mnemoflow.llm import offline_handler
from mnemoflow.llm.gateway import Message
from mnemoflow.nodes.experepair.model import MAX_INSIGHTS, Role
from mnemoflow.nodes.experepair.state import RepairState
from mnemoflow.nodes.tokens import clip

__all__ = [
    "CODER_SYSTEM",
    "INSIGHTS_SYSTEM",
    "JUDGE_SYSTEM",
    "MAX_PROMPT_OUTPUT",
    "REFINE_SYSTEM",
    "REVIEW_SYSTEM",
    "TESTER_SYSTEM",
    "ReplyConfig",
    "InsightEditReply",
    "InsightEdits",
    "Judgement",
    "Patch",
    "Review",
    "TestScript",
    "candidates_text",
    "insights_block",
    "insight_messages",
    "judge_messages",
    "patch_messages",
    "refine_messages",
    "reproduction_text",
    "review_messages",
    "tester_messages",
    "trajectory_text",
]

MAX_PROMPT_OUTPUT = 4_000
"""Bound on one execution output inside a prompt (head and tail kept)."""


class ReplyConfig(BaseModel):
    """The config of a node that asks the model: how long its reply may be. A small model can run on inside its JSON
    until the cap (and the gateway's retries with more room), so a graph fitted to one sets it lower."""

    model_config = ConfigDict(extra="forbid")
    max_tokens: int | None = Field(
        None, ge=16, le=32_768, description="Longest reply the model may write, in tokens; unset: the reply schema's own cap."
    )


class _Reply(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TestScript(_Reply):
    """A self-contained Python script reproducing the issue."""
    REPLY_TOKENS: ClassVar[int] = 1500

    __test__ = False  # not a pytest class

    script: str = Field(min_length=1, max_length=20_000, description="Python code; exits non-zero while the bug is present.")


class Judgement(_Reply):
    """Does the script's run reproduce the issue?"""
    REPLY_TOKENS: ClassVar[int] = 600

    analysis: str = Field(max_length=4_000)
    reproduces: bool
    advice: str = Field("", max_length=4_000, description="How to fix the script when it does not reproduce the issue.")


class Patch(_Reply):
    """One candidate patch: the Patch Agent is asked once per candidate, each call at its own temperature."""
    REPLY_TOKENS: ClassVar[int] = 2000

    patch: str = Field(min_length=1, max_length=20_000, description="One unified diff (git diff format).")


class Review(_Reply):
    """The reviewer's ranking of the candidates (numbers as shown, best first) and which of them fix the issue."""
    REPLY_TOKENS: ClassVar[int] = 800

    ranking: list[int] = Field(default_factory=list, max_length=16)
    correct: list[int] = Field(default_factory=list, max_length=16)
    analysis: str = Field("", max_length=4_000)
    advice: str = Field("", max_length=4_000, description="How the best candidate should change when none is correct.")


class InsightEditReply(_Reply):
    operation: Literal["ADD", "EDIT", "REMOVE"]
    number: int = Field(0, ge=0, le=100, description="The insight's number (EDIT, REMOVE); ignored for ADD.")
    text: str = Field("", max_length=1_000)


class InsightEdits(_Reply):
    REPLY_TOKENS: ClassVar[int] = 800
    edits: list[InsightEditReply] = Field(default_factory=list, max_length=8)


TESTER_SYSTEM = """You are the Test Agent of a program-repair system. Write a minimal, self-contained Python script
that reproduces the reported issue in the repository (importable from the working directory). Print every test input
and the output you get; end with an assertion so the script exits non-zero while the bug is present and zero once it
is fixed. Reply with JSON {"script": "..."}."""

JUDGE_SYSTEM = """You judge whether a reproduction script reproduces a reported issue, from the script and its
execution output on the unfixed repository. Reply with JSON {"analysis": "...", "reproduces": true|false,
"advice": "..."}; advice says how to change the script when it does not reproduce the issue."""

CODER_SYSTEM = """You are the Patch Agent of a program-repair system. Write a patch that fixes the issue in the code
shown: one unified diff in git format (--- a/path, +++ b/path, @@ hunks) against the files as shown. The code is
verbatim under "--- path (whole file, N lines)" or "--- path (lines a-b of N)" headers: use those line numbers in
the @@ hunk headers. Reply with JSON {"patch": "diff"}."""

REVIEW_SYSTEM = """You review candidate patches for an issue. For each you see whether it applied and, when there is a
reproduction test, its output with the patch. Reply with JSON {"ranking": [numbers, best first], "correct": [numbers
of the patches that fix the issue], "analysis": "...", "advice": "how the best patch should change if none is
correct"}."""

REFINE_SYSTEM = """You are the Patch Agent of a program-repair system, refining a patch a reviewer rejected. Follow
the review and write the improved patch: one unified diff in git format (--- a/path, +++ b/path, @@ hunks) against
the files as shown, not against the rejected patch. Reply with JSON {"patch": "diff"}."""

INSIGHTS_SYSTEM = """You maintain a short numbered list of insights for the {role} agent of a program-repair system:
general lessons (testing or patching strategies, common pitfalls) useful for OTHER issues of the project. Given the
current list and this issue's trajectory, reply with JSON {{"edits": [{{"operation": "ADD"|"EDIT"|"REMOVE",
"number": n, "text": "..."}}]}}: ADD a new lesson, EDIT insight n, REMOVE insight n. Keep the list under 15; reply
with no edits when nothing new was learned."""


def insights_block(insights: list[str]) -> str:
    """The insights as the system prompt shows them: a numbered list, at most :data:`MAX_INSIGHTS`."""
    if not insights:
        return ""
    lines = [f"{number}. {text}" for number, text in enumerate(insights[:MAX_INSIGHTS], start=1)]
    return "\n\nExperiences from other issues of this project:\n" + "\n".join(lines)


def tester_messages(
    insights: list[str], issue: str, *, example: str = "", previous: str = "", output: str = "", analysis: str = "",
    advice: str = "", demo_old: str = "", demo_new: str = "",
) -> list[Message]:  # fmt: skip
    """First attempt: the issue with an example script (R1); a retry: the failed script, its output, the judge's
    analysis and advice, and a failing -> working pair from another issue (R2)."""
    parts = [f"Issue:\n{issue}"]
    if not previous:
        example_text = example or "Not available"
        parts.append(f"Example of a working reproduction script for another issue of this project:\n{example_text}")
    else:
        parts += [f"Your previous script:\n{previous}", f"Its output:\n{output}"]
        parts += [f"Judge's analysis: {analysis}", f"Advice: {advice}"]
        if demo_new:
            parts.append(
                "On another issue of this project, a script like this one failed:\n"
                f"{demo_old}\nand this corrected script reproduced the issue:\n{demo_new}"
            )
    parts.append("Write the reproduction script.")
    return [
        {"role": "system", "content": TESTER_SYSTEM + insights_block(insights)},
        {"role": "user", "content": "\n\n".join(parts)},
    ]


def judge_messages(issue: str, script: str, output: str, returncode: int | None) -> list[Message]:
    user = f"Issue:\n{issue}\n\nScript:\n{script}\n\nExit code: {returncode}\nOutput:\n{output}"
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


def patch_messages(insights: list[str], issue: str, code: str, reproduction: str) -> list[Message]:
    """One candidate's prompt; every candidate of a round gets the same one (they differ by temperature)."""
    user = f"Issue:\n{issue}\n\nReproduction:\n{reproduction}\n\nCode:\n{code}\n\nWrite the patch."
    return [{"role": "system", "content": CODER_SYSTEM + insights_block(insights)}, {"role": "user", "content": user}]


def review_messages(issue: str, reproduction: str, candidates: str) -> list[Message]:
    user = f"Issue:\n{issue}\n\nReproduction test:\n{reproduction}\n\nCandidates:\n{candidates}"
    return [{"role": "system", "content": REVIEW_SYSTEM}, {"role": "user", "content": user}]


def refine_messages(
    insights: list[str],
    issue: str,
    code: str,
    patch: str,
    result: str,
    analysis: str,
    advice: str,
    demo_old: str,
    demo_new: str,
) -> list[Message]:
    """One refinement's prompt: the rejected patch, its result, ONE review's analysis and advice, then the R3 pair."""
    parts = [f"Issue:\n{issue}", f"Code:\n{code}", f"Rejected patch:\n{patch or '(none)'}", f"Its test result:\n{result}"]
    parts += [f"Reviewer's analysis: {analysis or '(none)'}", f"Reviewer's advice: {advice or '(none)'}"]
    if demo_new:
        parts.append(
            f"On another issue of this project, this patch was wrong:\n{demo_old}\nand this refined patch was correct:\n{demo_new}"
        )
    parts.append("Write the refined patch.")
    return [
        {"role": "system", "content": REFINE_SYSTEM + insights_block(insights)},
        {"role": "user", "content": "\n\n".join(parts)},
    ]


def insight_messages(role: str, insights: list[str], trajectory: str) -> list[Message]:
    current = "\n".join(f"{number}. {text}" for number, text in enumerate(insights, start=1)) or "(none yet)"
    user = f"Current insights:\n{current}\n\nThis issue's trajectory:\n{trajectory}"
    return [{"role": "system", "content": INSIGHTS_SYSTEM.format(role=role)}, {"role": "user", "content": user}]


def reproduction_text(state: RepairState) -> str:
    """The reproduction as the localization stages, the Patch Agent and the reviewer see it: the script judged to reproduce
    the issue and its output, else the last attempt, else a note that there is none."""
    if state.reproduced:
        return f"Script (judged to reproduce the issue):\n{state.test_script}\n\nIts output:\n{clip(state.test_output, MAX_PROMPT_OUTPUT)}"
    if state.test_script:
        return (
            "No script was judged to reproduce the issue. The last attempt:\n"
            f"{state.test_script}\n\nIts output:\n{clip(state.test_output, MAX_PROMPT_OUTPUT)}"
        )
    return "No reproduction script is available."


def candidates_text(candidates: list[dict[str, Any]], tested: bool) -> str:
    """The numbered candidates as the reviewer sees them: each diff, whether it applied and, when ``tested`` (a
    reproduction script ran on them), its output."""
    blocks = []
    for number, candidate in enumerate(candidates, start=1):
        if not candidate["applied"]:
            status = f"did not apply: {candidate['error']}"
        elif not tested:
            status = "applied (there is no reproduction test to run)"
        else:
            verdict = "passed" if candidate["passed"] else "failed"
            status = f"applied; reproduction test {verdict}. Output:\n{clip(str(candidate['output']), 2_000)}"
        blocks.append(f"[{number}]\n{candidate['diff'] or candidate['patch']}\n{status}")
    return "\n\n".join(blocks)


def trajectory_text(state: RepairState, role: Role) -> str:
    """What the issue taught ``role``, for its insight edits: the tester sees its attempts, the coder its rounds."""
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


# -- offline stand-ins: enough to see the graph run without a model; they never claim success --------------


def _issue(messages: list[Message]) -> str:
    match = re.search(r"Issue:\n(.*?)(?:\n\n|\Z)", str(messages[-1].get("content", "")), re.DOTALL)
    return match.group(1).strip() if match else ""


@offline_handler(TestScript)
def _offline_script(messages: list[Message]) -> TestScript:
    return TestScript(script=f"print({_issue(messages)[:200]!r})\nraise SystemExit('no reproduction written offline')\n")


@offline_handler(Judgement)
def _offline_judgement(messages: list[Message]) -> Judgement:
    return Judgement(analysis="offline model: no judgement", reproduces=False, advice="")


@offline_handler(Patch)
def _offline_patch(messages: list[Message]) -> Patch:
    return Patch(patch="offline model: no patch written")


@offline_handler(Review)
def _offline_review(messages: list[Message]) -> Review:
    return Review(ranking=[], correct=[], analysis="offline model: no review", advice="")


@offline_handler(InsightEdits)
def _offline_insight_edits(messages: list[Message]) -> InsightEdits:
    return InsightEdits(edits=[])
