"""ExpeRepair's validation calls: patch variants, differential tests, the selection and the ranking of groups.

The Patch Agent writes an expanded and a compressed variant of an accepted patch (the coder's insights in its system
prompt, as for every Patch Agent call); a test writer (no insights: the tester's are lessons for reproduction
scripts) writes differential tests that print what the changed code does on a few inputs; a validator picks the
groups of equivalent patches that behave correctly and ranks them per differential test. Every reply is validated into the models below; the offline stand-ins let a graph run without a
model (no variant, no differential test, no group selected, the groups in the order shown).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from mnemoflow.llm import offline_handler
from mnemoflow.llm.gateway import Message
from mnemoflow.nodes.experepair.agents import insights_block
from mnemoflow.nodes.tokens import clip

__all__ = [
    "DIFF_TEST_SYSTEM",
    "MAX_GROUP_OUTPUT",
    "MAX_SHOWN_PATCH",
    "RANK_SYSTEM",
    "SELECT_SYSTEM",
    "VARIANTS_SYSTEM",
    "DiffTest",
    "GroupRanking",
    "GroupSelection",
    "PatchVariants",
    "diff_test_messages",
    "rank_messages",
    "select_messages",
    "variant_messages",
]

MAX_SHOWN_PATCH = 3_000
"""Bound on one patch or differential test inside a validation prompt (head and tail kept)."""
MAX_GROUP_OUTPUT = 1_500
"""Bound on one group's output of one script inside a validation prompt."""


class _Reply(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PatchVariants(_Reply):
    """Two rewrites of an accepted patch; an empty text: no such variant."""

    REPLY_TOKENS: ClassVar[int] = 3000

    expanded: str = Field("", max_length=20_000, description="Unified diff: the fix, also handling related and edge cases.")
    compressed: str = Field("", max_length=20_000, description="Unified diff: the smallest change that fixes the issue.")


class DiffTest(_Reply):
    """A script printing each input it tries and the output the code gives for it; empty: none written."""

    REPLY_TOKENS: ClassVar[int] = 1500

    script: str = Field("", max_length=20_000, description="Python code; prints every input and its output.")


class GroupSelection(_Reply):
    """The groups (numbers as shown) whose behaviour fixes the issue."""

    REPLY_TOKENS: ClassVar[int] = 600

    correct: list[int] = Field(default_factory=list, max_length=32)
    analysis: str = Field("", max_length=4_000)


class GroupRanking(_Reply):
    """The groups (numbers as shown) ordered by their output on one differential test, best first."""

    REPLY_TOKENS: ClassVar[int] = 400

    ranking: list[int] = Field(default_factory=list, max_length=32)
    analysis: str = Field("", max_length=2_000)


VARIANTS_SYSTEM = """You write two variants of a candidate fix of an issue, as the Patch Agent of a program-repair
system: an expanded one that also handles the related cases and edge cases of the same problem more completely, and
a compressed one that keeps only the smallest change that fixes the issue. Each is a unified
diff in git format (--- a/path, +++ b/path, @@ hunks) against the files as shown, not against the patched code.
Reply with JSON {"expanded": "diff", "compressed": "diff"}."""

DIFF_TEST_SYSTEM = """You write a differential test for a program-repair system: a self-contained Python script (the
repository is importable from the working directory) that calls the code the issue is about on a few different
inputs, including edge cases, and prints each input and the output or exception it gets, one line each. Do not
assert anything: the script runs on several candidate fixes and their printed outputs are compared. Catch
exceptions per input so one failure does not hide the others. Reply with JSON {"script": "..."}."""

SELECT_SYSTEM = """You validate candidate fixes of an issue. Candidates that behave the same are grouped; for each
group you see one patch and its outputs: of the reproduction test and of each differential test, beside the unfixed
code's outputs. Reply with JSON {"correct": [numbers of the groups whose behaviour fixes the issue without breaking
anything else], "analysis": "..."}."""

RANK_SYSTEM = """You rank groups of candidate fixes of an issue by their output on one differential test, given the
test, its output on the unfixed code and each group's output. Rank first the output that shows the issue fixed and
the other inputs still handled correctly. Reply with JSON {"ranking": [group numbers, best first], "analysis": "..."}."""


def variant_messages(insights: list[str], issue: str, code: str, patch: str, result: str) -> list[Message]:
    """The fix (an accepted patch; any applied one when nothing reproduces the issue) with its reproduction
    result, against the localized code."""
    user = (
        f"Issue:\n{issue}\n\nCode:\n{code}\n\nThe fix:\n{patch}\n\nIts reproduction test result:\n{result}\n\n"
        "Write the expanded and the compressed variant."
    )
    return [{"role": "system", "content": VARIANTS_SYSTEM + insights_block(insights)}, {"role": "user", "content": user}]


def _numbered_patches(patches: list[str]) -> str:
    """The candidate patches as the test writer sees them, numbered, each bounded."""
    return "\n\n".join(f"[{number}]\n{clip(patch.strip(), MAX_SHOWN_PATCH)}" for number, patch in enumerate(patches, start=1))


def diff_test_messages(issue: str, code: str, patches: list[str], max_inputs: int) -> list[Message]:
    """The issue, the localized code and the distinct candidate patches the test has to tell apart."""
    user = (
        f"Issue:\n{issue}\n\nCode:\n{code}\n\nCandidate patches:\n{_numbered_patches(patches)}\n\n"
        f"Write one differential test trying at most {max_inputs} inputs."
    )
    return [{"role": "system", "content": DIFF_TEST_SYSTEM}, {"role": "user", "content": user}]


def _tests_text(tests: list[str], baseline: list[str]) -> str:
    blocks = []
    for number, script in enumerate(tests, start=1):
        unfixed = clip(baseline[number - 1], MAX_GROUP_OUTPUT) if number <= len(baseline) else "(not run)"
        blocks.append(f"Differential test {number}:\n{clip(script, MAX_SHOWN_PATCH)}\nIts output on the unfixed code:\n{unfixed}")
    return "\n\n".join(blocks)


def select_messages(
    issue: str, reproduction: str, tests: list[str], baseline: list[str], groups: list[dict[str, Any]]
) -> list[Message]:
    """``groups``: per group its patch, its reproduction output and its outputs per differential test."""
    blocks = []
    for number, group in enumerate(groups, start=1):
        lines = [f"Group {number} ({group['size']} equivalent patch(es)):", clip(str(group["patch"]).strip(), MAX_SHOWN_PATCH)]
        lines.append(f"Reproduction test output:\n{clip(str(group['output']), MAX_GROUP_OUTPUT) or '(none)'}")
        outputs = list(group["diff_outputs"])
        for index in range(len(tests)):
            shown = clip(str(outputs[index]), MAX_GROUP_OUTPUT) if index < len(outputs) else "(not run)"
            lines.append(f"Differential test {index + 1} output:\n{shown}")
        blocks.append("\n".join(lines))
    parts = [f"Issue:\n{issue}", f"Reproduction:\n{reproduction}"]
    if tests:
        parts.append(_tests_text(tests, baseline))
    parts += ["Groups:\n" + "\n\n".join(blocks), "Which groups fix the issue?"]
    return [{"role": "system", "content": SELECT_SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]


def rank_messages(issue: str, test: str, baseline: str, outputs: list[str]) -> list[Message]:
    """One differential test: its script, the unfixed code's output and each group's output."""
    shown = "\n\n".join(f"Group {number}:\n{clip(output, MAX_GROUP_OUTPUT)}" for number, output in enumerate(outputs, start=1))
    user = (
        f"Issue:\n{issue}\n\nDifferential test:\n{clip(test, MAX_SHOWN_PATCH)}\n\nIts output on the unfixed code:\n{clip(baseline, MAX_GROUP_OUTPUT)}"
        f"\n\nOutputs per group:\n{shown}\n\nRank the groups."
    )
    return [{"role": "system", "content": RANK_SYSTEM}, {"role": "user", "content": user}]


# -- offline stand-ins: the graph runs without a model; they never claim a group fixes the issue ----------------


@offline_handler(PatchVariants)
def _offline_variants(messages: list[Message]) -> PatchVariants:
    return PatchVariants(expanded="", compressed="")


@offline_handler(DiffTest)
def _offline_diff_test(messages: list[Message]) -> DiffTest:
    return DiffTest(script="")


@offline_handler(GroupSelection)
def _offline_selection(messages: list[Message]) -> GroupSelection:
    return GroupSelection(correct=[], analysis="offline model: no selection")


@offline_handler(GroupRanking)
def _offline_ranking(messages: list[Message]) -> GroupRanking:
    return GroupRanking(ranking=[], analysis="offline model: no ranking")
