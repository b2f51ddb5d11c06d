"""ExpeRepair's candidates, reviews and refinement: small graphs of generate -> evaluate -> review -[after_review]->
refine | variants | validate on the tiny calc repository with the scripted model.

Most tests start at ``review`` or ``refine`` with the candidates already evaluated, so only the loop test and the
no-reproduction test run the sandbox.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mnemoflow.graphs import load_graph, run_graph
from mnemoflow.graphs.runner import RunResult
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.nodes import NoConfig, RunContext, node
from mnemoflow.nodes.experepair.agents import CODER_SYSTEM, REFINE_SYSTEM, REVIEW_SYSTEM, Review
from mnemoflow.nodes.experepair.episodes import PatchRound, record_patch_rounds
from mnemoflow.nodes.experepair.patch import RoundsConfig, after_review, combine_reviews
from mnemoflow.nodes.experepair.state import RepairState
from tests.conftest import EMBEDDER, settings_of
from tests.support.openai_server import Rule, ScriptedOpenAIServer
from tests.support.repair_repo import FIX_ADD, FIX_MULTIPLY, STALE_DIFF, WRONG_ADD, WRONG_MULTIPLY, build_repo

REPO = "acme/calc"
ISSUE = "add() returns the wrong result: add(2, 3) gives -1 instead of 5."
SCRIPT = "from calc.ops import add\nprint('add(2, 3) =', add(2, 3))\nassert add(2, 3) == 5, 'add(2, 3) should be 5'\n"
BUGGY_OUTPUT = "add(2, 3) = -1\nAssertionError: add(2, 3) should be 5"
CODE = "--- calc/ops.py\ndef add(a, b):\n    return a - b\n"
ROLES = {"generate": "Write a patch that fixes", "review": "You review candidate patches", "refine": "refining a patch"}
GARBAGE = "I would rather not."
"""A reply that never validates; the gateway asks again once, so an unreadable reply takes two of them."""


@node("testing.repair_mark", state=RepairState, reads=set(), writes=set())
async def repair_mark(state: RepairState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """Do nothing: an outcome of ``experepair.after_review`` lands here, so the run's steps show which one."""
    return {}


@pytest.fixture
def server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer() as running:
        yield running


@pytest.fixture
def calc(tmp_path: Path) -> Path:
    return build_repo(tmp_path / "calc")


def graph(folder: Path, start: str, *, temperatures: str = "[0.0, 0.8, 0.8]", reviews: int = 3, gate: bool = False,
          max_rounds: int = 1) -> Path:  # fmt: skip
    """The patch loop from ``start`` (generate, review or refine); each after_review outcome ends at its own mark."""
    nodes = {
        "generate": f"{{use: experepair.generate, with: {{temperatures: {temperatures}}}}}",
        "evaluate": "{use: experepair.evaluate, with: {timeout_s: 60, memory_mb: 512}}",
        "review": f"{{use: experepair.review, with: {{reviews: {reviews}, exit_code_gate: {str(gate).lower()}}}}}",
        "refine": "{use: experepair.refine}",
        "variants": "{use: testing.repair_mark}",
        "refined": "{use: testing.repair_mark}",
        "validate": "{use: testing.repair_mark}",
    }
    edges = [("START", start), ("variants", "END"), ("validate", "END")]
    route = f"    outcomes: {{variants: variants, refine: {'refine' if start != 'review' else 'refined'}, validate: validate}}\n"
    if start == "generate":
        edges += [("generate", "evaluate"), ("evaluate", "review"), ("refine", "evaluate")]
        del nodes["refined"]
    elif start == "review":
        edges += [("refined", "END")]
        del nodes["generate"], nodes["evaluate"], nodes["refine"]
    else:  # refine alone
        edges = [("START", "refine"), ("refine", "END")]
        nodes = {"refine": nodes["refine"]}
        route = ""
    text = "name: patch-loop\nstate: experepair.RepairState\ninput: [repo, repo_path, issue_id, issue]\nmax_steps: 30\n"
    text += "nodes:\n" + "".join(f"  {name}: {spec}\n" for name, spec in nodes.items())
    text += "edges:\n" + "".join(f"  - {{from: {a}, to: {b}}}\n" for a, b in edges)
    if route:
        text += f"routes:\n  - from: review\n    router: experepair.after_review\n    with: {{max_rounds: {max_rounds}}}\n{route}"
    path = folder / f"patch-loop-{start}.yaml"
    path.write_text(text)
    return path


async def run(
    store: GraphStore, server: ScriptedOpenAIServer, namespace: str, tmp_path: Path, request: pytest.FixtureRequest,
    path: Path, repo_path: Path, **values: Any,
) -> RunResult:  # fmt: skip
    given = {"repo": REPO, "repo_path": str(repo_path), "issue_id": "acme/calc#1", "issue": ISSUE, "code": CODE, **values}
    return await run_graph(
        load_graph(path), given, store=store, embedder=EMBEDDER, llm=server.gateway(),
        settings=settings_of(store, tmp_path, request), checkpointer=None, namespace=namespace,
    )  # fmt: skip


def calls(server: ScriptedOpenAIServer) -> list[tuple[str, float, bool]]:
    """(role, temperature, is a re-ask) of every chat request, in order."""
    seen = []
    for sent in server.requests:
        if sent["path"].endswith("/chat/completions"):
            messages = sent["body"]["messages"]
            role = next(name for name, marker in ROLES.items() if marker in messages[0]["content"])
            seen.append((role, sent["body"]["temperature"], len(messages) > 2))
    return seen


def prompts(server: ScriptedOpenAIServer, role: str) -> list[tuple[str, str]]:
    """(system, user) of the first asks of ``role`` (re-asks left out), in order."""
    return [
        (sent["body"]["messages"][0]["content"], sent["body"]["messages"][-1]["content"])
        for sent in server.requests
        if sent["path"].endswith("/chat/completions")
        and ROLES[role] in sent["body"]["messages"][0]["content"]
        and len(sent["body"]["messages"]) == 2
    ]


def entry(id_: str, patch: str, *, applied: bool = True, passed: bool = False, output: str = "") -> dict[str, Any]:
    """An evaluated, not yet reviewed pool entry."""
    return {
        "id": id_, "round": int(id_[1]), "origin": "generate" if id_.startswith("r0") else "refine", "patch": patch,
        "applied": applied, "error": "" if applied else "patch does not apply", "diff": patch if applied else "",
        "output": output, "passed": passed, "correct": False, "votes": 0, "reviews": 0, "review_score": 0.0,
        "rank": None, "diff_outputs": [],
    }  # fmt: skip


def verdict(ranking: list[int], correct: list[int], analysis: str = "", advice: str = "") -> dict[str, Any]:
    return {"ranking": ranking, "correct": correct, "analysis": analysis, "advice": advice}


def scored(candidates: list[dict[str, Any]]) -> list[tuple[str, int, int, float, bool, int]]:
    return [(c["id"], c["votes"], c["reviews"], c["review_score"], c["correct"], c["rank"]) for c in candidates]


# -- combining the reviews (no model, no store) ------------------------------------------------------------------


def test_three_of_four_votes_accept_and_two_of_four_do_not() -> None:
    candidates = [entry("r0c1", FIX_ADD, passed=True), entry("r0c2", WRONG_ADD), entry("r0c3", STALE_DIFF, applied=False)]
    reviews = [
        Review(ranking=[1, 2, 3], correct=[1, 2], analysis="one and two fix it"),
        Review(ranking=[2, 1], correct=[1, 2, 3], analysis="two is best", advice="keep two"),
        Review(ranking=[1, 2, 3], correct=[1, 3]),
        None,  # unreadable: accepts nothing, ranks nothing
    ]
    combined = combine_reviews(candidates, reviews, gate=False)
    # positions (1, 2, 1) -> mean 4/3 -> 1 - (1/3)/2; (2, 1, 2) -> 5/3; (3, 3, 3) -> 0; the unapplied one never correct
    assert scored(candidates) == [("r0c1", 3, 4, 0.8333, True, 1), ("r0c2", 2, 4, 0.6667, False, 2), ("r0c3", 2, 4, 0.0, False, 3)]
    assert combined == {"ranking": [1, 2, 3], "correct": [1], "analysis": "one and two fix it", "advice": ""}


def test_the_exit_code_gate_turns_down_a_candidate_whose_script_fails() -> None:
    def accepted(gate: bool) -> list[bool]:
        candidates = [entry("r0c1", WRONG_ADD, passed=False), entry("r0c2", FIX_ADD, passed=True)]
        combine_reviews(candidates, [Review(ranking=[1, 2], correct=[1, 2])], gate=gate)
        return [c["correct"] for c in candidates]

    assert accepted(gate=False) == [True, True]
    assert accepted(gate=True) == [False, True]


def test_the_combined_review_speaks_for_a_reviewer_who_ranked_the_winner_first() -> None:
    candidates = [entry("r0c1", WRONG_ADD), entry("r0c2", FIX_ADD, passed=True)]
    reviews = [Review(ranking=[1], analysis="one", advice="a"), Review(ranking=[2], correct=[2], analysis="two", advice="b")]
    combined = combine_reviews(candidates, [*reviews, Review(ranking=[2, 1], correct=[2], analysis="three")], gate=False)
    assert combined == {"ranking": [2, 1], "correct": [2], "analysis": "two", "advice": "b"}
    assert combine_reviews([entry("r0c1", FIX_ADD)], [None, None], gate=False) == {
        "ranking": [1], "correct": [], "analysis": "", "advice": ""
    }  # fmt: skip


def test_after_review_routes_to_variants_refine_or_validate() -> None:
    def route(reproduced: bool, correct: bool, round_: int) -> str:
        candidate = {**entry("r0c1", FIX_ADD), "correct": correct}
        state = RepairState(repo=REPO, repo_path="/x", issue_id="1", issue=ISSUE, reproduced=reproduced,
                            candidates=[candidate], round=round_)  # fmt: skip
        return after_review(state, RoundsConfig())

    assert RoundsConfig().max_rounds == 3
    assert [route(True, True, 0), route(True, False, 0), route(True, False, 2), route(True, False, 3)] == [
        "variants", "refine", "refine", "validate"
    ]  # fmt: skip
    assert {route(False, False, r) for r in (0, 1, 3)} == {"variants"}  # no reproduction: never refined


# -- review and its route, in a graph (no sandbox) ---------------------------------------------------------------


@pytest.mark.parametrize("gate", [False, True])
async def test_four_reviews_are_asked_and_combined_and_the_gate_decides_the_route(
    sqlite_store: GraphStore, server: ScriptedOpenAIServer, namespace: str, tmp_path: Path, request: pytest.FixtureRequest,
    gate: bool,
) -> None:  # fmt: skip
    server.script(
        Rule(system=REVIEW_SYSTEM, replies=[
            verdict([1, 2], [1, 2], "both fix it"), verdict([1, 2], [1, 2]), verdict([2, 1], [1], "two is neater", "b"),
            verdict([1, 2], [], "neither", "use a plus"),
        ])  # fmt: skip
    )
    earlier = {**entry("r0c1", WRONG_ADD), "votes": 0, "reviews": 4, "rank": 1}
    candidates = [entry("r1c1", WRONG_ADD, output="add(2, 3) = 1"), entry("r1c2", FIX_ADD, passed=True, output="add(2, 3) = 5")]
    result = await run(
        sqlite_store, server, namespace, tmp_path, request, graph(tmp_path, "review", reviews=4, gate=gate, max_rounds=3), tmp_path,
        reproduced=True, test_script=SCRIPT, test_output=BUGGY_OUTPUT, candidates=candidates, round=1, pool=[earlier],
        rounds=[{"patch": WRONG_ADD, "correct": False}],
    )  # fmt: skip
    state = result.state
    assert calls(server) == [("review", 0.0, False), ("review", 0.8, False), ("review", 0.8, False), ("review", 0.8, False)]
    [(system, user)] = set(prompts(server, "review"))  # four samples of one prompt
    assert system == REVIEW_SYSTEM
    assert user == (
        f"Issue:\n{ISSUE}\n\nReproduction test:\nScript (judged to reproduce the issue):\n{SCRIPT}\n\nIts output:\n{BUGGY_OUTPUT}"
        f"\n\nCandidates:\n[1]\n{WRONG_ADD}\napplied; reproduction test failed. Output:\nadd(2, 3) = 1"
        f"\n\n[2]\n{FIX_ADD}\napplied; reproduction test passed. Output:\nadd(2, 3) = 5"
    )
    # r1c1: 3 of 4 votes, positions (1, 1, 2, 1); r1c2: 2 of 4, positions (2, 2, 1, 2)
    if gate:  # r1c1's script fails: turned down, and nothing else has a majority
        assert scored(state["candidates"]) == [("r1c1", 3, 4, 0.75, False, 1), ("r1c2", 2, 4, 0.25, False, 2)]
        assert result.steps == ["review", "refined"]
    else:
        assert scored(state["candidates"]) == [("r1c1", 3, 4, 0.75, True, 1), ("r1c2", 2, 4, 0.25, False, 2)]
        assert result.steps == ["review", "variants"]
    assert state["pool"] == [earlier, *state["candidates"]]
    assert state["reviews"] == [
        verdict([1, 2], [1, 2], "both fix it"), verdict([1, 2], [1, 2]), verdict([2, 1], [1], "two is neater", "b"),
        verdict([1, 2], [], "neither", "use a plus"),
    ]  # fmt: skip
    assert state["review"] == verdict([1, 2], [] if gate else [1], "both fix it")
    assert state["rounds"] == [{"patch": WRONG_ADD, "correct": False}, {"patch": WRONG_ADD, "correct": not gate}]
    assert state["errors"] == []


async def test_without_a_reproduction_the_round_goes_to_variants_and_the_gate_does_not_apply(
    sqlite_store: GraphStore, server: ScriptedOpenAIServer, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    server.script(
        Rule(system=REVIEW_SYSTEM, json=verdict([1], [1], "looks right"), times=1),
        Rule(system=REVIEW_SYSTEM, json=verdict([1], [], "wrong", "swap")),
    )
    candidates = [entry("r0c1", FIX_ADD)]  # nothing ran: not passed
    path = graph(tmp_path, "review", reviews=1, gate=True)
    result = await run(sqlite_store, server, namespace, tmp_path, request, path, tmp_path, candidates=candidates)
    assert result.steps == ["review", "variants"] and result.state["candidates"][0]["correct"] is True
    [(_, user)] = prompts(server, "review")
    assert "No reproduction script is available." in user and "applied (there is no reproduction test to run)" in user

    result = await run(sqlite_store, server, namespace, tmp_path, request, path, tmp_path, candidates=candidates)
    assert result.steps == ["review", "variants"] and result.state["candidates"][0]["correct"] is False  # not refined


async def test_spent_rounds_go_to_validation_and_an_empty_round_is_not_reviewed(
    sqlite_store: GraphStore, server: ScriptedOpenAIServer, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    server.script(Rule(system=REVIEW_SYSTEM, json=verdict([1], [], "wrong")))
    path = graph(tmp_path, "review", reviews=1, max_rounds=1)
    reproduced = {"reproduced": True, "test_script": SCRIPT, "test_output": BUGGY_OUTPUT}
    spent = await run(
        sqlite_store, server, namespace, tmp_path, request, path, tmp_path, candidates=[entry("r1c1", WRONG_ADD)], round=1,
        **reproduced,
    )  # fmt: skip
    assert spent.steps == ["review", "validate"]

    seen = len(server.requests)
    empty = await run(sqlite_store, server, namespace, tmp_path, request, path, tmp_path, candidates=[], **reproduced)
    assert len(server.requests) == seen  # nothing to review: no call
    synthetic = verdict([], [], "no candidate patch could be read", "write one unified diff against the files as shown")
    assert empty.state["reviews"] == [synthetic] and empty.state["review"] == synthetic
    assert empty.state.get("rounds", []) == [] and empty.state.get("pool", []) == []  # nothing joins them
    assert empty.steps == ["review", "refined"]


# -- refine alone: one patch per review, and the R3 demo only when episodic memory is read ------------------------


@pytest.mark.parametrize(
    ("switches", "retrieved"),
    [({}, True), ({"episodic": False}, False), ({"phase": "seed"}, False), ({"memory": False}, False)],
)
async def test_refine_writes_one_patch_per_review_with_its_advice(
    store: GraphStore, server: ScriptedOpenAIServer, namespace: str, tmp_path: Path, request: pytest.FixtureRequest,
    switches: dict[str, Any], retrieved: bool,
) -> None:  # fmt: skip
    [demo_id] = await record_patch_rounds(
        store, namespace, repo=REPO, issue_id="acme/calc#9", issue_text="multiply() adds instead of multiplying",
        rounds=[PatchRound(patch=WRONG_MULTIPLY, correct=False), PatchRound(patch=FIX_MULTIPLY, correct=True)],
    )  # fmt: skip
    server.script(Rule(system=REFINE_SYSTEM, replies=[{"patch": FIX_ADD}, GARBAGE, GARBAGE, {"patch": WRONG_ADD}]))
    candidates = [
        {**entry("r0c1", STALE_DIFF, applied=False), "rank": 2},
        {**entry("r0c2", WRONG_ADD, output="add(2, 3) = 1"), "rank": 1},  # the top-ranked one is refined
    ]
    reviews = [verdict([2, 1], [], "the operands are swapped", "return a + b"), verdict([], []), verdict([2], [], "no", "plus")]
    result = await run(
        store, server, namespace, tmp_path, request, graph(tmp_path, "refine"), tmp_path, reproduced=True,
        candidates=candidates, reviews=reviews, insights={"coder": ["Check the operator first."]}, **switches,
    )  # fmt: skip
    state = result.state
    assert calls(server) == [("refine", 0.0, False), ("refine", 0.0, False), ("refine", 0.0, True), ("refine", 0.0, False)]
    pair = (
        f"On another issue of this project, this patch was wrong:\n{WRONG_MULTIPLY}\n"
        f"and this refined patch was correct:\n{FIX_MULTIPLY}\n\n"
    )
    expected = [
        f"Issue:\n{ISSUE}\n\nCode:\n{CODE}\n\nRejected patch:\n{WRONG_ADD}\n\nIts test result:\nadd(2, 3) = 1\n\n"
        f"Reviewer's analysis: {analysis}\n\nReviewer's advice: {advice}\n\n{pair if retrieved else ''}Write the refined patch."
        for analysis, advice in [("the operands are swapped", "return a + b"), ("(none)", "(none)"), ("no", "plus")]
    ]
    assert prompts(server, "refine") == [(REFINE_SYSTEM + "\n\nExperiences from other issues of this project:\n1. Check the "
                                          "operator first.", user) for user in expected]  # fmt: skip
    assert [(c["id"], c["round"], c["origin"], c["patch"], c["applied"], c["rank"]) for c in state["candidates"]] == [
        ("r1c1", 1, "refine", FIX_ADD, None, None), ("r1c2", 1, "refine", WRONG_ADD, None, None)
    ]  # fmt: skip
    assert state["round"] == 1
    used = state.get("demos_used", {})  # the demo once per prompt it went into, as the first of its retrieval
    assert [(d["id"], d["rank"]) for d in used.get("patch_refine", [])] == ([(demo_id, 1)] * 3 if retrieved else [])
    [error] = state["errors"]
    assert error.startswith("refine (round 1, review 2): the patch could not be read: Patch: ")


# -- the whole loop on the repository ----------------------------------------------------------------------------


@pytest.mark.subprocess
@pytest.mark.slow
async def test_a_rejected_round_is_refined_per_review_and_the_refinement_accepted(
    store: GraphStore, server: ScriptedOpenAIServer, namespace: str, tmp_path: Path, request: pytest.FixtureRequest,
    calc: Path,
) -> None:  # fmt: skip
    server.script(
        Rule(system=CODER_SYSTEM, replies=[{"patch": WRONG_ADD}, GARBAGE, GARBAGE, {"patch": STALE_DIFF}]),
        Rule(system=REVIEW_SYSTEM, replies=[
            verdict([1, 2], [1], "A1", "swap the operands back"), GARBAGE, GARBAGE, verdict([2, 1], [], "A3", "use a plus"),
            verdict([1, 2], [1], "B1"), verdict([1, 2], [1, 2], "B2"), verdict([2, 1], [], "B3"),
        ]),
        Rule(system=REFINE_SYSTEM, replies=[{"patch": FIX_ADD}, GARBAGE, GARBAGE, {"patch": WRONG_ADD}]),
    )  # fmt: skip
    result = await run(
        store, server, namespace, tmp_path, request, graph(tmp_path, "generate"), calc, reproduced=True,
        test_script=SCRIPT, test_output=BUGGY_OUTPUT,
    )  # fmt: skip
    state = result.state
    assert result.steps == ["generate", "evaluate", "review", "refine", "evaluate", "review", "variants"]
    assert calls(server) == [
        ("generate", 0.0, False), ("generate", 0.8, False), ("generate", 0.8, True), ("generate", 0.8, False),
        ("review", 0.0, False), ("review", 0.8, False), ("review", 0.8, True), ("review", 0.8, False),
        ("refine", 0.0, False), ("refine", 0.0, False), ("refine", 0.0, True), ("refine", 0.0, False),
        ("review", 0.0, False), ("review", 0.8, False), ("review", 0.8, False),
    ]  # fmt: skip
    reproduction = f"Script (judged to reproduce the issue):\n{SCRIPT}\n\nIts output:\n{BUGGY_OUTPUT}"
    assert set(prompts(server, "generate")) == {
        (CODER_SYSTEM, f"Issue:\n{ISSUE}\n\nReproduction:\n{reproduction}\n\nCode:\n{CODE}\n\nWrite the patch.")
    }

    pool = state["pool"]
    assert [(c["id"], c["round"], c["origin"], c["applied"], c["passed"]) for c in pool] == [
        ("r0c1", 0, "generate", True, False), ("r0c2", 0, "generate", False, False),
        ("r1c1", 1, "refine", True, True), ("r1c2", 1, "refine", True, False),
    ]  # fmt: skip
    assert [c["patch"] for c in pool] == [WRONG_ADD, STALE_DIFF, FIX_ADD, WRONG_ADD]
    assert "+    return b - a" in pool[0]["diff"] and "+    return a + b" in pool[2]["diff"] and pool[1]["diff"] == ""
    assert "add(2, 3) = 1" in pool[0]["output"] and "AssertionError" in pool[0]["output"]
    assert pool[1]["output"] == "" and pool[1]["error"] and pool[2]["output"] == "add(2, 3) = 5"
    # round 0: r0c1 1 vote of 3, positions (1, 2); round 1: r1c1 2 of 3 (a majority), positions (1, 1, 2)
    assert scored(pool) == [
        ("r0c1", 1, 3, 0.5, False, 1), ("r0c2", 0, 3, 0.5, False, 2),
        ("r1c1", 2, 3, 0.6667, True, 1), ("r1c2", 1, 3, 0.3333, False, 2),
    ]  # fmt: skip
    assert all(c["diff_outputs"] == [] for c in pool)
    assert state["candidates"] == pool[2:]
    assert state["rounds"] == [{"patch": pool[0]["diff"], "correct": False}, {"patch": pool[2]["diff"], "correct": True}]
    assert state["review"] == verdict([1, 2], [1], "B1") and state["round"] == 1

    # one refinement per round-0 review, each with that review's analysis and advice (the unreadable one has none)
    refine_users = [user for _, user in prompts(server, "refine")]
    assert [u.split("Reviewer's analysis: ")[1].split("\n\nWrite")[0] for u in refine_users] == [
        "A1\n\nReviewer's advice: swap the operands back", "(none)\n\nReviewer's advice: (none)",
        "A3\n\nReviewer's advice: use a plus",
    ]  # fmt: skip
    assert all(f"Rejected patch:\n{pool[0]['diff']}\n\nIts test result:\n{pool[0]['output']}" in u for u in refine_users)
    assert not state.get("demos_used")  # an empty memory: nothing retrieved
    assert len(state["errors"]) == 4
    assert state["errors"][1] == f"evaluate (round 0, candidate 2): the patch was not applied: {pool[1]['error']}"
    assert state["errors"][0].startswith("generate (candidate 2, temperature 0.8): the patch could not be read: Patch: ")
    assert state["errors"][2].startswith("review (round 0, review 2): the review could not be read; it accepts no candidate")
    assert state["errors"][3].startswith("refine (round 1, review 2): the patch could not be read: Patch: ")


@pytest.mark.subprocess
@pytest.mark.slow
async def test_without_a_reproduction_candidates_are_applied_but_no_script_runs(
    sqlite_store: GraphStore, server: ScriptedOpenAIServer, namespace: str, tmp_path: Path, request: pytest.FixtureRequest,
    calc: Path,
) -> None:  # fmt: skip
    server.script(
        Rule(system=CODER_SYSTEM, json={"patch": FIX_ADD}),
        Rule(system=REVIEW_SYSTEM, json=verdict([1], [], "cannot tell", "add a test")),
    )
    last_attempt = {"test_script": SCRIPT, "test_output": BUGGY_OUTPUT, "reproduced": False}  # judged not to reproduce
    path = graph(tmp_path, "generate", temperatures="[0.0]", reviews=1)
    result = await run(sqlite_store, server, namespace, tmp_path, request, path, calc, **last_attempt)
    [candidate] = result.state["pool"]
    assert candidate["applied"] is True and candidate["output"] == "" and candidate["passed"] is False
    assert candidate["correct"] is False and result.steps == ["generate", "evaluate", "review", "variants"]
    [(_, user)] = prompts(server, "review")
    assert "applied (there is no reproduction test to run)" in user
