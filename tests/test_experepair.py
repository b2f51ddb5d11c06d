"""ExpeRepair: the experepair graph on a real (tiny) git repository with the scripted model, on both stores.

The repository's ``add`` subtracts and its ``multiply`` adds. Scripts and patches run in throwaway worktrees; the
clone itself must never change. One test runs the library graph at its defaults (every stage: four candidates, four
reviews, variants, differential tests, validation); the others run it with the :data:`SMALL` node configs, so each
repair makes a few calls and sandbox runs. The stages themselves are tested in ``test_experepair_*.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mnemoflow.graphs import load_graph, run_graph, with_node_config, with_route_config
from mnemoflow.graphs.loader import LoadedGraph
from mnemoflow.graphs.runner import RunResult
from mnemoflow.memory.paging import all_nodes
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import RelationshipRecord
from mnemoflow.nodes.experepair.insights import load_insights
from mnemoflow.nodes.experepair.model import (
    INSIGHT,
    ISSUE,
    PATCH_DEMO,
    TEST_DEMO,
    USED_DEMO,
    USED_INSIGHT,
    issue_node_id,
)
from mnemoflow.nodes.experepair.repository import is_unified_diff
from tests.conftest import EMBEDDER, settings_of
from tests.support.graph_variants import library_variant
from tests.support.openai_server import Rule, ScriptedOpenAIServer
from tests.support.repair_repo import (
    COMMUTED_ADD,
    FIX_ADD,
    FIX_MULTIPLY,
    FLOAT_ADD,
    STALE_DIFF,
    WRONG_ADD,
    WRONG_MULTIPLY,
    build_repo,
    git_status,
    snapshot,
    worktrees,
)

pytestmark = [pytest.mark.subprocess, pytest.mark.slow]

REPO = "acme/calc"
TESTER, JUDGE = "You are the Test Agent", "You judge whether"
FILES_STAGE, FUNCTIONS_STAGE = "You localize an issue to files", "You localize an issue to classes and functions"
LINES_STAGE = "You localize an issue to lines"
CODER, REFINE, REVIEW = "Write a patch that fixes", "refining a patch", "You review candidate patches"
VARIANTS, DIFF_TEST = "You write two variants", "You write a differential test"
SELECT, RANK = "You validate candidate fixes", "You rank groups of candidate fixes"
INSIGHTS_TESTER, INSIGHTS_CODER = "insights for the tester agent", "insights for the coder agent"
STAGES = {
    TESTER: "write_test", JUDGE: "judge_test", FILES_STAGE: "localize_files", FUNCTIONS_STAGE: "localize_functions",
    LINES_STAGE: "localize_lines", CODER: "generate", REVIEW: "review", REFINE: "refine", VARIANTS: "variants",
    DIFF_TEST: "write_diff_tests", SELECT: "validate (selection)", RANK: "validate (ranking)",
    INSIGHTS_TESTER: "update_insights (tester)", INSIGHTS_CODER: "update_insights (coder)",
}  # fmt: skip
"""A system-prompt marker per model call, and the stage that makes it."""
SMALL: dict[str, dict[str, Any]] = {
    "generate": {"temperatures": [0.0]}, "review": {"reviews": 1}, "variants": {"max_patches": 0},
    "write_diff_tests": {"temperatures": []},
}  # fmt: skip
"""Node configs that keep a repair to a few calls and sandbox runs: one candidate, one review, no variants, no
differential tests (validation still selects among the groups). The defaults run in one test only."""

ADD_ISSUE = "add() returns the wrong result: add(2, 3) gives -1 instead of 5."
MULTIPLY_ISSUE = "multiply() returns the wrong result: multiply(2, 3) gives 5 instead of 6."
ADD_SCRIPT = "from calc.ops import add\nprint('add(2, 3) =', add(2, 3))\nassert add(2, 3) == 5, 'add(2, 3) should be 5'\n"
CHECKED_ADD_SCRIPT = "# checks add\n" + ADD_SCRIPT
MULTIPLY_SCRIPT = (
    "from calc.more import multiply\nprint('multiply(2, 3) =', multiply(2, 3))\nassert multiply(2, 3) == 6, 'should be 6'\n"
)

HANG_SCRIPT = "# hangs\nwhile True:\n    pass\n"
HOG_SCRIPT = "# hogs memory\nblock = bytearray(4 * 1024 * 1024 * 1024)\nprint(len(block))\n"
TESTER_INSIGHT = "Print every input and assert the expected value so the script fails while the bug is present."
CODER_INSIGHT = "Check the operator of arithmetic helpers first."


@pytest.fixture
def server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer() as running:
        yield running


@pytest.fixture
def calc(tmp_path: Path) -> Path:
    return build_repo(tmp_path / "calc")


def chats(server: ScriptedOpenAIServer, system: str, since: int = 0) -> list[dict[str, Any]]:
    """The chat requests (from the ``since``-th on) whose system prompt contains ``system``."""
    return [
        r["body"]
        for r in server.requests[since:]
        if r["path"].endswith("/chat/completions") and system in r["body"]["messages"][0]["content"]
    ]


def user_texts(server: ScriptedOpenAIServer, system: str, since: int = 0) -> list[str]:
    return [str(body["messages"][-1]["content"]) for body in chats(server, system, since)]


def stages(server: ScriptedOpenAIServer) -> list[str]:
    """The stage of every model call, in order (a call no marker names is an error of the test)."""
    return [
        next(stage for marker, stage in STAGES.items() if marker in r["body"]["messages"][0]["content"])
        for r in server.requests
        if r["path"].endswith("/chat/completions")
    ]


def script_common(server: ScriptedOpenAIServer) -> None:
    """Localization of either issue, review verdicts on the known diffs, the selection of the fixing group (the
    rejected round's patch is group 1, the refinement group 2), empty variants and tests, and insight edits."""
    localized: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        (FILES_STAGE, {"files": ["calc/ops.py"]}, {"files": ["calc/more.py"]}),
        (FUNCTIONS_STAGE, {"functions": [{"file": "calc/ops.py", "function": "add", "reason": "sign"}]},
         {"functions": [{"file": "calc/more.py", "function": "multiply", "reason": "operator"}]}),
        (LINES_STAGE, {"locations": [{"file": "calc/ops.py", "function": "add", "start": 2, "end": 2, "reason": "sign"}]},
         {"locations": [{"file": "calc/more.py", "function": "multiply", "start": 2, "end": 2, "reason": "op"}]}),
    ]  # fmt: skip
    for marker, add, multiply in localized:
        server.script(Rule(system=marker, user="add()", json=add), Rule(system=marker, json=multiply))
    server.script(
        Rule(system=REVIEW, user="+    return a + b", json={"ranking": [1], "correct": [1], "analysis": "fixes add"}),
        Rule(system=REVIEW, user="+    return a * b", json={"ranking": [1], "correct": [1], "analysis": "fixes multiply"}),
        Rule(
            system=REVIEW,
            json={"ranking": [1], "correct": [], "analysis": "the test still fails", "advice": "use the right operator"},
        ),
        Rule(system=SELECT, json={"correct": [2], "analysis": "group 2 fixes the issue"}),
        Rule(system=VARIANTS, json={"expanded": "", "compressed": ""}),
        Rule(system=DIFF_TEST, json={"script": ""}),
        Rule(system=INSIGHTS_TESTER, json={"edits": [{"operation": "ADD", "number": 0, "text": TESTER_INSIGHT}]}),
        Rule(system=INSIGHTS_CODER, json={"edits": [{"operation": "ADD", "number": 0, "text": CODER_INSIGHT}]}),
    )


def script_issue(server: ScriptedOpenAIServer, *, issue: str, script: str, marker: str, wrong: str, fix: str) -> None:
    """The tester writes ``script`` at once (judged YES); round 0 proposes ``wrong``, the refinement ``fix``."""
    server.script(
        Rule(system=TESTER, user=issue, json={"script": script}),
        Rule(system=JUDGE, user=marker, json={"analysis": "the assertion fails as reported", "reproduces": True}),
        Rule(system=CODER, user=issue, json={"patch": wrong}),
        Rule(system=REFINE, user=issue, json={"patch": fix}),
    )


async def links_of(store: GraphStore, namespace: str, issue_id: str, type: str) -> list[RelationshipRecord]:
    """The ``type`` relationships of the issue's record."""
    page = await store.neighbours(namespace, issue_node_id(namespace, REPO, issue_id))
    return [rel for rel in page.relationships if rel.type == type]


class Repairs:
    """Runs the experepair graph on the ``store`` fixture with the scripted model."""

    def __init__(
        self, store: GraphStore, server: ScriptedOpenAIServer, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
    ) -> None:
        self.store, self.namespace = store, namespace
        self.llm = server.gateway()
        self.settings = settings_of(store, tmp_path, request)
        self.tmp_path = tmp_path

    def graph(self, **replace: str) -> LoadedGraph:
        """The library graph with the :data:`SMALL` configs, from a copy in tmp_path with text replaced when asked
        (e.g. shorter timeouts)."""
        return with_node_config(library_variant("experepair", self.tmp_path, replace), SMALL)

    async def run(
        self, repo_path: Path, issue: str, issue_id: str, repo: str = REPO, graph: LoadedGraph | None = None, **more: Any
    ) -> RunResult:
        values = {"repo": repo, "repo_path": str(repo_path), "issue_id": issue_id, "issue": issue, **more}
        return await run_graph(
            graph or self.graph(), values, store=self.store, embedder=EMBEDDER, llm=self.llm, settings=self.settings,
            checkpointer=None, namespace=self.namespace,
        )  # fmt: skip


@pytest.fixture
def repairs(
    store: GraphStore, server: ScriptedOpenAIServer, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Repairs:
    return Repairs(store, server, namespace, tmp_path, request)


def assert_clone_untouched(calc: Path, before: dict[str, bytes]) -> None:
    assert git_status(calc) == ""
    assert snapshot(calc) == before
    assert len(worktrees(calc)) == 1  # every throwaway worktree was removed


# -- (a) one issue, end to end ----------------------------------------------------------------------------------


async def test_an_issue_is_reproduced_patched_and_remembered(repairs: Repairs, server: ScriptedOpenAIServer, calc: Path) -> None:
    before = snapshot(calc)
    script_common(server)
    script_issue(server, issue=ADD_ISSUE, script=ADD_SCRIPT, marker="from calc.ops import add", wrong=WRONG_ADD, fix=FIX_ADD)
    result = await repairs.run(calc, ADD_ISSUE, "acme/calc#1")
    state = result.state

    [attempt] = state["attempts"]  # the first script fails on the buggy code and is judged to reproduce the issue
    assert attempt["script"] == ADD_SCRIPT and attempt["reproduces"] is True
    assert (
        attempt["returncode"] not in (0, None) and "AssertionError" in attempt["output"] and "add(2, 3) = -1" in attempt["output"]
    )
    assert state["reproduced"] is True and state["suspicious_files"] == ["calc/ops.py"]
    assert state["functions"] == [{"file": "calc/ops.py", "function": "add", "reason": "sign"}]
    assert [(at["file"], at["function"], at["start"], at["end"]) for at in state["locations"]] == [("calc/ops.py", "add", 2, 2)]
    assert state["code"].startswith("Edit locations:") and "--- calc/ops.py (whole file, 2 lines)" in state["code"]
    assert "def add(a, b):" in state["code"]

    assert [r["correct"] for r in state["rounds"]] == [False, True]  # round 0 wrong, the refinement right
    [candidate] = state["candidates"]
    assert candidate["id"] == "r1c1" and candidate["origin"] == "refine" and candidate["applied"] and candidate["passed"]
    assert candidate["correct"] and candidate["rank"] == 1 and (candidate["votes"], candidate["reviews"]) == (1, 1)
    assert "add(2, 3) = 5" in candidate["output"]
    wrong, fixed = state["pool"]  # every evaluated candidate; validation chose the fixing group
    assert (wrong["id"], wrong["correct"], wrong["passed"]) == ("r0c1", False, False) and fixed == candidate
    assert [group["members"] for group in state["validation"]["groups"]] == [["r0c1"], ["r1c1"]]
    assert state["validation"]["selected"] == [2] and state["validation"]["chosen"] == "r1c1"
    assert state["status"] == "resolved" and is_unified_diff(state["final_patch"])
    assert "-    return a - b" in state["final_patch"] and "+    return a + b" in state["final_patch"]
    evidence = state["evidence"]
    assert evidence["passed"] is True and "AssertionError" in evidence["buggy_output"]
    assert (evidence["chosen"], evidence["groups"], evidence["accepted"], evidence["rounds"]) == ("r1c1", 2, True, 2)
    assert state["errors"] == []
    assert not any(state["demos_used"].values())  # an empty memory: no demonstration
    assert stages(server) == [
        "write_test", "judge_test", "localize_files", "localize_functions", "localize_lines", "generate", "review",
        "refine", "review", "validate (selection)", "update_insights (tester)", "update_insights (coder)",
    ]  # fmt: skip

    store, ns = repairs.store, repairs.namespace
    [issue] = await store.get_nodes(ns, [issue_node_id(ns, REPO, "acme/calc#1")])
    assert issue is not None and issue.kind == ISSUE and issue.properties["status"] == "resolved"
    assert issue.properties["final_patch"] == state["final_patch"]
    [test_demo] = await all_nodes(store, ns, TEST_DEMO)
    assert test_demo.properties["kind"] == "initial" and test_demo.properties["new_test"] == ADD_SCRIPT
    [patch_demo] = await all_nodes(store, ns, PATCH_DEMO)
    assert "return b - a" in patch_demo.properties["old_patch"] and patch_demo.properties["new_patch"] == state["final_patch"]
    assert await load_insights(store, ns, "tester") == [TESTER_INSIGHT]
    assert await load_insights(store, ns, "coder") == [CODER_INSIGHT]
    assert state["insights"] == {"tester": [TESTER_INSIGHT], "coder": [CODER_INSIGHT]}
    assert await links_of(store, ns, "acme/calc#1", USED_DEMO) == [] == await links_of(store, ns, "acme/calc#1", USED_INSIGHT)
    assert_clone_untouched(calc, before)


NUMBERS_TEST = "from calc.ops import add\nfor a, b in [(2, 3), (-1, 1)]:\n    print(a, b, '->', add(a, b))\n"
TYPES_TEST = "from calc.ops import add\nprint('type:', type(add(2, 3)).__name__)\n"


async def test_the_library_graph_at_its_defaults_runs_every_stage(
    repairs: Repairs, server: ScriptedOpenAIServer, calc: Path
) -> None:
    """Four candidates (wrong, fixed, the fix written otherwise, stale), four reviews accepting 2 and 3, variants of
    both (an expanded one returning a float, a compressed one equal to the fix), three differential tests (one
    empty), then the selection of the fixing group and a ranking per test that tells the groups apart."""
    before = snapshot(calc)
    server.script(
        Rule(system=TESTER, json={"script": ADD_SCRIPT}),
        Rule(system=JUDGE, json={"analysis": "the assertion fails as reported", "reproduces": True}),
        Rule(system=CODER, replies=[{"patch": WRONG_ADD}, {"patch": FIX_ADD}, {"patch": COMMUTED_ADD}, {"patch": STALE_DIFF}]),
        Rule(system=REVIEW, json={"ranking": [2, 3, 1, 4], "correct": [2, 3], "analysis": "2 and 3 fix add"}),
        Rule(system=VARIANTS, json={"expanded": FLOAT_ADD, "compressed": FIX_ADD}),
        Rule(system=DIFF_TEST, replies=[{"script": NUMBERS_TEST}, {"script": ""}, {"script": TYPES_TEST}]),
        Rule(system=SELECT, json={"correct": [2], "analysis": "group 3 returns floats for integers"}),
        Rule(system=RANK, json={"ranking": [2, 3, 1], "analysis": "group 2 keeps the types"}),
    )
    script_common(server)
    result = await repairs.run(calc, ADD_ISSUE, "acme/calc#1", graph=load_graph("experepair"))
    state = result.state

    assert stages(server) == [
        "write_test", "judge_test", "localize_files", "localize_functions", "localize_lines", *["generate"] * 4,
        *["review"] * 4, *["variants"] * 2, *["write_diff_tests"] * 3, "validate (selection)",
        *["validate (ranking)"] * 2, "update_insights (tester)", "update_insights (coder)",
    ]  # fmt: skip
    assert [body["temperature"] for body in chats(server, CODER)] == [0.0, 0.8, 0.8, 0.8]
    assert [body["temperature"] for body in chats(server, REVIEW)] == [0.0, 0.8, 0.8, 0.8]
    assert [body["temperature"] for body in chats(server, DIFF_TEST)] == [0.0, 0.8, 0.8]
    [variants_fix, variants_commuted] = user_texts(server, VARIANTS)  # the accepted patches, best first
    assert "+    return a + b" in variants_fix and "+    return b + a" in variants_commuted

    pool = {entry["id"]: entry for entry in state["pool"]}
    assert list(pool) == [
        "r0c1", "r0c2", "r0c3", "r0c4", "r0c2-expanded", "r0c2-compressed", "r0c3-expanded", "r0c3-compressed"
    ]  # fmt: skip
    assert {i: (e["origin"], e["applied"], e["passed"], e["correct"], e["votes"], e["rank"]) for i, e in pool.items()} == {
        "r0c1": ("generate", True, False, False, 0, 3), "r0c2": ("generate", True, True, True, 4, 1),
        "r0c3": ("generate", True, True, True, 4, 2), "r0c4": ("generate", False, False, False, 0, 4),
        "r0c2-expanded": ("expanded", True, True, True, 4, None), "r0c2-compressed": ("compressed", True, True, True, 4, None),
        "r0c3-expanded": ("expanded", True, True, True, 4, None), "r0c3-compressed": ("compressed", True, True, True, 4, None),
    }  # fmt: skip
    assert [pool[i]["review_score"] for i in ("r0c1", "r0c2", "r0c3", "r0c4")] == [0.3333, 1.0, 0.6667, 0.0]
    assert pool["r0c2-expanded"]["review_score"] == 1.0 and "add(2, 3) = 5.0" in pool["r0c2-expanded"]["output"]

    assert state["diff_tests"] == [NUMBERS_TEST, TYPES_TEST]  # the empty script is no test
    assert ["2 3 -> -1" in state["diff_baseline"][0], "type: int" in state["diff_baseline"][1]] == [True, True]
    assert "2 3 -> 1" in pool["r0c1"]["diff_outputs"][0] and "2 3 -> 5\n" in pool["r0c2"]["diff_outputs"][0]
    assert "type: float" in pool["r0c2-expanded"]["diff_outputs"][1] and pool["r0c4"]["diff_outputs"] == []

    validation = state["validation"]
    assert [(g["number"], g["members"], g["passed"], g["selected"], g["mean_rank"]) for g in validation["groups"]] == [
        (1, ["r0c1"], False, False, 3.0),
        (2, ["r0c2", "r0c2-compressed", "r0c3", "r0c3-compressed"], True, True, 1.0),
        (3, ["r0c2-expanded", "r0c3-expanded"], True, False, 2.0),
    ]  # fmt: skip
    assert [g["votes"] for g in validation["groups"]] == [0.0, 1.0, 1.0]
    assert [g["review_score"] for g in validation["groups"]] == [0.3333, 1.0, 1.0]  # the best member's
    assert validation["selected"] == [2] and validation["ranks"] == [[2, 3, 1], [2, 3, 1]]
    assert validation["order"] == [
        "r0c2", "r0c2-compressed", "r0c3", "r0c3-compressed", "r0c2-expanded", "r0c3-expanded", "r0c1"
    ]  # fmt: skip
    assert validation["chosen"] == "r0c2"
    [selection_user] = user_texts(server, SELECT)
    assert "type: float" in selection_user and NUMBERS_TEST in selection_user

    assert state["status"] == "resolved" and state["final_patch"] == pool["r0c2"]["diff"]
    assert "-    return a - b" in state["final_patch"] and "+    return a + b" in state["final_patch"]
    evidence = state["evidence"]
    assert (evidence["chosen"], evidence["groups"], evidence["accepted"], evidence["rounds"]) == ("r0c2", 3, True, 1)
    assert [r["correct"] for r in state["rounds"]] == [True] and state["round"] == 0  # accepted at once: no refinement
    assert state["errors"] == ["evaluate (round 0, candidate 4): the patch was not applied: " + pool["r0c4"]["error"]]

    store, ns = repairs.store, repairs.namespace
    [issue] = await store.get_nodes(ns, [issue_node_id(ns, REPO, "acme/calc#1")])
    assert issue is not None and issue.properties["status"] == "resolved"
    assert issue.properties["final_patch"] == state["final_patch"] and issue.properties["evidence"] == evidence
    [test_demo] = await all_nodes(store, ns, TEST_DEMO)
    assert test_demo.properties["kind"] == "initial" and test_demo.properties["new_test"] == ADD_SCRIPT
    assert await all_nodes(store, ns, PATCH_DEMO) == []  # accepted in round 0: no rejected -> correct pair
    assert state["insights"] == {"tester": [TESTER_INSIGHT], "coder": [CODER_INSIGHT]}
    assert_clone_untouched(calc, before)


# -- (b) a similar issue of the same repository learns from the first -------------------------------------------


async def test_a_similar_issue_gets_the_first_repair_as_its_demonstration(
    repairs: Repairs, server: ScriptedOpenAIServer, calc: Path
) -> None:
    before = snapshot(calc)
    script_common(server)
    script_issue(server, issue=ADD_ISSUE, script=ADD_SCRIPT, marker="from calc.ops import add", wrong=WRONG_ADD, fix=FIX_ADD)
    multiply = {"script": MULTIPLY_SCRIPT, "marker": "from calc.more import", "wrong": WRONG_MULTIPLY, "fix": FIX_MULTIPLY}
    script_issue(server, issue=MULTIPLY_ISSUE, **multiply)
    first = await repairs.run(calc, ADD_ISSUE, "acme/calc#1")
    assert first.state["status"] == "resolved"
    store, ns = repairs.store, repairs.namespace
    [test_demo] = await all_nodes(store, ns, TEST_DEMO)
    [patch_demo] = await all_nodes(store, ns, PATCH_DEMO)
    seen = len(server.requests)

    second = await repairs.run(calc, MULTIPLY_ISSUE, "acme/calc#2")
    assert second.state["status"] == "resolved" and "+    return a * b" in second.state["final_patch"]
    used = second.state["demos_used"]
    assert [(d["id"], d["rank"]) for d in used["test_initial"]] == [(test_demo.id, 1)]
    assert all(isinstance(d["score"], float) for d in used["test_initial"] + used["patch_refine"])
    assert [(d["id"], d["rank"]) for d in used["patch_refine"]] == [(patch_demo.id, 1)] and not used.get("test_retry")
    [[tester_system, tester_user]] = [[m["content"] for m in body["messages"]] for body in chats(server, TESTER, seen)]
    assert ADD_SCRIPT in tester_user and MULTIPLY_ISSUE in tester_user  # R1: the first issue's working script
    assert TESTER_INSIGHT in tester_system  # the insight learned on the first issue, in the system prompt
    [coder_system] = [body["messages"][0]["content"] for body in chats(server, CODER, seen)]
    assert CODER_INSIGHT in coder_system
    [refine_user] = user_texts(server, REFINE, seen)
    assert patch_demo.properties["old_patch"] in refine_user and patch_demo.properties["new_patch"] in refine_user  # R3
    links = await links_of(store, ns, "acme/calc#2", USED_DEMO)
    demo_links = {(rel.target_id, rel.properties["stage"]): rel.properties for rel in links}
    assert demo_links == {
        (test_demo.id, "test_initial"): {"stage": "test_initial", "rank": 1, "score": used["test_initial"][0]["score"], "uses": 1},
        (patch_demo.id, "patch_refine"): {"stage": "patch_refine", "rank": 1, "score": used["patch_refine"][0]["score"], "uses": 1},
    }  # fmt: skip
    insights = {node.properties["role"]: node.id for node in await all_nodes(store, ns, INSIGHT)}
    assert second.state["insight_ids"] == {"tester": [insights["tester"]], "coder": [insights["coder"]]}
    insight_links = {rel.target_id: rel.properties for rel in await links_of(store, ns, "acme/calc#2", USED_INSIGHT)}
    assert insight_links == {insights[role]: {"role": role, "position": 1} for role in ("tester", "coder")}

    seen = len(server.requests)
    other = await repairs.run(calc, MULTIPLY_ISSUE, "other/calc#1", repo="other/calc")
    assert other.state["status"] == "resolved"
    assert not any(other.state["demos_used"].values())  # another repository's repairs are never demonstrations
    other_texts = "\n".join(str(r["body"]["messages"][-1]["content"]) for r in server.requests[seen:])
    assert ADD_SCRIPT not in other_texts and "return b - a" not in other_texts
    assert "Not available" in other_texts
    assert_clone_untouched(calc, before)


async def test_with_memory_off_a_run_neither_reads_nor_grows_the_memory(
    repairs: Repairs, server: ScriptedOpenAIServer, calc: Path
) -> None:
    script_common(server)
    script_issue(server, issue=ADD_ISSUE, script=ADD_SCRIPT, marker="from calc.ops import add", wrong=WRONG_ADD, fix=FIX_ADD)
    multiply = {"script": MULTIPLY_SCRIPT, "marker": "from calc.more import", "wrong": WRONG_MULTIPLY, "fix": FIX_MULTIPLY}
    script_issue(server, issue=MULTIPLY_ISSUE, **multiply)
    assert (await repairs.run(calc, ADD_ISSUE, "acme/calc#1")).state["status"] == "resolved"
    store, ns = repairs.store, repairs.namespace
    demos_before = {node.id for kind in (TEST_DEMO, PATCH_DEMO) for node in await all_nodes(store, ns, kind)}
    assert demos_before and await load_insights(store, ns, "tester") == [TESTER_INSIGHT]
    seen = len(server.requests)

    second = await repairs.run(calc, MULTIPLY_ISSUE, "acme/calc#2", memory=False)
    state = second.state
    assert state["status"] == "resolved" and "+    return a * b" in state["final_patch"]  # the same repair otherwise
    assert state["insights"] == {"tester": [], "coder": []} and not any(state["demos_used"].values())
    requests = [r["body"]["messages"] for r in server.requests[seen:]]
    systems = [messages[0]["content"] for messages in requests]
    assert not any(INSIGHTS_TESTER in text or INSIGHTS_CODER in text for text in systems)  # no insight calls
    assert not any(TESTER_INSIGHT in text or CODER_INSIGHT in text for text in systems)  # no insight in any prompt
    [tester_user] = [messages[-1]["content"] for messages in requests if TESTER in messages[0]["content"]]
    assert "Not available" in tester_user and ADD_SCRIPT not in tester_user  # no R1 example
    [refine_user] = [messages[-1]["content"] for messages in requests if REFINE in messages[0]["content"]]
    assert "return b - a" not in refine_user  # no R3 pair
    demos_after = {node.id for kind in (TEST_DEMO, PATCH_DEMO) for node in await all_nodes(store, ns, kind)}
    assert demos_after == demos_before and await load_insights(store, ns, "tester") == [TESTER_INSIGHT]
    [issue] = await store.get_nodes(ns, [issue_node_id(ns, REPO, "acme/calc#2")])
    assert issue is not None and issue.properties["status"] == "resolved"  # the outcome is still recorded


async def test_each_node_that_asks_the_model_keeps_its_reply_to_its_max_tokens(
    repairs: Repairs, server: ScriptedOpenAIServer, calc: Path
) -> None:
    script_common(server)
    script_issue(server, issue=ADD_ISSUE, script=ADD_SCRIPT, marker="from calc.ops import add", wrong=WRONG_ADD, fix=FIX_ADD)
    caps = {"write_test": 201, "judge_test": 202, "localize_files": 203, "localize_functions": 204, "localize_lines": 205,
            "generate": 206, "review": 207, "refine": 208, "variants": 209, "write_diff_tests": 210, "validate": 211,
            "update_insights": 212}  # fmt: skip
    config: dict[str, dict[str, Any]] = {node: {"max_tokens": cap} for node, cap in caps.items()}
    config["variants"] |= {"max_patches": 1}  # one call; its empty variants run nothing
    config["write_diff_tests"] |= {"temperatures": [0.0]}  # one call; its empty script runs nothing
    graph = with_node_config(repairs.graph(), config)
    result = await repairs.run(calc, ADD_ISSUE, "acme/calc#1", graph=graph)
    assert result.state["status"] == "resolved"
    asked = {(r["body"]["messages"][0]["content"], r["body"]["max_tokens"]) for r in server.requests}
    for marker, cap in [(TESTER, 201), (JUDGE, 202), (FILES_STAGE, 203), (FUNCTIONS_STAGE, 204), (LINES_STAGE, 205),
                        (CODER, 206), (REVIEW, 207), (REFINE, 208), (VARIANTS, 209), (DIFF_TEST, 210), (SELECT, 211),
                        (INSIGHTS_TESTER, 212), (INSIGHTS_CODER, 212)]:  # fmt: skip
        assert {tokens for system, tokens in asked if marker in system} == {cap}, marker


# -- (c) failure paths ------------------------------------------------------------------------------------------


async def test_a_hanging_and_a_memory_hungry_test_and_bad_patches_do_not_stop_the_run(
    repairs: Repairs, server: ScriptedOpenAIServer, calc: Path
) -> None:
    before = snapshot(calc)
    graph = repairs.graph(**{"timeout_s: 300, memory_mb: 512}": "timeout_s: 1.5, memory_mb: 256}"})
    graph = with_node_config(graph, {"generate": {"temperatures": [0.0, 0.8, 0.8]}})  # three candidates
    server.script(
        Rule(system=REVIEW, user="please change", json={"ranking": [3, 1, 2], "correct": [3], "analysis": "3 fixes it"})
    )
    script_common(server)
    server.script(
        Rule(system=TESTER, user="Your previous script:\n# hangs", json={"script": HOG_SCRIPT}),
        Rule(system=TESTER, user="Your previous script:\n# hogs", json={"script": ADD_SCRIPT}),
        Rule(system=TESTER, json={"script": HANG_SCRIPT}),
        Rule(system=JUDGE, user="from calc.ops import add", json={"analysis": "reproduced", "reproduces": True}),
        Rule(system=JUDGE, json={"analysis": "the script did not test add", "reproduces": False, "advice": "call add"}),
        Rule(system=CODER, replies=[{"patch": "please change the minus to a plus"}, {"patch": STALE_DIFF}, {"patch": FIX_ADD}]),
    )
    result = await repairs.run(calc, ADD_ISSUE, "acme/calc#1", graph=graph)
    state = result.state
    hang, hog, working = state["attempts"]
    assert hang["returncode"] is None and "[killed: the script ran longer than 1.5 s]" in hang["output"]
    assert hog["returncode"] not in (0, None) and "MemoryError" in hog["output"]
    assert working["reproduces"] and state["reproduced"]
    not_a_diff, stale, fixed = state["candidates"]
    assert not not_a_diff["applied"] and "not a unified diff" in not_a_diff["error"]
    assert not stale["applied"] and stale["error"] and not stale["correct"]
    assert fixed["applied"] and fixed["passed"] and fixed["correct"]
    assert [body["temperature"] for body in chats(server, CODER)] == [0.0, 0.8, 0.8]  # one call per candidate
    assert state["validation"]["chosen"] == fixed["id"] == "r0c3" and not chats(server, SELECT)  # one group: no call
    assert state["status"] == "resolved" and "+    return a + b" in state["final_patch"]
    errors = "\n".join(state["errors"])
    assert "evaluate (round 0, candidate 1): the patch was not applied: not a unified diff" in errors
    assert "evaluate (round 0, candidate 2): the patch was not applied" in errors
    # the failing scripts still reached the retry prompts, with the judge's advice
    retries = [text for text in user_texts(server, TESTER) if "Your previous script" in text]
    assert len(retries) == 2 and "Advice: call add" in retries[0]
    assert_clone_untouched(calc, before)


async def test_unreadable_replies_are_recorded_and_the_top_patch_is_submitted_unresolved(
    repairs: Repairs, server: ScriptedOpenAIServer, calc: Path
) -> None:
    before = snapshot(calc)
    graph = with_route_config(repairs.graph(), {"review": {"max_rounds": 1}})
    script_common(server)
    server.script(
        Rule(system=TESTER, json={"script": ADD_SCRIPT}, times=1),
        Rule(system=TESTER, text="I cannot write that.", times=2),  # the retry and its re-ask
        Rule(system=TESTER, json={"script": CHECKED_ADD_SCRIPT}),
        Rule(system=JUDGE, user="# checks add", json={"analysis": "the assertion fails as reported", "reproduces": True}),
        Rule(system=JUDGE, text="maybe?"),
        Rule(system=CODER, json={"patch": WRONG_ADD}),
        Rule(system=REFINE, text="{not json"),
    )
    result = await repairs.run(calc, ADD_ISSUE, "acme/calc#1", graph=graph)
    state = result.state
    unjudged, judged = state["attempts"]  # the second script could not be read: nothing ran
    assert (unjudged["script"], unjudged["reproduces"]) == (ADD_SCRIPT, False) and state["test_tries"] == 3
    assert (judged["script"], judged["reproduces"]) == (CHECKED_ADD_SCRIPT, True) and state["reproduced"]
    errors = state["errors"]
    assert any(e.startswith("judge_test: the verdict could not be read") for e in errors)
    assert any(e.startswith("write_test (try 2): the script could not be read") for e in errors)
    assert any(e.startswith("refine (round 1, review 1): the patch could not be read") for e in errors)
    # no refinement could be read: the rejected round-0 patch is the only one, submitted as the best (not accepted)
    assert [r["correct"] for r in state["rounds"]] == [False] and state["candidates"] == []
    [wrong] = state["pool"]
    assert wrong["id"] == "r0c1" and wrong["applied"] and not wrong["correct"] and state["validation"]["chosen"] == "r0c1"
    assert state["status"] == "unresolved" and "+    return b - a" in state["final_patch"]
    assert errors[-1] == (
        "unresolved: no reviewer accepted the submitted patch r0c1; it is submitted as the top-ranked of 1 applied "
        "patch(es) after 2 round(s)"
    )
    assert state["evidence"]["accepted"] is False and state["evidence"]["chosen"] == "r0c1"
    store, ns = repairs.store, repairs.namespace
    [issue] = await store.get_nodes(ns, [issue_node_id(ns, REPO, "acme/calc#1")])
    assert issue is not None and issue.properties["status"] == "unresolved"
    assert issue.properties["final_patch"] == state["final_patch"]
    test_demos = {node.properties["kind"]: node.properties for node in await all_nodes(store, ns, TEST_DEMO)}
    assert {kind: (demo["old_test"], demo["new_test"]) for kind, demo in test_demos.items()} == {
        "initial": ("", CHECKED_ADD_SCRIPT), "repair": (ADD_SCRIPT, CHECKED_ADD_SCRIPT)
    }  # fmt: skip
    assert await all_nodes(store, ns, PATCH_DEMO) == []  # no accepted round: no patch demonstration
    assert_clone_untouched(calc, before)
