"""ExpeRepair's staged localization (files, then classes and functions, then lines) against the scripted model.

The graph under test is just the three localization nodes (a temporary file) on the tiny calc repository with two
more files: ``calc/stats.py`` (a class with methods, a function) and ``calc/legacy.py`` (another Python's syntax).
The nodes read the clone and ask the model; they touch no memory, so one store (SQLite) is enough.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mnemoflow.errors import NodeError
from mnemoflow.graphs import load_graph, run_graph, with_node_config
from mnemoflow.graphs.loader import LoadedGraph
from mnemoflow.llm import LLM
from mnemoflow.memory.protocol import GraphStore
from tests.conftest import EMBEDDER, offline_llm, settings_for
from tests.support.openai_server import Rule, ScriptedOpenAIServer
from tests.support.repair_repo import FILES, build_repo

pytestmark = pytest.mark.subprocess  # git reads the clone in child processes

FILES_STAGE, FUNCTIONS_STAGE = "You localize an issue to files", "You localize an issue to classes and functions"
LINES_STAGE = "You localize an issue to lines"

GRAPH = """
name: localize-test
version: 1
description: ExpeRepair's three localization stages.
state: experepair.RepairState
input: [repo, repo_path, issue_id, issue, test_script, test_output, reproduced]
nodes:
  files: {use: experepair.localize_files}
  functions: {use: experepair.localize_functions}
  lines: {use: experepair.localize_lines}
edges:
  - {from: START, to: files}
  - {from: files, to: functions}
  - {from: functions, to: lines}
  - {from: lines, to: END}
"""

STATS = '''"""Statistics."""

import math


class Summary:
    """Summary statistics of a list of numbers."""

    def __init__(self, values):
        self.values = list(values)

    def mean(self):
        """The arithmetic mean."""
        return sum(self.values) / (len(self.values) + 1)

    def spread(self):
        return max(self.values) - min(self.values)


def median(values):
    ordered = sorted(values)
    return ordered[len(ordered) // 2]
'''
LEGACY = 'def shout(text):\n    print "%s!" % text.upper()\n'
ISSUE = "Summary.mean() of [1, 2, 3] returns 1.5 instead of 2."
SCRIPT = "from calc.stats import Summary\nprint(Summary([1, 2, 3]).mean())\n"
REPRODUCTION = f"Reproduction:\nScript (judged to reproduce the issue):\n{SCRIPT}\n\nIts output:\n1.5"


@pytest.fixture(scope="module")
def calc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The calc repository with ``calc/stats.py`` and ``calc/legacy.py`` committed on top (only ever read)."""
    repo = build_repo(tmp_path_factory.mktemp("localize") / "calc")
    (repo / "calc/stats.py").write_text(STATS, encoding="utf-8")
    (repo / "calc/legacy.py").write_text(LEGACY, encoding="utf-8")
    for args in (["add", "."], ["-c", "user.name=tests", "-c", "user.email=tests@example.invalid", "commit", "-qm", "stats"]):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
    return repo


@pytest.fixture
def server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer() as running:
        yield running


@pytest.fixture
def graph(tmp_path: Path) -> LoadedGraph:
    path = tmp_path / "localize-test.yaml"
    path.write_text(GRAPH, encoding="utf-8")
    return load_graph(path)


async def localize(
    graph: LoadedGraph, llm: LLM, store: GraphStore, tmp_path: Path, repo: Path, *, issue: str = ISSUE, script: str = SCRIPT
) -> dict[str, Any]:
    """The state after the three stages on ``repo`` (reproduced by ``script`` when one is given)."""
    values = {
        "repo": "acme/calc", "repo_path": str(repo), "issue_id": "7", "issue": issue,
        "test_script": script, "test_output": "1.5" if script else "", "reproduced": bool(script),
    }  # fmt: skip
    settings = settings_for("sqlite", sqlite_path=tmp_path / "memory.db")
    result = await run_graph(
        graph, values, store=store, embedder=EMBEDDER, llm=llm, settings=settings, checkpointer=None, namespace="localize"
    )
    return result.state


def prompts(server: ScriptedOpenAIServer, system: str) -> list[str]:
    """The user prompts of the chat requests whose system prompt starts with ``system``."""
    return [
        str(r["body"]["messages"][-1]["content"])
        for r in server.requests
        if r["path"].endswith("/chat/completions") and str(r["body"]["messages"][0]["content"]).startswith(system)
    ]


def numbered(text: str, start: int, end: int) -> str:
    lines = text.splitlines()
    width = len(str(end))
    return "\n".join(f"{number:>{width}}| {lines[number - 1]}" for number in range(start, end + 1))


async def test_three_stages_narrow_the_repository_to_lines(
    graph: LoadedGraph, server: ScriptedOpenAIServer, sqlite_store: GraphStore, tmp_path: Path, calc: Path
) -> None:
    server.script(
        Rule(system=FILES_STAGE, json={"files": ["calc/stats.py", "calc/ops.py"]}),
        Rule(
            system=FUNCTIONS_STAGE,
            json={
                "functions": [
                    {"file": "calc/stats.py", "function": "Summary.mean", "reason": "divides by n + 1"},
                    {"file": "calc/ops.py", "function": "add", "reason": "arithmetic"},
                ]
            },
        ),
        Rule(
            system=LINES_STAGE,
            json={
                "locations": [{"file": "calc/stats.py", "function": "Summary.mean", "start": 14, "end": 14, "reason": "n + 1"}]
            },
        ),
    )
    state = await localize(graph, server.gateway(), sqlite_store, tmp_path, calc)

    listing = "calc/__init__.py\ncalc/legacy.py: shout\ncalc/more.py: multiply\ncalc/ops.py: add\ncalc/stats.py: Summary, median"
    assert prompts(server, FILES_STAGE) == [
        f"Issue:\n{ISSUE}\n\n{REPRODUCTION}\n\nRepository files:\n{listing}\n\nName at most 4 files."
    ]
    skeletons = (
        "--- calc/stats.py\n"
        ' 6| class Summary:\n  |     """Summary statistics of a list of numbers."""\n 9|     def __init__(self, values):\n'
        '12|     def mean(self):\n  |         """The arithmetic mean."""\n16|     def spread(self):\n20| def median(values):\n'
        "--- calc/ops.py\n1| def add(a, b):"
    )
    assert prompts(server, FUNCTIONS_STAGE) == [
        f"Issue:\n{ISSUE}\n\n{REPRODUCTION}\n\nSkeletons of the suspicious files:\n{skeletons}\n\n"
        "Name at most 8 classes or functions."
    ]
    code = (
        f"--- calc/stats.py: Summary.mean (lines 12-14)\n{numbered(STATS, 12, 14)}\n"
        f"--- calc/ops.py: add (lines 1-2)\n{numbered(FILES['calc/ops.py'], 1, 2)}"
    )
    assert prompts(server, LINES_STAGE) == [
        f"Issue:\n{ISSUE}\n\n{REPRODUCTION}\n\nCode of the suspicious classes and functions:\n{code}\n\n"
        "Name at most 16 line ranges."
    ]
    assert state["suspicious_files"] == ["calc/stats.py", "calc/ops.py"]
    assert state["functions"] == [
        {"file": "calc/stats.py", "function": "Summary.mean", "reason": "divides by n + 1"},
        {"file": "calc/ops.py", "function": "add", "reason": "arithmetic"},
    ]
    assert state["locations"] == [
        {"file": "calc/stats.py", "function": "Summary.mean", "start": 14, "end": 14, "reason": "n + 1"}
    ]
    assert state["code"] == (
        "Edit locations:\n- calc/stats.py lines 14-14 (Summary.mean): n + 1\n"
        f"--- calc/stats.py (whole file, 22 lines)\n{STATS.rstrip()}"
    )
    assert state["errors"] == [] and len(server.requests) == 3


async def test_names_that_do_not_exist_are_dropped_and_ranges_merged(
    graph: LoadedGraph, server: ScriptedOpenAIServer, sqlite_store: GraphStore, tmp_path: Path, calc: Path
) -> None:
    server.script(
        Rule(system=FILES_STAGE, json={"files": ["stats.py", "calc/nope.py"]}),
        Rule(
            system=FUNCTIONS_STAGE,
            json={
                "functions": [
                    {"file": "calc/stats.py", "function": "mean()", "reason": "the mean"},
                    {"file": "calc/stats.py", "function": "Summary.nope"},
                    {"file": "calc/ops.py", "function": "add"},
                    {"file": "calc/stats.py", "function": "median", "reason": "the median"},
                ]
            },
        ),
        Rule(
            system=LINES_STAGE,
            json={
                "locations": [
                    {"file": "calc/stats.py", "function": "Summary.mean", "start": 14, "end": 14, "reason": "n + 1"},
                    {"file": "calc/stats.py", "start": 15, "end": 12, "reason": "the docstring"},
                    {"file": "calc/stats.py", "function": "median", "start": 21, "end": 30, "reason": "the middle"},
                    {"file": "calc/stats.py", "function": "Summary.nope", "start": 1, "end": 1},
                    {"file": "calc/ops.py", "function": "add", "start": 1, "end": 2},
                    {"file": "calc/stats.py", "start": 99, "end": 100},
                ]
            },
        ),
    )
    state = await localize(graph, server.gateway(), sqlite_store, tmp_path, calc)

    assert state["suspicious_files"] == ["calc/stats.py"]  # "stats.py" is the only path ending so
    assert state["functions"] == [
        {"file": "calc/stats.py", "function": "Summary.mean", "reason": "the mean"},
        {"file": "calc/stats.py", "function": "median", "reason": "the median"},
    ]
    assert state["locations"] == [
        {"file": "calc/stats.py", "function": "Summary.mean", "start": 12, "end": 15, "reason": "n + 1; the docstring"},
        {"file": "calc/stats.py", "function": "median", "start": 21, "end": 22, "reason": "the middle"},
    ]
    assert state["errors"] == [
        "localize_files: dropped files not in the repository at HEAD: calc/nope.py",
        "localize_functions: dropped names not defined in the suspicious files: calc/stats.py:Summary.nope, "
        "calc/ops.py (not a suspicious file)",
        "localize_lines: dropped locations: calc/stats.py:Summary.nope (no such class or function), "
        "calc/ops.py (not a suspicious file), calc/stats.py lines 99-100 (the file has 22 lines)",
    ]
    assert state["code"].startswith(
        "Edit locations:\n- calc/stats.py lines 12-15 (Summary.mean): n + 1; the docstring\n"
        "- calc/stats.py lines 21-22 (median): the middle\n--- calc/stats.py (whole file, 22 lines)\n"
    )


async def test_unreadable_replies_take_each_fallback(
    graph: LoadedGraph, server: ScriptedOpenAIServer, sqlite_store: GraphStore, tmp_path: Path, calc: Path
) -> None:
    server.script(Rule(text="I would look at the statistics module."))
    small = with_node_config(graph, {"files": {"max_files": 2}})
    state = await localize(small, server.gateway(), sqlite_store, tmp_path, calc)

    # stage 1: the files sharing the most words with the issue and the script (stats: calc, stats, summary)
    assert state["suspicious_files"] == ["calc/stats.py", "calc/__init__.py"]
    # stage 2: each file's top-level definitions in turn; a file without any stands for its module-level code
    assert state["functions"] == [
        {"file": "calc/stats.py", "function": "Summary", "reason": "fallback: a top-level definition"},
        {"file": "calc/__init__.py", "function": "", "reason": "fallback: the module-level code"},
        {"file": "calc/stats.py", "function": "median", "reason": "fallback: a top-level definition"},
    ]
    code = (
        f"--- calc/stats.py: Summary (lines 6-17)\n{numbered(STATS, 6, 17)}\n"
        f"--- calc/__init__.py: module level (lines 1-1)\n1| {FILES['calc/__init__.py'].strip()}\n"
        f"--- calc/stats.py: median (lines 20-22)\n{numbered(STATS, 20, 22)}"
    )
    assert prompts(server, LINES_STAGE)[0].endswith(
        f"Code of the suspicious classes and functions:\n{code}\n\nName at most 16 line ranges."
    )
    # stage 3: the suspicious files whole
    assert state["locations"] == []
    assert state["code"] == f"--- calc/stats.py\n{STATS}\n--- calc/__init__.py\n{FILES['calc/__init__.py']}"
    errors = state["errors"]
    assert [error.split(":")[0] for error in errors] == ["localize_files"] * 2 + ["localize_functions"] * 2 + [
        "localize_lines"
    ] * 2
    assert errors[0].startswith("localize_files: the files could not be read: ")
    assert (
        errors[1]
        == "localize_files: no known file named; using the files sharing words with the issue: calc/stats.py, calc/__init__.py"
    )
    assert errors[2].startswith("localize_functions: the functions could not be read: ")
    assert errors[3] == "localize_functions: no known class or function named; using the files' top-level definitions"
    assert errors[4].startswith("localize_lines: the locations could not be read: ")
    assert errors[5] == "localize_lines: no edit location within the files; showing the suspicious files whole"


async def test_nothing_related_falls_back_to_the_first_files(
    graph: LoadedGraph, server: ScriptedOpenAIServer, sqlite_store: GraphStore, tmp_path: Path, calc: Path
) -> None:
    server.script(
        Rule(system=FILES_STAGE, json={"files": ["src/nope.py"]}),
        Rule(system=FUNCTIONS_STAGE, json={"functions": [{"file": "calc/legacy.py", "function": "shout", "reason": "py2"}]}),
        Rule(system=LINES_STAGE, json={"locations": []}),
    )
    state = await localize(graph, server.gateway(), sqlite_store, tmp_path, calc, issue="Something is off.", script="")

    assert "Reproduction:\nNo reproduction script is available.\n\n" in prompts(server, FILES_STAGE)[0]
    assert state["suspicious_files"] == ["calc/__init__.py", "calc/legacy.py", "calc/more.py", "calc/ops.py"]
    # a file Python cannot parse still has a skeleton (its def lines) and functions to name
    assert "--- calc/legacy.py\n1| def shout(text):\n--- calc/more.py" in prompts(server, FUNCTIONS_STAGE)[0]
    assert state["functions"] == [{"file": "calc/legacy.py", "function": "shout", "reason": "py2"}]
    assert f"--- calc/legacy.py: shout (lines 1-2)\n{numbered(LEGACY, 1, 2)}\n\n" in prompts(server, LINES_STAGE)[0]
    assert state["locations"] == [] and state["code"].startswith(f"--- calc/__init__.py\n{FILES['calc/__init__.py']}\n")
    assert state["errors"] == [
        "localize_files: dropped files not in the repository at HEAD: src/nope.py",
        "localize_files: no known file named; using the first files: calc/__init__.py, calc/legacy.py, calc/more.py, calc/ops.py",
        "localize_lines: no edit location within the files; showing the suspicious files whole",
    ]


async def test_bounds_on_counts_and_views(
    graph: LoadedGraph, server: ScriptedOpenAIServer, sqlite_store: GraphStore, tmp_path: Path, calc: Path
) -> None:
    server.script(
        Rule(system=FILES_STAGE, json={"files": ["calc/stats.py", "calc/ops.py"]}),
        Rule(
            system=FUNCTIONS_STAGE,
            json={
                "functions": [{"file": "calc/stats.py", "function": "Summary"}, {"file": "calc/stats.py", "function": "median"}]
            },
        ),
        Rule(
            system=LINES_STAGE,
            json={
                "locations": [
                    {"file": "calc/stats.py", "start": 14, "end": 14, "reason": "n + 1"},
                    {"file": "calc/stats.py", "start": 21, "end": 21, "reason": "the middle"},
                ]
            },
        ),
    )
    bounded = with_node_config(
        graph,
        {
            "files": {"max_files": 1, "listing_chars": 60},
            "functions": {"max_functions": 1, "skeleton_chars": 200},
            "lines": {"whole_file_chars": 0, "context_lines": 1},
        },
    )
    state = await localize(bounded, server.gateway(), sqlite_store, tmp_path, calc)

    # the listing does not fit in 60 characters even as bare paths: the files related to the issue come first
    assert (
        "Repository files:\ncalc/stats.py\n... 4 more files not shown\n\nName at most 1 files." in prompts(server, FILES_STAGE)[0]
    )
    assert state["suspicious_files"] == ["calc/stats.py"]
    skeleton = prompts(server, FUNCTIONS_STAGE)[0].split("Skeletons of the suspicious files:\n")[1].split("\n\nName at most")[0]
    assert skeleton.startswith("--- calc/stats.py\n") and "characters cut" in skeleton and len(skeleton) < 300
    assert state["functions"] == [{"file": "calc/stats.py", "function": "Summary", "reason": ""}]
    lines = STATS.splitlines()
    assert state["locations"] == [
        {"file": "calc/stats.py", "function": "Summary.mean", "start": 14, "end": 14, "reason": "n + 1"},
        {"file": "calc/stats.py", "function": "median", "start": 21, "end": 21, "reason": "the middle"},
    ]
    # a file over whole_file_chars: the lines around each location, verbatim, under headers giving their numbers
    assert state["code"] == (
        "Edit locations:\n- calc/stats.py lines 14-14 (Summary.mean): n + 1\n- calc/stats.py lines 21-21 (median): the middle\n"
        "--- calc/stats.py (lines 13-15 of 22)\n" + "\n".join(lines[12:15]) + "\n"
        "--- calc/stats.py (lines 20-22 of 22)\n" + "\n".join(lines[19:22])
    )


async def test_offline_model_takes_the_fallbacks(
    graph: LoadedGraph, sqlite_store: GraphStore, tmp_path: Path, calc: Path
) -> None:
    state = await localize(graph, offline_llm(), sqlite_store, tmp_path, calc)
    assert state["suspicious_files"][0] == "calc/stats.py" and state["locations"] == []
    assert state["code"].startswith(f"--- calc/stats.py\n{STATS}")
    assert [error.split(":")[0] for error in state["errors"]] == ["localize_files", "localize_functions", "localize_lines"]


async def test_a_repository_without_python_files_is_refused(graph: LoadedGraph, sqlite_store: GraphStore, tmp_path: Path) -> None:
    empty = tmp_path / "docs"
    empty.mkdir()
    (empty / "README.md").write_text("docs\n", encoding="utf-8")
    for args in (
        ["init", "-q"],
        ["add", "."],
        ["-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "docs"],
    ):
        subprocess.run(["git", *args], cwd=empty, check=True, capture_output=True)
    with pytest.raises(NodeError, match="holds no Python file at commit 'HEAD': nothing to repair"):
        await localize(graph, offline_llm(), sqlite_store, tmp_path, empty)
