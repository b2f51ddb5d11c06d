"""What the control unit says to the model and hears back: the prompts, the plan's reply, the offline stand-in.

The plan is the model's reply to :func:`plan_messages`: one forced call of the ``plan_steps`` tool
(:data:`PLAN_TOOL`), validated into :class:`PlanSteps`. Each instruction is then carried out through the step tools
of :mod:`mnemoflow.nodes.l2mac.tools`, prompted by the messages below (the codebase domain).

The offline stand-in answers the plan and the steps without a model, so the graph can be seen working: the plan is
one instruction (the task itself); the step writes a README.md naming the task, then declares the step complete.
It builds nothing real: set OPENAI_BASE_URL to use a model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mnemoflow.llm import Tool, ToolCall, ToolTurn, offline_tool_handler

__all__ = [
    "PLAN_TOOL",
    "SYSTEM",
    "PlanSteps",
    "SummaryMode",
    "complete_message",
    "cycle_message",
    "exhausted_message",
    "fix_message",
    "instruction_message",
    "plan_messages",
    "task_message",
]

Message = dict[str, Any]
SummaryMode = Literal["previous", "all"]
"""Which completed instructions' summaries a new instruction's message carries: the previous one (the paper's
M_rs), or all of them."""


# The plan: the arguments of the one ``plan_steps`` call the model is made to reply with. No docstring: it would
# become the description of the JSON schema sent to the model, and change the request.
class PlanSteps(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: list[str] = Field(min_length=1, description="The instructions, in order; each a detailed, self-contained step.")


PLAN_TOOL = Tool(
    name="plan_steps",
    description="Give the list of instructions that together complete the task, each run by a fresh agent in order.",
    parameters=PlanSteps,
)

SYSTEM = """\
You are an autonomous software engineer working with no human in the loop. You build the project the task \
describes in a file store that you reach only through your tools: list_files, read_files, write_files, edit_file, \
delete_files, run_checks, run_python_file, pytest_files and step_complete. Output code only through write_files (whole files) or edit_file (a \
change to part of a file); read a file before you change it. Write pytest tests in files named test_*.py and keep \
them passing. Use no real databases, network services or external programs: keep data in memory. Each instruction \
of the plan is carried out by a fresh agent that sees the task, its instruction, a summary of earlier steps and \
the list of files, so everything that matters must be in the files. Tests may be wrong: fix or delete a wrong test."""


def task_message(task: str) -> Message:
    return {"role": "user", "content": f"The task:\n{task}"}


def plan_messages(task: str, max_steps: int) -> list[Message]:
    return [
        {"role": "system", "content": SYSTEM},
        task_message(task),
        {
            "role": "user",
            "content": (
                "First name the core modules, classes and functions the project needs. Then give a very detailed "
                f"plan of at most {max_steps} instructions that together meet every requirement of the task, "
                "each instruction ending with writing and running the tests of what it built; the last one adds a "
                "README. Call plan_steps with the instructions."
            ),
        },
    ]


def instruction_message(
    index: int,
    total: int,
    instruction: str,
    summaries: Sequence[str],
    progress: str,
    files: str,
    carry: SummaryMode = "previous",
) -> Message:
    """The instruction to carry out, with the summaries of completed ones that ``carry`` names, the progress before a
    restart and the file list."""
    parts = [f"Carry out instruction {index + 1} of {total}:\n{instruction}"]
    if summaries and carry == "previous":
        parts.append(f"What the previous instruction did:\n{summaries[-1]}")
    elif summaries:
        numbered = "\n".join(f"{number}. {text}" for number, text in enumerate(summaries, 1))
        parts.append(f"What the earlier instructions did:\n{numbered}")
    if progress:
        parts.append(f"You were working on this instruction before your context filled up; your progress so far:\n{progress}")
    parts.append(f"The project's files:\n{files}")
    parts.append(
        "Respond only with tool calls. Write tests for what you build and run them; when the instruction is done "
        "and the checks pass, call step_complete."
    )
    return {"role": "user", "content": "\n\n".join(parts)}


def cycle_message(index: int, files: str) -> Message:
    return {
        "role": "user",
        "content": (
            f"Has instruction {index + 1} been completed? If it has, call step_complete. If not, carry on with your "
            f"tools.\n\nThe project's files:\n{files}"
        ),
    }


def fix_message(report: str, files: str) -> Message:
    return {
        "role": "user",
        "content": (
            f"The checks failed:\n{report}\n\nReflect on the cause, read the files involved, and fix the code (or a "
            f"wrong test) with write_files or edit_file.\n\nThe project's files:\n{files}"
        ),
    }


def complete_message(index: int) -> Message:
    return {
        "role": "user",
        "content": (
            f"Instruction {index + 1} is complete. In one or two sentences, say what was built and where, as the "
            "next instruction's agent needs to know it. Reply with text only."
        ),
    }


def exhausted_message(index: int) -> Message:
    return {
        "role": "user",
        "content": (
            f"Your context window is full. In at most two sentences, summarize your progress on instruction {index + 1} "
            "(what is done, what remains); the instruction restarts with a fresh context and this summary. Reply "
            "with text only."
        ),
    }


# -- the offline stand-in ------------------------------------------------------------------------------------


def _task(messages: list[Message]) -> str:
    task = next((str(m.get("content", "")) for m in messages if str(m.get("content", "")).startswith("The task:")), "")
    return task.removeprefix("The task:").strip()


@offline_tool_handler("plan_steps")
def _offline_plan(messages: list[Message], tools: list[str]) -> ToolTurn:
    steps = [f"Write a README.md that states the task: {_task(messages)}"]
    return ToolTurn("", (ToolCall("offline-plan", "plan_steps", json.dumps({"steps": steps})),), "tool_calls")


@offline_tool_handler("step_complete")
def _offline_step(messages: list[Message], tools: list[str]) -> ToolTurn:
    started = max(i for i, m in enumerate(messages) if str(m.get("content", "")).startswith("Carry out instruction"))
    turns = sum(1 for m in messages[started:] if m.get("role") == "assistant")
    if turns == 0:
        readme = f"# Offline run\n\nThe offline model wrote only this file. The task was:\n\n{_task(messages)}\n"
        arguments = json.dumps({"files": [{"path": "README.md", "content": readme}]})
        return ToolTurn("", (ToolCall("offline-write", "write_files", arguments),), "tool_calls")
    return ToolTurn("", (ToolCall(f"offline-complete-{turns}", "step_complete", "{}"),), "tool_calls")
