"""A scripted model that builds a tiny Python package (``tally``) with L2MAC, for tests and the benchmark.

Its replies depend only on the request (which instruction, which attempt, how many turns so far), never on the order
requests arrive in, so a resumed run gets the same replies as the run it continues. The script:

1. add(): lists the files twice (a loop the control unit should notice), writes the package and its test, completes.
2. mul(): reads core.py, adds a wrong ``mul`` with a test (the checks fail), sends three bad calls (an unknown tool,
   an edit without ``new``, a path outside the root), fixes ``mul`` with an edit, completes.
3. stats: writes a large data module and reads it back, which overflows a small context window; after the restart
   (its instruction message carries the progress summary) it writes ``stats.py``, its test and a README, completes.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from tests.support.openai_server import Calls, Reply

__all__ = ["INSTRUCTIONS", "FINAL_FILES", "PackageModel", "instruction_turn"]

INSTRUCTIONS = [
    "Create the package tally with tally/core.py defining add(a, b), and a test in tests/test_core.py.",
    "Add mul(a, b) to tally/core.py, with a test in tests/test_mul.py.",
    "Add tally/stats.py with total(values) built on add, a test in tests/test_stats.py, and a README.md.",
]
CORE = "def add(a, b):\n    return a + b\n"
WRONG_MUL = CORE + "\n\ndef mul(a, b):\n    return a * b + 1\n"
FIXED_MUL = CORE + "\n\ndef mul(a, b):\n    return a * b\n"
TEST_CORE = "from tally.core import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"
TEST_MUL = "from tally.core import mul\n\n\ndef test_mul():\n    assert mul(2, 3) == 6\n"
DATA = "NUMBERS = [\n" + "".join(f"    {n},\n" for n in range(1, 1201)) + "]\n"
STATS = "from tally.core import add\n\n\ndef total(values):\n    result = 0\n    for value in values:\n        result = add(result, value)\n    return result\n"
TEST_STATS = (
    "from tally.data import NUMBERS\nfrom tally.stats import total\n\n\ndef test_total():\n"
    "    assert total([1, 2, 3]) == 6\n    assert total(NUMBERS) == 720600\n"
)
README = "# tally\n\nadd, mul and total of numbers.\n"
FINAL_FILES = {
    "tally/__init__.py": "",
    "tally/core.py": FIXED_MUL,
    "tally/data.py": DATA,
    "tally/stats.py": STATS,
    "tests/test_core.py": TEST_CORE,
    "tests/test_mul.py": TEST_MUL,
    "tests/test_stats.py": TEST_STATS,
    "README.md": README,
}
PROGRESS = "Wrote tally/data.py with the numbers; stats.py, its test and the README remain."
_INSTRUCTION = re.compile(r"Carry out instruction (\d+) of \d+")


def _text(message: dict[str, Any]) -> str:
    return message.get("content") or ""


def instruction_turn(messages: list[dict[str, Any]]) -> tuple[int, bool, int]:
    """(instruction index, whether this is a restart, model turns so far) of a step request."""
    start = max(i for i, m in enumerate(messages) if m.get("role") == "user" and _INSTRUCTION.match(_text(m)))
    match = _INSTRUCTION.match(_text(messages[start]))
    assert match is not None
    restarted = "your progress so far" in _text(messages[start])
    turns = sum(1 for m in messages[start:] if m.get("role") == "assistant")
    return int(match.group(1)) - 1, restarted, turns


def _write(*files: tuple[str, str]) -> tuple[str, dict[str, Any]]:
    return ("write_files", {"files": [{"path": path, "content": content} for path, content in files]})


def _script(index: int, restarted: bool, turn: int) -> Calls:
    complete = Calls(("step_complete", {}))
    if index == 0:
        steps = [
            Calls(("list_files", {})),
            Calls(("list_files", {})),
            Calls(_write(("tally/__init__.py", ""), ("tally/core.py", CORE), ("tests/test_core.py", TEST_CORE))),
        ]
    elif index == 1:
        steps = [
            Calls(("read_files", {"files": [{"path": "tally/core.py"}]})),
            Calls(
                ("edit_file", {"path": "tally/core.py", "old": CORE, "new": WRONG_MUL}),
                _write(("tests/test_mul.py", TEST_MUL)),
            ),
            Calls(
                ("run_shell", {"command": "ls"}),
                ("edit_file", {"path": "tally/core.py", "old": "a * b + 1"}),
                _write(("../escape.py", "print('out')\n")),
            ),
            Calls(("edit_file", {"path": "tally/core.py", "old": "a * b + 1", "new": "a * b"})),
        ]
    else:
        finish = [Calls(_write(("tally/stats.py", STATS), ("tests/test_stats.py", TEST_STATS), ("README.md", README)))]
        steps = (
            finish
            if restarted
            else [
                Calls(_write(("tally/data.py", DATA))),
                Calls(("read_files", {"files": [{"path": "tally/data.py"}]})),
                *finish,
            ]
        )
    return steps[turn] if turn < len(steps) else complete


class PackageModel:
    """The ``respond=`` function of a scripted server rule; ``gate`` holds back one step request until released."""

    def __init__(self, hold: tuple[int, int] | None = None) -> None:
        self.hold = hold
        """(instruction index, turn) of the step request to hold until :attr:`release` is set."""
        self.held = threading.Event()
        self.release = threading.Event()

    def __call__(self, body: dict[str, Any]) -> Reply:
        messages: list[dict[str, Any]] = body.get("messages") or []
        if body.get("tool_choice", {}) == {"type": "function", "function": {"name": "plan_steps"}}:
            return Calls(("plan_steps", {"steps": INSTRUCTIONS}))
        if not body.get("tools"):
            if "context window is full" in _text(messages[-1]):
                return PROGRESS
            index, _, _ = instruction_turn(messages)
            return f"Instruction {index + 1} built what it was asked for, with passing tests."
        index, restarted, turn = instruction_turn(messages)
        if self.hold == (index, turn):
            self.held.set()
            self.release.wait(120)
        return _script(index, restarted, turn)
