"""L2MAC's evaluator (pylint's error codes, the tests, or compiling only), the run tools, the summary carried and the
paper's restart budget, through the graph with a scripted model (real HTTP): the exact messages the model reads.

The evaluator's outcomes run on SQLite only (what they check lives in the run's state, not in the records; each
pylint run costs about a second); the tools and the summaries, which the store records, run on both stores.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mnemoflow.errors import ConfigError
from mnemoflow.graphs import LoadedGraph, RunResult, load_graph, run_graph, with_node_config
from mnemoflow.memory.paging import all_nodes
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.nodes.l2mac import checks
from mnemoflow.nodes.l2mac.checks import TEST_HINT, run_checks
from mnemoflow.nodes.l2mac.control import CallConfig, OverflowConfig, StartConfig, ToolsConfig
from mnemoflow.nodes.sandbox import Limits
from tests.conftest import EMBEDDER, settings_of
from tests.support.l2mac_model import instruction_turn
from tests.support.openai_server import Calls, Reply, Rule, ScriptedOpenAIServer

CALC = "def add(a, b):\n    return a + b\n\n\ndef scale(a):\n    return a * factor\n"
"""Runs and passes its test, but names a variable nobody defines: only a static check sees it."""
CALC_FIXED = "def add(a, b):\n    return a + b\n\n\ndef scale(a, factor=2):\n    return a * factor\n"
TEST_CALC = "from calc import add\n\n\ndef test_add():\n    assert add(1, 2) == 3\n"
TEST_CALC_WRONG = "from calc import add\n\n\ndef test_add():\n    assert add(1, 2) == 4\n"
PYLINT_LINE = "calc.py:6:15: E0602: Undefined variable 'factor' (undefined-variable)"
TIMING = re.compile(r" in \d+\.\d+s")
PROGRESS = "." + " " * 72 + "[100%]"
"""pytest's progress line for one test: the sandbox has no terminal, so pytest pads it to 79 columns."""


@pytest.fixture
def server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer() as running:
        yield running


def write(*files: tuple[str, str]) -> tuple[str, dict[str, Any]]:
    return ("write_files", {"files": [{"path": path, "content": content} for path, content in files]})


def scripted(turns: list[Calls]) -> Callable[[dict[str, Any]], Reply]:
    """A model that makes ``turns`` in order within each instruction, then completes it; summarizes on request."""

    def respond(body: dict[str, Any]) -> Reply:
        if not body.get("tools"):
            index, _, _ = instruction_turn(body["messages"])
            return f"Summary of instruction {index + 1}."
        _, _, turn = instruction_turn(body["messages"])
        return turns[turn] if turn < len(turns) else Calls(("step_complete", {}))

    return respond


async def run(
    store: GraphStore, server: ScriptedOpenAIServer, namespace: str, tmp_path: Path, request: pytest.FixtureRequest,
    loaded: LoadedGraph, instructions: list[str],
) -> RunResult:  # fmt: skip
    return await run_graph(
        loaded, {"task": "Build calc.", "instructions": instructions}, store=store, embedder=EMBEDDER,
        llm=server.gateway(), settings=settings_of(store, tmp_path, request), checkpointer=None, namespace=namespace,
    )  # fmt: skip


def step_requests(server: ScriptedOpenAIServer) -> list[dict[str, Any]]:
    return [r["body"] for r in server.requests if r["body"].get("tools")]


# -- the evaluator ---------------------------------------------------------------------------------------------------


@pytest.mark.subprocess
@pytest.mark.slow
async def test_pylint_errors_and_test_results_reach_the_model_together(
    sqlite_store: GraphStore, server: ScriptedOpenAIServer, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    server.script(Rule(respond=scripted([
        Calls(write(("calc.py", CALC), ("test_calc.py", TEST_CALC))),  # a pylint error, the test passes
        Calls(write(("calc.py", CALC_FIXED), ("test_calc.py", TEST_CALC_WRONG))),  # no pylint error, the test fails
        Calls(write(("test_calc.py", TEST_CALC)), ("step_complete", {})),  # both pass
    ])))  # fmt: skip
    result = await run(sqlite_store, server, namespace, tmp_path, request, load_graph("l2mac"), ["Write calc."])
    assert result.state["status"] == "done"
    checks_run = [
        (c["checker"], c["static_errors"], c["tests_passed"], c["tests_failed"], c["passed"]) for c in result.state["checks"]
    ]
    assert checks_run == [("pylint", [PYLINT_LINE], 1, 0, False), ("pylint", [], 0, 1, False), ("pylint", [], 1, 0, True)]

    fixes = [b["messages"][-1]["content"] for b in step_requests(server) if b["messages"][-1]["content"].startswith("The checks")]
    assert len(fixes) == 2
    first, second = (TIMING.sub(" in T", fix) for fix in fixes)
    files = "The project's files:\n- calc.py (version {0})\n- test_calc.py (version {0})"
    advice = "Reflect on the cause, read the files involved, and fix the code (or a wrong test) with write_files or edit_file."
    assert first == (
        "The checks failed:\nFAILED: 0 syntax error(s), 1 pylint error(s); tests passed 1, failed 0, errors 0.\n"
        f"{PYLINT_LINE}\n{PROGRESS}\n1 passed in T"
        f"\n\n{advice}\n\n{files.format(1)}"
    )
    assert second.startswith(
        "The checks failed:\nFAILED: 0 syntax error(s), 0 pylint error(s); tests passed 0, failed 1, errors 0.\n"
    )
    assert "assert 3 == 4" in second and second.endswith(f"1 failed in T\n\n{advice}\n\n{files.format(2)}")
    summary = [r["body"] for r in server.requests if not r["body"].get("tools")][-1]
    completed = [m["content"] for m in summary["messages"] if m["role"] == "tool"][-1]
    assert completed == "The step is complete.\nPASSED: no syntax or pylint errors; tests passed: 1."


@pytest.mark.subprocess
async def test_the_compile_checker_misses_what_pylint_finds() -> None:
    files = {"calc.py": CALC, "test_calc.py": TEST_CALC}
    compiled = await run_checks(files, Limits(timeout_s=30), tests=False, checker="compile")
    assert compiled.passed and compiled.report() == "PASSED: no syntax errors; tests passed: 0."
    broken = await run_checks({**files, "bad.py": "def f(:\n"}, Limits(timeout_s=30), tests=False, checker="compile")
    assert broken.report() == (
        "FAILED: 1 syntax error(s); tests passed 0, failed 0, errors 0.\nbad.py:1:7: SyntaxError: invalid syntax"
    )
    linted = await run_checks({**files, "bad.py": "def f(:\n"}, Limits(timeout_s=30), tests=False, checker="pylint")
    assert linted.syntax_errors == broken.syntax_errors and linted.static_errors == [PYLINT_LINE]  # no E0001 twice


async def test_without_pylint_the_run_stops_saying_how_to_go_on(
    store: GraphStore, server: ScriptedOpenAIServer, namespace: str, tmp_path: Path, request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setattr(checks, "pylint_installed", lambda: False)
    server.script(Rule(respond=scripted([Calls(write(("calc.py", CALC)))])))
    with pytest.raises(
        ConfigError,
        match=r"the checker is pylint but pylint is not installed: install it .* set `checker: compile` on the run_tools node",
    ):
        await run(store, server, namespace, tmp_path, request, load_graph("l2mac"), ["Write calc."])
    assert len(step_requests(server)) == 1
    [claim] = await all_nodes(store, namespace, "L2Claim")
    assert claim.properties["released"]  # the failing node let the thread go: a resumed run takes it at once


# -- the run tools ---------------------------------------------------------------------------------------------------

MAIN = "import sys\n\nfrom app.util import double\n\nprint(double(int(sys.argv[1])))\n"
UTIL = "def double(x):\n    return 2 * x\n"
TEST_UTIL = "from app.util import double\n\n\ndef test_double():\n    assert double(2) == 4\n"


@pytest.mark.subprocess
async def test_run_python_file_and_pytest_files_answer_the_model(
    store: GraphStore, server: ScriptedOpenAIServer, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    server.script(Rule(respond=scripted([
        Calls(write(("app/__init__.py", ""), ("app/main.py", MAIN), ("app/util.py", UTIL), ("fail.py", "import sys\n\nsys.exit('no input given')\n"),
                    ("loop.py", "while True:\n    pass\n"), ("tests/test_util.py", TEST_UTIL), ("tests/test_wrong.py", "def test_wrong():\n    assert 1 == 2\n"))),
        Calls(
            ("run_python_file", {"file_name_to_run": "app/main.py", "arguments": ["21"]}),
            ("run_python_file", {"file_name_to_run": "fail.py"}),
            ("run_python_file", {"file_name_to_run": "loop.py"}),
            ("run_python_file", {"file_name_to_run": "missing.py"}),
            ("pytest_files", {"files_to_test": ["tests/test_util.py"]}),
            ("pytest_files", {}),
            ("pytest_files", {"files_to_test": ["tests/test_util.py::test_double", "nope"]}),
        ),
        Calls(("delete_files", {"paths": ["tests/test_wrong.py"]}), ("step_complete", {})),
    ])))  # fmt: skip
    loaded = with_node_config(load_graph("l2mac"), {"run_tools": {"checker": "compile", "tests": False, "run_timeout_s": 1}})
    result = await run(store, server, namespace, tmp_path, request, loaded, ["Write the app."])
    assert result.state["status"] == "done"
    after = next(b for b in step_requests(server) if instruction_turn(b["messages"])[2] == 2)
    replies = [TIMING.sub(" in T", m["content"]) for m in after["messages"] if m["role"] == "tool"][-7:]
    assert replies == [
        "42",
        "fail.py exited with code 1:\nno input given",
        "loop.py did not finish within 1 s and was killed.",
        "ERROR: no such file or folder: missing.py; call list_files to see the project's files",
        f"{PROGRESS}\n1 passed in T\n{TEST_HINT}",
        replies[5],
        "ERROR: no such file or folder: nope; call list_files to see the project's files",
    ]
    assert "1 failed, 1 passed in T" in replies[5] and "assert 1 == 2" in replies[5] and replies[5].endswith(TEST_HINT)
    assert result.state["tool_errors"] == [
        "run_python_file: no such file or folder: missing.py; call list_files to see the project's files",
        "pytest_files: no such file or folder: nope; call list_files to see the project's files",
    ]
    assert [c["turn"] for c in result.state["checks"]] == [1, 3]  # the runs are not checks; they changed nothing stored
    assert await store.count_nodes(namespace, "L2FileVersion") == 8


# -- the summary carried, the restart budget ------------------------------------------------------------------------


@pytest.mark.subprocess
@pytest.mark.parametrize("summaries", ["previous", "all"])
async def test_an_instruction_carries_the_previous_summary_or_all(
    store: GraphStore, server: ScriptedOpenAIServer, namespace: str, tmp_path: Path, request: pytest.FixtureRequest,
    summaries: str,
) -> None:  # fmt: skip
    server.script(Rule(respond=scripted([])))
    config = {"start_instruction": {"summaries": summaries}, "run_tools": {"checker": "compile", "tests": False}}
    loaded = with_node_config(load_graph("l2mac"), config)
    result = await run(store, server, namespace, tmp_path, request, loaded, ["One.", "Two.", "Three."])
    assert result.state["summaries"] == ["Summary of instruction 1.", "Summary of instruction 2.", "Summary of instruction 3."]
    third = next(b for b in step_requests(server) if instruction_turn(b["messages"])[0] == 2)
    carried = (
        "What the previous instruction did:\nSummary of instruction 2."
        if summaries == "previous"
        else "What the earlier instructions did:\n1. Summary of instruction 1.\n2. Summary of instruction 2."
    )
    assert third["messages"][2]["content"] == (
        f"Carry out instruction 3 of 3:\nThree.\n\n{carried}\n\nThe project's files:\n(no files yet)\n\nRespond only with "
        "tool calls. Write tests for what you build and run them; when the instruction is done and the checks pass, call "
        "step_complete."
    )
    first = next(b for b in step_requests(server) if instruction_turn(b["messages"])[0] == 0)
    assert "What the" not in first["messages"][2]["content"]
    stored = sorted(await all_nodes(store, namespace, "L2Instruction"), key=lambda record: record.properties["idx"])
    assert [record.properties["summary"] for record in stored] == result.state["summaries"]


def test_the_defaults_are_the_papers_but_the_turn_cap() -> None:
    graph = load_graph("l2mac").spec.nodes
    assert OverflowConfig().max_restarts == graph["summarize_overflow"].with_["max_restarts"] == 30  # r_max
    assert CallConfig().max_turns == graph["call_model"].with_["max_turns"] == 40  # ours
    assert ToolsConfig().checker == graph["run_tools"].with_["checker"] == "pylint"
    assert (ToolsConfig().run_timeout_s, ToolsConfig().pytest_timeout_s) == (20, 60)
    assert StartConfig().summaries == "previous" and "summaries" not in graph["start_instruction"].with_
