"""ExpeRepair: the experepair graph on a real (tiny) git repository with the scripted model, on both stores.

The repository's ``add`` subtracts and its ``multiply`` adds. Scripts and patches run in throwaway worktrees; the
clone itself must never change.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mnemoflow.graphs import run_graph, with_node_config
from mnemoflow.graphs.loader import LoadedGraph
from mnemoflow.graphs.runner import RunResult
from mnemoflow.memory.paging import all_nodes
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.nodes.experepair.insights import load_insights
from mnemoflow.nodes.experepair.model import ISSUE, PATCH_DEMO, TEST_DEMO, issue_node_id
from mnemoflow.nodes.experepair.repository import is_unified_diff
from tests.conftest import EMBEDDER, settings_of
from tests.support.graph_variants import library_variant
from tests.support.openai_server import Rule, ScriptedOpenAIServer
from tests.support.repair_repo import (
    FIX_ADD,
    FIX_MULTIPLY,
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
TESTER, JUDGE, LOCALIZE = "You are the Test Agent", "You judge whether", "You localize"
CODER, REFINE, REVIEW = "Write patches that fix", "refining a patch", "You review candidate patches"
INSIGHTS_TESTER, INSIGHTS_CODER = "insights for the tester agent", "insights for the coder agent"

ADD_ISSUE = "add() returns the wrong result: add(2, 3) gives -1 instead of 5."
MULTIPLY_ISSUE = "multiply() returns the wrong result: multiply(2, 3) gives 5 instead of 6."
ADD_SCRIPT = "from calc.ops import add\nprint('add(2, 3) =', add(2, 3))\nassert add(2, 3) == 5, 'add(2, 3) should be 5'\n"
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


def chats(server: ScriptedOpenAIServer, system: str) -> list[dict[str, Any]]:
    """The chat requests whose system prompt contains ``system``."""
    return [
        r["body"]
        for r in server.requests
        if r["path"].endswith("/chat/completions") and system in r["body"]["messages"][0]["content"]
    ]


def user_texts(server: ScriptedOpenAIServer, system: str) -> list[str]:
    return [str(body["messages"][-1]["content"]) for body in chats(server, system)]


def script_common(server: ScriptedOpenAIServer) -> None:
    """Localization, review verdicts on the known diffs and insight edits."""
    server.script(
        Rule(system=LOCALIZE, user="add()", json={"locations": [{"file": "calc/ops.py", "function": "add", "reason": "sign"}]}),
        Rule(system=LOCALIZE, json={"locations": [{"file": "calc/more.py", "function": "multiply", "reason": "op"}]}),
        Rule(system=REVIEW, user="+    return a + b", json={"ranking": [1], "correct": [1], "analysis": "fixes add"}),
        Rule(system=REVIEW, user="+    return a * b", json={"ranking": [1], "correct": [1], "analysis": "fixes multiply"}),
        Rule(
            system=REVIEW,
            json={"ranking": [1], "correct": [], "analysis": "the test still fails", "advice": "use the right operator"},
        ),
        Rule(system=INSIGHTS_TESTER, json={"edits": [{"operation": "ADD", "number": 0, "text": TESTER_INSIGHT}]}),
        Rule(system=INSIGHTS_CODER, json={"edits": [{"operation": "ADD", "number": 0, "text": CODER_INSIGHT}]}),
    )


def script_issue(server: ScriptedOpenAIServer, *, issue: str, script: str, marker: str, wrong: str, fix: str) -> None:
    """The tester writes ``script`` at once (judged YES); round 0 proposes ``wrong``, the refinement ``fix``."""
    server.script(
        Rule(system=TESTER, user=issue, json={"script": script}),
        Rule(system=JUDGE, user=marker, json={"analysis": "the assertion fails as reported", "reproduces": True}),
        Rule(system=CODER, user=issue, json={"patches": [wrong]}),
        Rule(system=REFINE, user=issue, json={"patches": [fix]}),
    )


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
        """The library graph, or a copy in tmp_path with text replaced (e.g. smaller limits)."""
        return library_variant("experepair", self.tmp_path, replace)

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
    assert state["reproduced"] is True and state["locations"][0]["file"] == "calc/ops.py"
    assert "def add(a, b):" in state["code"]

    assert [r["correct"] for r in state["rounds"]] == [False, True]  # round 0 wrong, the refinement right
    [candidate] = state["candidates"]
    assert candidate["applied"] and candidate["passed"] and candidate["correct"] and candidate["rank"] == 1
    assert "add(2, 3) = 5" in candidate["output"]
    assert state["status"] == "resolved" and is_unified_diff(state["final_patch"])
    assert "-    return a - b" in state["final_patch"] and "+    return a + b" in state["final_patch"]
    assert state["evidence"]["passed"] is True and "AssertionError" in state["evidence"]["buggy_output"]
    assert state["errors"] == []
    assert not any(state["demos_used"].values())  # an empty memory: no demonstration

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
    assert second.state["demos_used"]["test_initial"] == [test_demo.id]
    assert second.state["demos_used"]["patch_refine"] == [patch_demo.id]
    requests = server.requests[seen:]
    tester_prompts = [
        [m["content"] for m in r["body"]["messages"]] for r in requests if TESTER in r["body"]["messages"][0]["content"]
    ]
    [[tester_system, tester_user]] = tester_prompts
    assert ADD_SCRIPT in tester_user and MULTIPLY_ISSUE in tester_user  # R1: the first issue's working script
    assert TESTER_INSIGHT in tester_system  # the insight learned on the first issue, in the system prompt
    [refine_user] = [r["body"]["messages"][-1]["content"] for r in requests if REFINE in r["body"]["messages"][0]["content"]]
    assert patch_demo.properties["old_patch"] in refine_user and patch_demo.properties["new_patch"] in refine_user  # R3

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
    caps = {"write_test": 201, "judge_test": 202, "localize": 203, "generate": 204, "review": 205, "refine": 206,
            "update_insights": 207}  # fmt: skip
    graph = with_node_config(repairs.graph(), {node: {"max_tokens": cap} for node, cap in caps.items()})
    result = await repairs.run(calc, ADD_ISSUE, "acme/calc#1", graph=graph)
    assert result.state["status"] == "resolved"
    asked = {(r["body"]["messages"][0]["content"], r["body"]["max_tokens"]) for r in server.requests}
    for marker, cap in [(TESTER, 201), (JUDGE, 202), (LOCALIZE, 203), (CODER, 204), (REVIEW, 205), (REFINE, 206),
                        (INSIGHTS_TESTER, 207), (INSIGHTS_CODER, 207)]:  # fmt: skip
        assert {tokens for system, tokens in asked if marker in system} == {cap}, marker


# -- (c) failure paths ------------------------------------------------------------------------------------------


async def test_a_hanging_and_a_memory_hungry_test_and_bad_patches_do_not_stop_the_run(
    repairs: Repairs, server: ScriptedOpenAIServer, calc: Path
) -> None:
    before = snapshot(calc)
    graph = repairs.graph(**{"timeout_s: 60, memory_mb: 512}": "timeout_s: 1.5, memory_mb: 256}"})
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
        Rule(system=CODER, json={"patches": ["please change the minus to a plus", STALE_DIFF, FIX_ADD]}),
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
    assert state["status"] == "resolved" and "+    return a + b" in state["final_patch"]
    errors = "\n".join(state["errors"])
    assert "candidate 1): the patch was not applied: not a unified diff" in errors
    assert "candidate 2): the patch was not applied" in errors
    # the failing scripts still reached the retry prompts, with the judge's advice
    retries = [text for text in user_texts(server, TESTER) if "Your previous script" in text]
    assert len(retries) == 2 and "Advice: call add" in retries[0]
    assert_clone_untouched(calc, before)


async def test_unreadable_replies_end_unresolved_with_clear_errors(
    repairs: Repairs, server: ScriptedOpenAIServer, calc: Path
) -> None:
    before = snapshot(calc)
    graph = repairs.graph(**{"max_test_attempts: 3": "max_test_attempts: 2", "max_rounds: 2": "max_rounds: 1"})
    script_common(server)
    server.script(
        Rule(system=TESTER, json={"script": ADD_SCRIPT}, times=1),
        Rule(system=TESTER, text="I cannot write that."),  # the retry and its re-ask
        Rule(system=JUDGE, text="maybe?"),
        Rule(system=CODER, json={"patches": [WRONG_ADD]}),
        Rule(system=REFINE, text="{not json"),
    )
    result = await repairs.run(calc, ADD_ISSUE, "acme/calc#1", graph=graph)
    state = result.state
    assert state["status"] == "unresolved" and state["final_patch"] == ""
    [attempt] = state["attempts"]  # the second script could not be read: nothing ran
    assert attempt["reproduces"] is False and state["test_tries"] == 2
    errors = state["errors"]
    assert any(e.startswith("judge_test: the verdict could not be read") for e in errors)
    assert any(e.startswith("write_test (try 2): the script could not be read") for e in errors)
    assert any(e.startswith("refine (round 1): the patches could not be read") for e in errors)
    assert "unresolved: no candidate patch was applied and accepted after 2 round(s)" in errors
    assert [r["correct"] for r in state["rounds"]] == [False]
    store, ns = repairs.store, repairs.namespace
    [issue] = await store.get_nodes(ns, [issue_node_id(ns, REPO, "acme/calc#1")])
    assert issue is not None and issue.properties["status"] == "unresolved"
    assert await all_nodes(store, ns, TEST_DEMO) == [] and await all_nodes(store, ns, PATCH_DEMO) == []
    assert_clone_untouched(calc, before)
