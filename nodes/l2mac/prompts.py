"""The control unit's messages to the model (the codebase domain)."""

from __future__ import annotations

from typing import Any

__all__ = [
    "SYSTEM",
    "complete_message",
    "cycle_message",
    "exhausted_message",
    "fix_message",
    "instruction_message",
    "plan_messages",
    "task_message",
]

Message = dict[str, Any]

SYSTEM = """\
You are an autonomous software engineer working with no human in the loop. You build the project the task \
describes in a file store that you reach only through your tools: list_files, read_files, write_files, edit_file, \
delete_files, run_checks and step_complete. Output code only through write_files (whole files) or edit_file (a \
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


def instruction_message(index: int, total: int, instruction: str, summary: str, progress: str, files: str) -> Message:
    parts = [f"Carry out instruction {index + 1} of {total}:\n{instruction}"]
    if summary:
        parts.append(f"What the earlier instructions did:\n{summary}")
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
