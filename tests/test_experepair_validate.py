"""ExpeRepair's validation: variants -> write_diff_tests -> run_diff_tests -> validate -> finish, from a hand-built
state (a pool as the review leaves it) on the tiny calc repository with the scripted model.

These nodes write no records, so one store (SQLite) is enough. Only the first test runs scripts in the sandbox.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mnemoflow.graphs import load_graph, run_graph, with_node_config
from mnemoflow.graphs.loader import LoadedGraph
from mnemoflow.graphs.runner import RunResult
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.nodes.experepair.agents import reproduction_text
from mnemoflow.nodes.experepair.state import RepairState
from mnemoflow.nodes.experepair.validate import group_pool, normalised_diff, validation_summary
from mnemoflow.nodes.experepair.validate_agents import (
    DIFF_TEST_SYSTEM,
    RANK_SYSTEM,
    VARIANTS_SYSTEM,
    DiffTest,
    GroupRanking,
    GroupSelection,
    PatchVariants,
    select_messages,
)
from tests.conftest import EMBEDDER, offline_llm, settings_of
from tests.support.openai_server import Rule, ScriptedOpenAIServer
from tests.support.repair_repo import COMMUTED_ADD, FIX_ADD, STALE_DIFF, WRONG_ADD, build_repo, git_status, worktrees

VARIANTS, DIFF_TEST = "You write two variants", "You write a differential test"
SELECT, RANK = "You validate candidate fixes", "You rank groups of candidate fixes"

ISSUE = "add() returns the wrong result: add(2, 3) gives -1 instead of 5."
SCRIPT = "from calc.ops import add\nprint('add(2, 3) =', add(2, 3))\nassert add(2, 3) == 5, 'add(2, 3) should be 5'\n"
BUGGY = "add(2, 3) = -1\nAssertionError: add(2, 3) should be 5"
CODE = "--- calc/ops.py\ndef add(a, b):\n    return a - b\n"
NUMBERS_TEST = "from calc.ops import add\nfor a, b in [(2, 3), (-1, 1)]:\n    print(a, b, '->', add(a, b))\n"
ZERO_TEST = "from calc.ops import add\nprint('0 0 ->', add(0, 0))\n"

NODES = {
    "variants": "{use: experepair.variants, with: {timeout_s: 30}}",
    "write_diff_tests": "{use: experepair.write_diff_tests}",
    "run_diff_tests": "{use: experepair.run_diff_tests, with: {timeout_s: 30}}",
    "validate": "{use: experepair.validate}",
    "finish": "{use: experepair.finish}",
}


def graph_text(*names: str) -> str:
    """A graph of these validation stages in a row (all of them by default)."""
    names = names or tuple(NODES)
    nodes = "".join(f"  {name}: {NODES[name]}\n" for name in names)
    path = ["START", *names, "END"]
    edges = "".join(f"  - {{from: {a}, to: {b}}}\n" for a, b in zip(path, path[1:], strict=False))
    return (
        f"name: experepair-validate-test\nversion: 1\ndescription: ExpeRepair's validation stages from a hand-built pool.\n"
        f"state: experepair.RepairState\ninput: [repo, repo_path, issue_id, issue]\nnodes:\n{nodes}edges:\n{edges}"
    )


def entry(
    entry_id: str, patch: str, *, round: int = 0, applied: bool = True, output: str = "", passed: bool = False,
    correct: bool = False, votes: int = 0, review_score: float = 0.0, rank: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A pool entry as evaluate and review leave it (four reviews)."""
    return {
        "id": entry_id, "round": round, "origin": "generate" if round == 0 else "refine", "patch": patch,
        "applied": applied, "error": "" if applied else "patch does not apply", "diff": patch if applied else "",
        "output": output, "passed": passed, "correct": correct, "votes": votes, "reviews": 4,
        "review_score": review_score, "rank": rank,
    }  # fmt: skip


FIXED = entry("r0-1", FIX_ADD, output="add(2, 3) = 5", passed=True, correct=True, votes=3, review_score=0.9, rank=1)
WRONG = entry("r0-2", WRONG_ADD, output="add(2, 3) = 1\nAssertionError", votes=0, review_score=0.3, rank=2)
STALE = entry("r0-3", STALE_DIFF, applied=False, rank=3)


@pytest.fixture
def server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer() as running:
        yield running


class Validation:
    """Runs the validation graph on SQLite with the scripted model, from a hand-built state."""

    def __init__(self, store: GraphStore, server: ScriptedOpenAIServer, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.store, self.server = store, server
        self.settings = settings_of(store, tmp_path, request)
        self.tmp_path = tmp_path
        self.graph = self.stages()
        self.calc = build_repo(tmp_path / "calc")

    def stages(self, *names: str) -> LoadedGraph:
        path = self.tmp_path / f"experepair-validate-{len(names)}.yaml"
        path.write_text(graph_text(*names))
        return load_graph(path)

    async def run(self, graph: LoadedGraph | None = None, **state: Any) -> dict[str, Any]:
        values = {"repo": "acme/calc", "repo_path": str(self.calc), "issue_id": "acme/calc#1", "issue": ISSUE, **state}
        result: RunResult = await run_graph(
            graph or self.graph, values, store=self.store, embedder=EMBEDDER, llm=self.server.gateway(),
            settings=self.settings, checkpointer=None, namespace="validate-tests",
        )  # fmt: skip
        return dict(result.state)

    def configured(self, **config: dict[str, Any]) -> LoadedGraph:
        return with_node_config(self.graph, config)

    def chats(self, system: str) -> list[dict[str, Any]]:
        """The chat requests whose system prompt contains ``system``."""
        return [
            r["body"]
            for r in self.server.requests
            if r["path"].endswith("/chat/completions") and system in r["body"]["messages"][0]["content"]
        ]

    def users(self, system: str) -> list[str]:
        return [str(body["messages"][-1]["content"]) for body in self.chats(system)]


@pytest.fixture
def validation(
    sqlite_store: GraphStore, server: ScriptedOpenAIServer, tmp_path: Path, request: pytest.FixtureRequest
) -> Validation:
    return Validation(sqlite_store, server, tmp_path, request)


# -- the whole pipeline ------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.subprocess
async def test_variants_diff_tests_groups_selection_and_ranking_choose_the_fix(
    validation: Validation, server: ScriptedOpenAIServer
) -> None:
    server.script(
        Rule(system=VARIANTS, json={"expanded": COMMUTED_ADD, "compressed": FIX_ADD}),
        Rule(system=DIFF_TEST, replies=[{"script": NUMBERS_TEST}, {"script": ZERO_TEST}, "no script, sorry"]),
        Rule(system=SELECT, json={"correct": [1, 7], "analysis": "group 1 adds"}),
        Rule(system=RANK, json={"ranking": [1, 2], "analysis": "group 1 sums"}),
    )
    state = await validation.run(
        reproduced=True, test_script=SCRIPT, test_output=BUGGY, code=CODE, pool=[FIXED, WRONG, STALE],
        insights={"coder": ["Check the operator first."]},
    )  # fmt: skip

    # variants: one call for the one accepted patch, coder insights in the system prompt
    [variant_call] = validation.chats(VARIANTS)
    assert variant_call["messages"][0]["content"] == (
        VARIANTS_SYSTEM + "\n\nExperiences from other issues of this project:\n1. Check the operator first."
    )
    assert variant_call["messages"][1]["content"] == (
        f"Issue:\n{ISSUE}\n\nCode:\n{CODE}\n\nThe fix:\n{FIX_ADD}\n\nIts reproduction test result:\n"
        "add(2, 3) = 5\n\nWrite the expanded and the compressed variant."
    )
    pool = {item["id"]: item for item in state["pool"]}
    assert list(pool) == ["r0-1", "r0-2", "r0-3", "r0-1-expanded", "r0-1-compressed"]
    expanded, compressed = pool["r0-1-expanded"], pool["r0-1-compressed"]
    assert expanded["origin"] == "expanded" and compressed["origin"] == "compressed"
    assert expanded["patch"] == COMMUTED_ADD and normalised_diff(expanded["diff"]) == normalised_diff(COMMUTED_ADD)
    for variant in (expanded, compressed):
        assert variant["round"] == 0 and variant["rank"] is None and variant["applied"] is True
        assert variant["output"] == "add(2, 3) = 5" and variant["passed"] is True
        assert (variant["votes"], variant["reviews"], variant["review_score"], variant["correct"]) == (3, 4, 0.9, True)

    # differential tests: three calls at the paper's temperatures; the unreadable third is left out
    calls = validation.chats(DIFF_TEST)
    assert [call["temperature"] for call in calls] == [0.0, 0.8, 0.8, 0.8]  # the third was asked again once
    assert calls[0]["messages"][0]["content"] == DIFF_TEST_SYSTEM
    assert expanded["diff"].startswith("diff --git a/calc/ops.py b/calc/ops.py\nindex ")  # as git wrote it
    patches = f"[1]\n{FIX_ADD.strip()}\n\n[2]\n{expanded['diff'].strip()}\n\n[3]\n{WRONG_ADD.strip()}"
    assert calls[0]["messages"][1]["content"] == (
        f"Issue:\n{ISSUE}\n\nCode:\n{CODE}\n\nCandidate patches:\n{patches}\n\n"
        "Write one differential test trying at most 8 inputs."
    )
    assert all(call["messages"] == calls[0]["messages"] for call in calls[:3])  # the same prompt at each temperature
    assert state["diff_tests"] == [NUMBERS_TEST, ZERO_TEST]
    assert any(error.startswith("write_diff_tests (test 3): the script could not be read") for error in state["errors"])

    # the runs: the unfixed code, then each applied entry (the compressed one shares the fix's run)
    assert state["diff_baseline"] == ["2 3 -> -1\n-1 1 -> -2", "0 0 -> 0"]
    assert pool["r0-1"]["diff_outputs"] == ["2 3 -> 5\n-1 1 -> 0", "0 0 -> 0"]
    assert expanded["diff_outputs"] == compressed["diff_outputs"] == pool["r0-1"]["diff_outputs"]
    assert pool["r0-2"]["diff_outputs"] == ["2 3 -> 1\n-1 1 -> 2", "0 0 -> 0"]
    assert pool["r0-3"]["diff_outputs"] == []

    # validation: the fix, its commuted and its identical variant form one group; one selection call, one ranking
    # call (the zero test prints the same for every group)
    shown = [
        {"patch": FIX_ADD, "size": 3, "output": "add(2, 3) = 5", "diff_outputs": pool["r0-1"]["diff_outputs"]},
        {"patch": WRONG_ADD, "size": 1, "output": WRONG["output"], "diff_outputs": pool["r0-2"]["diff_outputs"]},
    ]
    expected_state = RepairState(
        repo="acme/calc", repo_path="x", issue_id="1", issue=ISSUE, reproduced=True, test_script=SCRIPT, test_output=BUGGY
    )
    expected = select_messages(ISSUE, reproduction_text(expected_state), [NUMBERS_TEST, ZERO_TEST], state["diff_baseline"], shown)
    [select_call] = validation.chats(SELECT)
    assert select_call["messages"] == expected
    assert "Group 1 (3 equivalent patch(es)):" in expected[1]["content"]
    assert "Differential test 2:\n" + ZERO_TEST + "\nIts output on the unfixed code:\n0 0 -> 0" in expected[1]["content"]
    [rank_call] = validation.chats(RANK)
    assert rank_call["messages"] == [
        {"role": "system", "content": RANK_SYSTEM},
        {
            "role": "user",
            "content": f"Issue:\n{ISSUE}\n\nDifferential test:\n{NUMBERS_TEST}\n\nIts output on the unfixed code:\n"
            "2 3 -> -1\n-1 1 -> -2\n\nOutputs per group:\nGroup 1:\n2 3 -> 5\n-1 1 -> 0\n\nGroup 2:\n2 3 -> 1\n-1 1 -> 2"
            "\n\nRank the groups.",
        },
    ]
    assert state["validation"] == {
        "groups": [
            {"number": 1, "members": ["r0-1", "r0-1-expanded", "r0-1-compressed"], "passed": True, "votes": 0.75,
             "review_score": 0.9, "selected": True, "mean_rank": 1.0},
            {"number": 2, "members": ["r0-2"], "passed": False, "votes": 0.0, "review_score": 0.3, "selected": False,
             "mean_rank": 2.0},
        ],
        "selected": [1],
        "ranks": [[1, 2], []],
        "order": ["r0-1", "r0-1-expanded", "r0-1-compressed", "r0-2"],
        "chosen": "r0-1",
    }  # fmt: skip

    assert state["status"] == "resolved" and state["final_patch"] == FIX_ADD
    assert state["evidence"] == {
        "reproduced": True, "test_script": SCRIPT, "buggy_output": BUGGY, "rounds": 1, "review": {}, "chosen": "r0-1",
        "groups": 2, "accepted": True, "patched_output": "add(2, 3) = 5", "passed": True,
    }  # fmt: skip
    assert not [error for error in state["errors"] if error.startswith("unresolved")]
    assert git_status(validation.calc) == "" and len(worktrees(validation.calc)) == 1


# -- the branches that call less ---------------------------------------------------------------------------------


@pytest.mark.parametrize("submit", ["best", "accepted"])
async def test_no_accepted_patch_means_no_variants_no_diff_tests_no_validation_calls(
    validation: Validation, server: ScriptedOpenAIServer, submit: str
) -> None:
    wrong = {**WRONG, "rank": 1}
    state = await validation.run(
        validation.configured(finish={"submit": submit}), reproduced=True, test_script=SCRIPT, test_output=BUGGY,
        code=CODE, pool=[wrong, STALE], round=3,
    )  # fmt: skip
    assert server.count("/chat/completions") == 0  # no parent, one distinct patch, one group
    assert state["pool"] == [wrong, STALE] and state["diff_tests"] == [] and not state.get("diff_baseline")
    assert state["validation"]["groups"] == [
        {"number": 1, "members": ["r0-2"], "passed": False, "votes": 0.0, "review_score": 0.3, "selected": False,
         "mean_rank": None}
    ]  # fmt: skip
    assert state["validation"]["chosen"] == "r0-2" and state["status"] == "unresolved"
    if submit == "best":  # the paper always submits its top-1
        assert state["final_patch"] == WRONG_ADD and state["evidence"]["chosen"] == "r0-2"
        assert state["evidence"]["accepted"] is False and state["evidence"]["passed"] is False
        assert state["errors"][-1] == (
            "unresolved: no reviewer accepted the submitted patch r0-2; it is submitted as the top-ranked of 1 applied "
            "patch(es) after 4 round(s)"
        )
    else:
        assert state["final_patch"] == "" and state["evidence"]["chosen"] == ""
        assert "passed" not in state["evidence"]
        assert state["errors"][-1] == "unresolved: no candidate patch was applied and accepted after 4 round(s)"


async def test_unreadable_replies_are_skipped_and_without_a_reproduction_groups_are_by_diff(
    validation: Validation, server: ScriptedOpenAIServer
) -> None:
    # no script reproduces the issue: the last round's applied patches get variants, accepted or not
    old = entry("r0-1", COMMUTED_ADD, output="", review_score=1.0)
    fix = entry("r1-1", FIX_ADD, round=1, review_score=0.5, votes=2, rank=2)
    wrong = entry("r1-2", WRONG_ADD, round=1, review_score=0.5, votes=2, rank=1)
    server.script(
        Rule(system=VARIANTS, text="not a reply"),
        Rule(system=SELECT, text="not a reply either"),
    )
    graph = validation.configured(write_diff_tests={"temperatures": []})
    state = await validation.run(graph, reproduced=False, code=CODE, pool=[old, fix, wrong], round=1)

    variant_users = validation.users(VARIANTS)
    assert len(variant_users) == 4  # two parents, each asked twice (the re-ask with the validation error)
    assert f"The fix:\n{WRONG_ADD}\n\nIts reproduction test result:\n(no reproduction test ran)" in variant_users[0]
    assert f"The fix:\n{FIX_ADD}\n\n" in variant_users[2]
    assert [error.split(":")[0] for error in state["errors"][:2]] == ["variants (r1-2)", "variants (r1-1)"]
    assert len(state["pool"]) == 3 and state["diff_tests"] == []

    # without any output to compare, only equal diffs group: three groups, the selection unreadable, no ranking
    [select_user] = validation.users(SELECT)[:1]
    assert "Reproduction:\nNo reproduction script is available." in select_user and "Differential test" not in select_user
    assert not validation.chats(RANK)
    assert "validate (selection): the reply could not be read; it is skipped" in state["errors"][2]
    result = state["validation"]
    assert [group["members"] for group in result["groups"]] == [["r0-1"], ["r1-1"], ["r1-2"]]
    assert result["selected"] == [] and result["ranks"] == []
    assert result["order"] == ["r1-1", "r1-2", "r0-1"]  # more accepting reviews first; on a tie, pool order
    assert state["final_patch"] == FIX_ADD and state["status"] == "unresolved"


async def test_an_unreadable_ranking_is_skipped_and_a_test_that_prints_the_same_everywhere_is_not_ranked(
    validation: Validation, server: ScriptedOpenAIServer
) -> None:
    fix = {**FIXED, "diff_outputs": ["2 3 -> 5", "same"]}
    wrong = {**WRONG, "diff_outputs": ["2 3 -> 1", "same"]}
    server.script(Rule(system=SELECT, json={"correct": []}), Rule(system=RANK, text="first, group 2"))
    state = await validation.run(
        validation.stages("validate", "finish"), reproduced=True, test_script=SCRIPT, test_output=BUGGY,
        pool=[wrong, fix], diff_tests=[NUMBERS_TEST, ZERO_TEST], diff_baseline=["2 3 -> -1", "same"],
    )  # fmt: skip
    assert len(validation.chats(SELECT)) == 1 and len(validation.chats(RANK)) == 2  # one ranking, asked again once
    assert "Differential test:\n" + NUMBERS_TEST in validation.users(RANK)[0]
    assert state["errors"][0].startswith("validate (ranking 1): the reply could not be read; it is skipped")
    result = state["validation"]
    assert result["selected"] == [] and result["ranks"] == [[], []]
    assert [group["mean_rank"] for group in result["groups"]] == [None, None]
    assert result["order"] == ["r0-1", "r0-2"] and state["final_patch"] == FIX_ADD and state["status"] == "resolved"


async def test_without_validation_finish_orders_the_pool_itself(validation: Validation, server: ScriptedOpenAIServer) -> None:
    state = await validation.run(
        validation.stages("finish"), reproduced=True, test_script=SCRIPT, test_output=BUGGY, pool=[WRONG, STALE, FIXED]
    )
    assert server.count("/chat/completions") == 0
    assert state["status"] == "resolved" and state["final_patch"] == FIX_ADD
    assert (state["evidence"]["chosen"], state["evidence"]["groups"], state["evidence"]["accepted"]) == ("r0-1", 2, True)


# -- grouping and ordering, without a graph ----------------------------------------------------------------------


def test_groups_close_over_equal_diffs_and_equal_outputs() -> None:
    a = {**entry("a", FIX_ADD, output="5"), "diff_outputs": ["x"]}
    b = {**entry("b", "diff --git a/calc/ops.py b/calc/ops.py\nindex 1..2 100644\n" + FIX_ADD, output="5"), "diff_outputs": ["y"]}
    c = {**entry("c", COMMUTED_ADD, output="5", review_score=0.4), "diff_outputs": ["y"]}
    d = {**entry("d", WRONG_ADD, output="5"), "diff_outputs": ["z"]}
    # a ~ b by diff (git's header lines ignored), b ~ c by outputs: one group; d differs on the differential test
    assert [[e["id"] for e in group] for group in group_pool([a, b, c, d, STALE], by_outputs=True)] == [
        ["c", "a", "b"],
        ["d"],
    ]
    # by diff only, the same outputs do not group
    assert [[e["id"] for e in group] for group in group_pool([a, c], by_outputs=False)] == [["a"], ["c"]]
    # a traceback's worktree folder and script name do not make two runs differ
    run = 'File "/tmp/mnemoflow-worktree-{}/tree/.mnemoflow_sandbox/{}.py", line 3\nAssertionError'
    e1 = entry("e1", FIX_ADD, output=run.format("ab12", "0" * 32))
    e2 = entry("e2", COMMUTED_ADD, output=run.format("cd34", "f" * 32))
    assert len(group_pool([e1, e2], by_outputs=True)) == 1


def test_order_is_selected_then_passed_then_reviews_then_mean_rank() -> None:
    groups = [[entry("a", FIX_ADD)], [entry("b", WRONG_ADD, passed=True)], [entry("c", COMMUTED_ADD, votes=4)]]
    assert validation_summary(groups, [], [])["order"] == ["b", "c", "a"]
    assert validation_summary(groups, [1], [])["order"] == ["a", "b", "c"]
    # a ranking that leaves a group out puts it last; ranks are averaged over the tests that were ranked
    summary = validation_summary([[entry("a", FIX_ADD)], [entry("b", WRONG_ADD)]], [], [[2], [], [2, 1]])
    assert [group["mean_rank"] for group in summary["groups"]] == [2.0, 1.0] and summary["chosen"] == "b"
    assert validation_summary([], [], []) == {"groups": [], "selected": [], "ranks": [], "order": [], "chosen": ""}


async def test_offline_stand_ins_claim_nothing() -> None:
    llm = offline_llm()
    messages = [{"role": "system", "content": "x"}, {"role": "user", "content": "Issue:\nx"}]
    assert await llm.structured(messages, PatchVariants) == PatchVariants(expanded="", compressed="")
    assert (await llm.structured(messages, DiffTest)).script == ""
    assert (await llm.structured(messages, GroupSelection)).correct == []
    assert (await llm.structured(messages, GroupRanking)).ranking == []
