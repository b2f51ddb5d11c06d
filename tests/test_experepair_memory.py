"""ExpeRepair memory on both stores: demos derived from attempts and rounds, field-weighted BM25 retrieval per
phase (repo scope, same-issue exclusion, issue dedup), output trimming, the insight lists' edits, the memory
switches and phases (what each run reads and writes, through a small graph of the memory nodes) and the
``USED_DEMO`` / ``USED_INSIGHT`` links."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mnemoflow.graphs import load_graph, run_graph
from mnemoflow.graphs.runner import RunResult
from mnemoflow.memory.paging import all_nodes
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import RelationshipRecord
from mnemoflow.nodes.experepair import agents
from mnemoflow.nodes.experepair.episodes import (
    PatchRound,
    TestAttempt,
    derive_patch_demos,
    derive_test_demos,
    record_issue,
    record_patch_rounds,
    record_test_attempts,
    record_usage,
)
from mnemoflow.nodes.experepair.insights import InsightEdit, apply_insight_edits, load_insight_records, load_insights
from mnemoflow.nodes.experepair.model import (
    INSIGHT,
    ISSUE,
    MAX_INSIGHTS,
    PATCH_DEMO,
    TEST_DEMO,
    USED_DEMO,
    USED_INSIGHT,
    issue_node_id,
    patch_demo_id,
)
from mnemoflow.nodes.experepair.retrieval import (
    PHASE_WEIGHTS,
    ScoredDemo,
    retrieve_demos,
    score_demos,
    tokenize,
    trim_output,
    with_demo,
)
from tests.conftest import EMBEDDER, settings_of
from tests.support.openai_server import Rule, ScriptedOpenAIServer

REPO = "django/django"
ISSUE_TEXT = "QuerySet filter crashes with TypeError when given an empty list argument"


def attempt(script: str, output: str, reproduces: bool) -> TestAttempt:
    return TestAttempt(script=script, output=output, returncode=0 if reproduces else 1, reproduces=reproduces)


NO_NO_YES = [
    attempt("print(broken_one)", "NameError: name 'broken_one' is not defined", False),
    attempt("import django\nprint(broken_two)", "ImportError: settings are not configured", False),
    attempt("from django.db import models\nprint('Issue reproduced')", "Issue reproduced", True),
]


async def add_test_demo(
    store: GraphStore, namespace: str, issue_id: str, issue_text: str, *, new_test: str, repo: str = REPO
) -> list[str]:
    """One initial demo: a single successful attempt."""
    attempts = [attempt(new_test, "Issue reproduced", True)]
    return await record_test_attempts(store, namespace, repo=repo, issue_id=issue_id, issue_text=issue_text, attempts=attempts)


async def add_repair_demo(
    store: GraphStore, namespace: str, issue_id: str, issue_text: str, *, old_test: str, old_output: str, repo: str = REPO
) -> list[str]:
    """One initial and one repair demo: a failing attempt, then a working one."""
    attempts = [attempt(old_test, old_output, False), attempt(f"# fixed\n{old_test}", "Issue reproduced", True)]
    return await record_test_attempts(store, namespace, repo=repo, issue_id=issue_id, issue_text=issue_text, attempts=attempts)


async def add_patch_demo(
    store: GraphStore, namespace: str, issue_id: str, issue_text: str, *, old_patch: str, repo: str = REPO
) -> list[str]:
    rounds = [PatchRound(patch=old_patch, correct=False), PatchRound(patch=f"correct fix for {issue_id}", correct=True)]
    return await record_patch_rounds(store, namespace, repo=repo, issue_id=issue_id, issue_text=issue_text, rounds=rounds)


FILLERS = [
    ("f1", "Migration squash loses the index on a renamed field", "print(migration_state)"),
    ("f2", "Admin changelist pagination skips the final page", "print(paginator_pages)"),
    ("f3", "Template engine escapes already safe strings twice", "print(rendered_template)"),
]


# -- derivation ---------------------------------------------------------------------------------------------


def test_demos_from_no_no_yes() -> None:
    demos = derive_test_demos(NO_NO_YES)
    assert [demo["kind"] for demo in demos] == ["initial", "repair", "repair"]
    assert demos[0]["old_test"] == "" and demos[0]["old_exec_result"] == ""
    assert [demo["old_test"] for demo in demos[1:]] == [NO_NO_YES[0].script, NO_NO_YES[1].script]
    assert demos[1]["old_exec_result"] == NO_NO_YES[0].output
    assert all(demo["new_test"] == NO_NO_YES[2].script for demo in demos)


def test_no_demo_without_a_yes() -> None:
    assert derive_test_demos(NO_NO_YES[:2]) == []
    assert derive_test_demos([]) == []


def test_an_attempt_after_a_yes_starts_no_demo() -> None:
    attempts = [NO_NO_YES[2], NO_NO_YES[0], NO_NO_YES[2]]  # YES, NO, YES
    demos = derive_test_demos(attempts)
    assert [(demo["kind"], demo["old_test"]) for demo in demos] == [("initial", ""), ("repair", NO_NO_YES[0].script)]


def test_patch_pairing_pairs_rejected_with_the_next_correct_round() -> None:
    rounds = [PatchRound(patch="p0", correct=False), PatchRound(patch="p1", correct=False), PatchRound(patch="p2", correct=True)]
    # the reference's i/j bug would pair nothing here (no round is both rejected and correct)
    assert derive_patch_demos(rounds) == [("p0", "p2"), ("p1", "p2")]
    rounds = [PatchRound(patch="p0", correct=False), PatchRound(patch="p1", correct=True), PatchRound(patch="p2", correct=False)]
    assert derive_patch_demos(rounds) == [("p0", "p1")]
    assert derive_patch_demos([PatchRound(patch="p0", correct=False)]) == []


# -- recording ----------------------------------------------------------------------------------------------


async def test_recording_writes_demos_linked_to_the_issue_and_is_idempotent(store: GraphStore, namespace: str) -> None:
    ids = await record_test_attempts(store, namespace, repo=REPO, issue_id="d-1", issue_text=ISSUE_TEXT, attempts=NO_NO_YES)
    rounds = [PatchRound(patch="p0", correct=False), PatchRound(patch="p1", correct=True)]
    patch_ids = await record_patch_rounds(store, namespace, repo=REPO, issue_id="d-1", issue_text=ISSUE_TEXT, rounds=rounds)
    issue = await record_issue(
        store,
        namespace,
        repo=REPO,
        issue_id="d-1",
        issue_text=ISSUE_TEXT,
        status="resolved",
        final_patch="p1",
        evidence={"rounds": 2},
    )
    assert len(ids) == 3 and len(patch_ids) == 1 and issue == issue_node_id(namespace, REPO, "d-1")
    counts = [await store.count_nodes(namespace, kind) for kind in (TEST_DEMO, PATCH_DEMO, ISSUE)]
    links = await store.count_relationships(namespace, "OF_ISSUE")
    assert counts == [3, 1, 1] and links == 4

    # again, in another order: recording demos never downgrades the recorded outcome
    assert (
        await record_patch_rounds(store, namespace, repo=REPO, issue_id="d-1", issue_text=ISSUE_TEXT, rounds=rounds) == patch_ids
    )
    again = await record_test_attempts(store, namespace, repo=REPO, issue_id="d-1", issue_text=ISSUE_TEXT, attempts=NO_NO_YES)
    assert again == ids
    assert [await store.count_nodes(namespace, kind) for kind in (TEST_DEMO, PATCH_DEMO, ISSUE)] == counts
    assert await store.count_relationships(namespace, "OF_ISSUE") == links
    (node,) = await store.get_nodes(namespace, [issue])
    assert node is not None and node.properties["status"] == "resolved" and node.properties["evidence"] == {"rounds": 2}
    assert node.text == ISSUE_TEXT
    assert await record_test_attempts(store, namespace, repo=REPO, issue_id="d-2", issue_text="x", attempts=NO_NO_YES[:2]) == []


# -- retrieval ----------------------------------------------------------------------------------------------


def test_the_same_records_rank_differently_per_phase() -> None:
    """X matches the issue, Y matches the failing output: issue-led phases prefer X, the retry phase Y."""
    output = "AttributeError: 'NoneType' object has no attribute 'pk'"
    records = [
        {
            "issue_description": ISSUE_TEXT,
            "new_test": "print(1)",
            "old_exec_result": "SyntaxError: bad token",
            "old_test": "x = 1",
        },
        {
            "issue_description": "Admin widget renders the label colour wrong",
            "new_test": "print(2)",
            "old_exec_result": output,
            "old_test": "y = 2",
        },
        *[
            {"issue_description": text, "new_test": test, "old_exec_result": "Issue reproduced", "old_test": test}
            for _, text, test in FILLERS
        ],
    ]
    queries = {"issue_description": ISSUE_TEXT, "new_test": ISSUE_TEXT, "old_exec_result": output, "old_test": "z = 3"}
    initial = score_demos(records, PHASE_WEIGHTS["test_initial"], queries)
    retry = score_demos(records, PHASE_WEIGHTS["test_retry"], queries)
    assert initial.index(max(initial)) == 0 and retry.index(max(retry)) == 1
    assert initial[0] == pytest.approx(0.6, abs=1e-6)  # best issue, no new_test overlap: exactly the issue weight
    assert retry[1] == pytest.approx(0.9, abs=1e-6)  # best output, no old_test overlap: exactly the output weight


async def test_initial_phase_weighs_the_issue_over_the_test_script(store: GraphStore, namespace: str) -> None:
    await add_test_demo(store, namespace, "a", "QuerySet filter crashes with TypeError on an empty list", new_test="print(ok)")
    await add_test_demo(
        store,
        namespace,
        "b",
        "Admin widget renders the label colour wrong",
        new_test="# queryset filter crashes typeerror empty list argument\nprint(ok)",
    )
    for issue_id, text, test in FILLERS:
        await add_test_demo(store, namespace, issue_id, text, new_test=test)
    hits = await retrieve_demos(
        store,
        namespace,
        phase="test_initial",
        repo=REPO,
        exclude_issue="current",
        queries={"issue_description": ISSUE_TEXT, "new_test": ISSUE_TEXT},
    )
    assert [hit.issue_id for hit in hits[:2]] == ["a", "b"]
    assert hits[0].score == pytest.approx(0.6, abs=1e-6) and hits[1].score == pytest.approx(0.4, abs=1e-6)
    assert hits[0].demo_kind == TEST_DEMO and hits[0].kind == "initial" and hits[0].new_test == "print(ok)"
    # with the weights swapped the script match would win: the order above is the weights' doing
    demos = [{"issue_description": hit.issue_description, "new_test": hit.new_test} for hit in hits]
    swapped = score_demos(
        demos, {"issue_description": 0.4, "new_test": 0.6}, {"issue_description": ISSUE_TEXT, "new_test": ISSUE_TEXT}
    )
    assert swapped[1] > swapped[0]


async def test_retry_phase_weighs_the_output_over_the_script(store: GraphStore, namespace: str) -> None:
    output = "AttributeError: 'NoneType' object has no attribute 'pk'"
    script = "from app.models import Author\nAuthor.objects.filter(pk__in=[])"
    await add_repair_demo(
        store,
        namespace,
        "a",
        "Deleting an unsaved instance loses its key",
        old_test="obj.delete()",
        old_output=f'Traceback (most recent call last):\n  File "x.py", line 1\n{output}',
    )
    await add_repair_demo(
        store, namespace, "b", "Filtering by pk on authors is slow", old_test=script, old_output="ValueError: too many values"
    )
    for issue_id, text, test in FILLERS:
        await add_repair_demo(store, namespace, issue_id, text, old_test=test, old_output=f"NameError: {issue_id}")
    current = f'Traceback (most recent call last):\n  File "repro.py", line 2, in <module>\n    run()\n{output}'
    hits = await retrieve_demos(
        store,
        namespace,
        phase="test_retry",
        repo=REPO,
        exclude_issue="current",
        queries={"old_exec_result": trim_output(current), "old_test": script},
    )
    assert [hit.issue_id for hit in hits[:2]] == ["a", "b"] and all(hit.kind == "repair" for hit in hits)
    assert hits[0].score > 0.85 and hits[1].score == pytest.approx(0.1, abs=0.05)


async def test_patch_phase_weighs_the_issue_over_the_patch(store: GraphStore, namespace: str) -> None:
    failing = "--- a/django/db/models/query.py\n+++ b/django/db/models/query.py\n-    return self._filter_or_exclude(False, args)"
    await add_patch_demo(
        store, namespace, "a", "QuerySet filter crashes with TypeError on an empty list", old_patch="tweak colour palette"
    )
    await add_patch_demo(store, namespace, "b", "Admin widget renders the label colour wrong", old_patch=failing)
    for issue_id, text, test in FILLERS:
        await add_patch_demo(store, namespace, issue_id, text, old_patch=f"change {test}")
    hits = await retrieve_demos(
        store,
        namespace,
        phase="patch_refine",
        repo=REPO,
        exclude_issue="current",
        queries={"issue_description": ISSUE_TEXT, "old_patch": failing},
    )
    assert [hit.issue_id for hit in hits[:2]] == ["a", "b"]
    assert hits[0].score == pytest.approx(0.7, abs=1e-6) and hits[1].score == pytest.approx(0.3, abs=1e-6)
    assert hits[0].demo_kind == PATCH_DEMO and hits[0].new_patch == "correct fix for a" and hits[0].new_result


async def test_scope_exclusion_and_dedup(store: GraphStore, namespace: str) -> None:
    queries = {"issue_description": ISSUE_TEXT, "new_test": ISSUE_TEXT}
    assert await retrieve_demos(store, namespace, phase="test_initial", repo=REPO, exclude_issue="x", queries=queries) == []
    # another repo's identical demo, the current issue itself and a copy of its text under another id: never returned
    await add_test_demo(store, namespace, "other", ISSUE_TEXT + " too", new_test="print(1)", repo="sympy/sympy")
    await add_test_demo(store, namespace, "current", ISSUE_TEXT, new_test="print(2)")
    await add_test_demo(store, namespace, "copy", ISSUE_TEXT, new_test="print(3)")
    assert await retrieve_demos(store, namespace, phase="test_initial", repo=REPO, exclude_issue="current", queries=queries) == []
    # two repair demos of one issue (NO, NO, YES) and one of another: one hit per issue
    await record_test_attempts(
        store, namespace, repo=REPO, issue_id="twice", issue_text="Filter crashes on lists", attempts=NO_NO_YES
    )
    await add_repair_demo(store, namespace, "once", "Filter crashes on tuples", old_test="print(t)", old_output="NameError: t")
    for issue_id, text, test in FILLERS:
        await add_repair_demo(store, namespace, issue_id, text, old_test=test, old_output="ok")
    hits = await retrieve_demos(
        store,
        namespace,
        phase="test_retry",
        repo=REPO,
        exclude_issue="current",
        queries={"old_exec_result": "NameError: name 'broken_one' is not defined", "old_test": ""},
    )
    issues = [hit.issue_id for hit in hits]
    assert len(hits) == 3 and issues[0] == "twice" and len(set(issues)) == 3
    assert [hit.rank for hit in hits] == [1, 2, 3]  # places after the dedup: what USED_DEMO's rank records
    assert "other" not in issues and all(hit.repo == REPO for hit in hits)
    one = await retrieve_demos(
        store,
        namespace,
        phase="test_retry",
        repo=REPO,
        exclude_issue="current",
        k=1,
        queries={"old_exec_result": "NameError", "old_test": ""},
    )
    assert len(one) == 1


def test_tokenize() -> None:
    assert tokenize("Foo.bar(x_1)-BAZ\n") == ["foo", "bar", "x_1", "baz"]


@pytest.mark.parametrize(
    ("raw", "trimmed"),
    [
        ("plain output\n", "plain output"),
        ("ok\nSummary: 3 cases, 1 failed\n  case a\n  case b\n\nafter", "ok\nafter"),
        ("head\nSummary: 12 cases passed", "head"),
        (
            'Traceback (most recent call last):\n  File "a.py", line 1, in <module>\n    f()\n'
            '  File "b.py", line 3, in f\n    raise ValueError("bad")\nValueError: bad',
            'raise ValueError("bad")\nValueError: bad',
        ),
        ('File "notes.txt" mentioned without a traceback', 'File "notes.txt" mentioned without a traceback'),
        (
            'Summary: 2 cases\n- one\n\nTraceback (most recent call last):\n  File "x.py", line 9, in g\n    g()\nKeyError: 1',
            "g()\nKeyError: 1",
        ),
    ],
)
def test_trim_output(raw: str, trimmed: str) -> None:
    assert trim_output(raw) == trimmed


# -- insights -----------------------------------------------------------------------------------------------


def add(*texts: str) -> list[InsightEdit]:
    return [InsightEdit(operation="ADD", text=text) for text in texts]


async def test_insight_edits_apply_in_order_and_keep_history(store: GraphStore, namespace: str) -> None:
    await apply_insight_edits(store, namespace, "tester", add("a", "b", "c"))
    await apply_insight_edits(store, namespace, "coder", add("coder rule"))
    assert await load_insights(store, namespace, "tester") == ["a", "b", "c"]

    before = {node.id: node for node in await all_nodes(store, namespace, INSIGHT)}
    report = await apply_insight_edits(store, namespace, "tester", [InsightEdit(operation="REMOVE", number=7)])
    assert [item["number"] for item in report["ignored"]] == [7] and report["applied"] == []
    after = {node.id: node for node in await all_nodes(store, namespace, INSIGHT)}
    assert after == before  # nothing touched, not even updated_at

    edits = [
        InsightEdit(operation="REMOVE", number=1),
        InsightEdit(operation="EDIT", number=2, text="b2"),
        InsightEdit(operation="REMOVE", number=9),
        InsightEdit(operation="EDIT", number=1, text="a again"),  # 1 is gone already
        InsightEdit(operation="ADD", text="d"),
        InsightEdit(operation="EDIT", number=3, text=""),
    ]
    report = await apply_insight_edits(store, namespace, "tester", edits)
    assert report["insights"] == ["b2", "c", "d"] == await load_insights(store, namespace, "tester")
    assert [item["index"] for item in report["ignored"]] == [2, 3, 5]
    assert await load_insights(store, namespace, "coder") == ["coder rule"]

    # history: b2 supersedes b, and a and b stay as removed records
    nodes = {node.properties["text"]: node for node in await all_nodes(store, namespace, INSIGHT)}
    assert nodes["a"].properties["status"] == nodes["b"].properties["status"] == "removed"
    page = await store.neighbours(namespace, nodes["b2"].id)
    supersedes = [rel for rel in page.relationships if rel.type == "SUPERSEDES"]
    assert [(rel.source_id, rel.target_id) for rel in supersedes] == [(nodes["b2"].id, nodes["b"].id)]

    with pytest.raises(ValueError, match="role"):
        await load_insights(store, namespace, "reviewer")


async def test_insights_are_capped(store: GraphStore, namespace: str) -> None:
    texts = [f"insight {n}" for n in range(20)]
    report = await apply_insight_edits(store, namespace, "coder", add(*texts))
    assert report["truncated"] == texts[MAX_INSIGHTS:]
    assert await load_insights(store, namespace, "coder") == texts[:MAX_INSIGHTS]
    report = await apply_insight_edits(store, namespace, "coder", [InsightEdit(operation="REMOVE", number=1), *add("new")])
    assert await load_insights(store, namespace, "coder") == [*texts[1:MAX_INSIGHTS], "new"]
    report = await apply_insight_edits(store, namespace, "coder", add("one too many"))
    assert report["truncated"] == ["one too many"]
    assert await store.count_nodes(namespace, INSIGHT) == 22  # 20 + "new" + "one too many", all kept as history


async def test_concurrent_batches_lose_nothing(store: GraphStore, namespace: str) -> None:
    batches = [add(*(f"batch {b} rule {r}" for r in range(2))) for b in range(6)]
    await asyncio.gather(*(apply_insight_edits(store, namespace, "tester", batch) for batch in batches))
    loaded = await load_insights(store, namespace, "tester")
    assert sorted(loaded) == sorted(f"batch {b} rule {r}" for b in range(6) for r in range(2))
    ords = [node.properties["ord"] for node in await all_nodes(store, namespace, INSIGHT)]
    assert sorted(ords) == list(range(12))


# -- switches and phases: what a run reads and writes ---------------------------------------------------------

CALC = "acme/calc"
CURRENT = "add(2, 3) returns -1 instead of 5 when adding two positive integers"
CURRENT_ID = "acme/calc#3"
SIBLING = ("acme/calc#1", "add(1, 1) returns 0 instead of 2 when adding positive integers", "from calc.ops import add\nassert add(1, 1) == 2\n")
UNRELATED = ("acme/calc#2", "The README title has a typo", "print(open('README.md').read())\n")
SCRIPT = "from calc.ops import add\nprint(add(2, 3))\nassert add(2, 3) == 5\n"
TESTER_INSIGHTS, CODER_INSIGHTS = ["Print every input.", "Assert the exact value."], ["Check the operator first."]
LEARNED = "Import the function under test from its module."
ROUNDS = [{"patch": "wrong patch", "correct": False}, {"patch": "right patch", "correct": True}]
TESTER, JUDGE = "You are the Test Agent", "You judge whether"
INSIGHTS_TESTER, INSIGHTS_CODER = "insights for the tester agent", "insights for the coder agent"

MEMORY_GRAPH = """name: experepair-memory
state: experepair.RepairState
input: [repo, repo_path, issue_id, issue]
nodes:
  load_insights: {use: experepair.load_insights}
  write_test: {use: experepair.write_test}
  judge_test: {use: experepair.judge_test}
  record: {use: experepair.record}
  update_insights: {use: experepair.update_insights}
edges:
  - {from: START, to: load_insights}
  - {from: load_insights, to: write_test}
  - {from: write_test, to: judge_test}
  - {from: judge_test, to: record}
  - {from: record, to: update_insights}
  - {from: update_insights, to: END}
"""
"""The memory-facing nodes of the repair graph around one reproduction attempt (the script is judged, not run):
the insights loaded, the R1 demo retrieved, the outcome and demos recorded, the insights edited."""

RECORD_GRAPH = """name: experepair-record
state: experepair.RepairState
input: [repo, repo_path, issue_id, issue]
nodes:
  record: {use: experepair.record}
edges:
  - {from: START, to: record}
  - {from: record, to: END}
"""


@pytest.fixture
def server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer() as running:
        running.script(
            Rule(system=TESTER, json={"script": SCRIPT}),
            Rule(system=JUDGE, json={"analysis": "the assertion fails as reported", "reproduces": True}),
            Rule(system=INSIGHTS_TESTER, json={"edits": [{"operation": "ADD", "number": 0, "text": LEARNED}]}),
            Rule(system=INSIGHTS_CODER, json={"edits": []}),
        )
        yield running


async def run_memory_graph(
    store: GraphStore, namespace: str, server: ScriptedOpenAIServer, tmp_path: Path, request: pytest.FixtureRequest,
    graph: str = MEMORY_GRAPH, **values: Any,
) -> RunResult:  # fmt: skip
    path = tmp_path / "graph.yaml"
    path.write_text(graph, encoding="utf-8")
    values = {"repo": CALC, "repo_path": str(tmp_path), "issue_id": CURRENT_ID, "issue": CURRENT, **values}
    return await run_graph(
        load_graph(path), values, store=store, embedder=EMBEDDER, llm=server.gateway(),
        settings=settings_of(store, tmp_path, request), checkpointer=None, namespace=namespace,
    )  # fmt: skip


async def seed_memory(store: GraphStore, namespace: str) -> None:
    """Earlier issues of the repository with a working script each, and both roles' insights."""
    for issue_id, text, script in (SIBLING, UNRELATED, *FILLERS):
        await add_test_demo(store, namespace, issue_id, text, new_test=script, repo=CALC)
    await apply_insight_edits(store, namespace, "tester", add(*TESTER_INSIGHTS))
    await apply_insight_edits(store, namespace, "coder", add(*CODER_INSIGHTS))


def prompts(server: ScriptedOpenAIServer, system: str) -> list[list[dict[str, Any]]]:
    return [r["body"]["messages"] for r in server.requests if system in r["body"]["messages"][0]["content"]]


async def links_of(store: GraphStore, namespace: str, issue: str, type: str) -> list[RelationshipRecord]:
    page = await store.neighbours(namespace, issue_node_id(namespace, CALC, issue))
    return [rel for rel in page.relationships if rel.type == type]


SWITCHES = [
    # (values, reads demos, shows insights, writes demos, edits insights)
    pytest.param({}, True, True, True, True, id="inference"),
    pytest.param({"episodic": False}, False, True, False, True, id="no_episodic"),
    pytest.param({"semantic": False}, True, False, True, False, id="no_semantic"),
    pytest.param({"phase": "seed"}, False, False, True, True, id="seed"),
    pytest.param({"phase": "seed", "semantic": False}, False, False, True, False, id="seed_no_semantic"),
    pytest.param({"memory": False, "episodic": True, "semantic": True}, False, False, False, False, id="no_memory"),
]


@pytest.mark.parametrize(("switches", "reads_demos", "shows_insights", "writes_demos", "edits_insights"), SWITCHES)
async def test_each_switch_and_phase_reads_and_writes_only_its_memories(
    store: GraphStore, namespace: str, server: ScriptedOpenAIServer, tmp_path: Path, request: pytest.FixtureRequest,
    switches: dict[str, Any], reads_demos: bool, shows_insights: bool, writes_demos: bool, edits_insights: bool,
) -> None:  # fmt: skip
    await seed_memory(store, namespace)
    [sibling, *_] = await retrieve_demos(
        store, namespace, phase="test_initial", repo=CALC, exclude_issue=CURRENT_ID,
        queries={"issue_description": CURRENT, "new_test": CURRENT},
    )  # fmt: skip
    assert sibling.issue_id == SIBLING[0] and 0.6 < sibling.score <= 1.0  # a lone hit would score 0
    shown = {role: await load_insight_records(store, namespace, role) for role in ("tester", "coder")}

    result = await run_memory_graph(store, namespace, server, tmp_path, request, rounds=ROUNDS, status="resolved", **switches)
    state = result.state

    # reads: the Test Agent's exact prompt, and what the state says was used
    [tester] = prompts(server, TESTER)
    expected = agents.tester_messages(TESTER_INSIGHTS if shows_insights else [], CURRENT, example=SIBLING[2] if reads_demos else "")
    assert tester == expected
    assert (SIBLING[2] in tester[1]["content"]) is reads_demos and ("Not available" in tester[1]["content"]) is not reads_demos
    assert ("1. Print every input.\n2. Assert the exact value." in tester[0]["content"]) is shows_insights
    used = {"test_initial": [{"id": sibling.id, "rank": 1, "score": round(sibling.score, 6)}]}
    assert state["demos_used"] == (used if reads_demos else {})
    ids = {role: [node.id for node in nodes] for role, nodes in shown.items()}
    assert state["insight_ids"] == (ids if shows_insights else {"tester": [], "coder": []})

    # writes: the outcome always; the demos and the insight edits by their switches
    [issue] = await store.get_nodes(namespace, [issue_node_id(namespace, CALC, CURRENT_ID)])
    assert issue is not None and issue.properties["status"] == "resolved"
    mine = [node for node in await all_nodes(store, namespace, TEST_DEMO) if node.properties["issue_id"] == CURRENT_ID]
    assert [(node.properties["kind"], node.properties["new_test"]) for node in mine] == ([("initial", SCRIPT)] if writes_demos else [])
    patch_demos = await all_nodes(store, namespace, PATCH_DEMO)
    assert [node.id for node in patch_demos] == (
        [patch_demo_id(namespace, CALC, CURRENT_ID, "wrong patch", "right patch")] if writes_demos else []
    )
    edits = prompts(server, INSIGHTS_TESTER)
    assert len(edits) == len(prompts(server, INSIGHTS_CODER)) == int(edits_insights)
    if edits_insights:  # the seed phase edits the list it did not show
        assert "Current insights:\n1. Print every input.\n2. Assert the exact value.\n\n" in edits[0][1]["content"]
    assert await load_insights(store, namespace, "tester") == TESTER_INSIGHTS + ([LEARNED] if edits_insights else [])
    assert await load_insights(store, namespace, "coder") == CODER_INSIGHTS
    assert len(server.requests) == 2 + 2 * edits_insights  # the script, its verdict, then one edit call per role

    # what the prompts used, linked from the issue
    [demo_link] = await links_of(store, namespace, CURRENT_ID, USED_DEMO) or [None]
    if reads_demos:
        assert demo_link is not None and demo_link.target_id == sibling.id and demo_link.key == "test_initial"
        assert demo_link.properties == {"stage": "test_initial", "rank": 1, "score": round(sibling.score, 6), "uses": 1}
    else:
        assert demo_link is None
    insight_links = {rel.target_id: rel.properties for rel in await links_of(store, namespace, CURRENT_ID, USED_INSIGHT)}
    positions = {
        node.id: {"role": role, "position": position}
        for role, nodes in shown.items()
        for position, node in enumerate(nodes, start=1)
    }
    assert insight_links == (positions if shows_insights else {})


async def test_the_usage_links_count_uses_skip_deleted_memories_and_are_written_once(
    store: GraphStore, namespace: str, server: ScriptedOpenAIServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    await seed_memory(store, namespace)
    _, repair_demo = await add_repair_demo(  # the initial demo, then the repair one
        store, namespace, "acme/calc#4", "add crashes", old_test="x", old_output="NameError", repo=CALC
    )
    [patch_demo] = await add_patch_demo(store, namespace, "acme/calc#5", "add overflows", old_patch="bad", repo=CALC)
    tester = await load_insight_records(store, namespace, "tester")
    demos_used = {
        "test_retry": [
            {"id": repair_demo, "rank": 1, "score": 0.9},
            {"id": repair_demo, "rank": 2, "score": 0.4},  # the same pair retrieved again on the next retry
        ],
        "patch_refine": [{"id": patch_demo, "rank": 1, "score": 0.7}, {"id": "deleted-demo", "rank": 1, "score": 0.5}],
    }
    insight_ids = {"tester": [tester[1].id, "deleted-insight"], "coder": []}
    values = {"status": "unresolved", "demos_used": demos_used, "insight_ids": insight_ids}

    async def recorded() -> list[tuple[str, str, str, dict[str, Any]]]:
        links = [link for kind in (USED_DEMO, USED_INSIGHT) for link in await links_of(store, namespace, CURRENT_ID, kind)]
        return sorted((link.id, link.type, link.target_id, link.properties) for link in links)

    def link(type: str, target: str, key: str = "", **properties: Any) -> tuple[str, str, str, dict[str, Any]]:
        source = issue_node_id(namespace, CALC, CURRENT_ID)
        record = RelationshipRecord(namespace=namespace, type=type, source_id=source, target_id=target, key=key)
        return (record.id, type, target, properties)

    await run_memory_graph(store, namespace, server, tmp_path, request, graph=RECORD_GRAPH, **values)
    first = await recorded()
    assert first == sorted(
        [
            link(USED_DEMO, repair_demo, "test_retry", stage="test_retry", rank=1, score=0.9, uses=2),
            link(USED_DEMO, patch_demo, "patch_refine", stage="patch_refine", rank=1, score=0.7, uses=1),
            link(USED_INSIGHT, tester[1].id, role="tester", position=1),
        ]
    )
    assert server.requests == []  # recording asks no model

    # a retried record writes the same links, and nothing else
    await run_memory_graph(store, namespace, server, tmp_path, request, graph=RECORD_GRAPH, **values)
    assert await recorded() == first
    assert await store.count_relationships(namespace, USED_DEMO) == 2
    assert await store.count_relationships(namespace, USED_INSIGHT) == 1
    assert await record_usage(store, namespace, repo=CALC, issue_id=CURRENT_ID, demos_used={}, insight_ids={}) == 0


def test_with_demo_adds_one_entry_per_retrieval() -> None:
    demo = ScoredDemo(id="d1", score=0.12345678, rank=2, demo_kind="TestDemo", repo=CALC, issue_id="i", issue_description="x")
    once = with_demo({}, "test_retry", demo)
    assert once == {"test_retry": [{"id": "d1", "rank": 2, "score": 0.123457}]}
    assert with_demo(once, "test_retry", demo)["test_retry"] == once["test_retry"] * 2
    assert with_demo(once, "patch_refine", None) is once  # nothing retrieved: unchanged
