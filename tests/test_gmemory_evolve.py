"""G-Memory's evolution (record, credit, revise, merge) on both stores against the scripted model.

The graph under test is the task graph without retrieval (a temporary file): the team (in its environment) -> record ->
credit -> revise -> merge. The insights a task "retrieved" are handed in as input.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from mnemoflow.graphs import load_graph, run_graph
from mnemoflow.graphs.loader import LIBRARY
from mnemoflow.graphs.runner import RunResult
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import NodeRecord
from mnemoflow.nodes.gmemory.insights import credit_record, insight_scores
from mnemoflow.nodes.gmemory.links import linked
from mnemoflow.nodes.gmemory.model import CREDIT, INSIGHT, QUERY, UTTERANCE, insight_id, milestone_id, query_id
from tests.conftest import EMBEDDER, offline_llm, settings_of
from tests.support.openai_server import Rule, ScriptedOpenAIServer

SOLVER = "You are the solver"
CRITIC = "You are the critic"
KEY_STEPS = "You summarize how a team"
MISTAKE = "A team of agents failed"
REVISION = "You improve a list of rules"
MERGE = "You consolidate rules"

GRAPH = """
name: gmemory-evolve-test
version: 1
description: The G-Memory task graph without retrieval.
state: gmemory.TaskState
input: [task]
nodes:
  team: {graph: team}
  record: {use: gmemory.record}
  credit: {use: gmemory.credit}
  revise: {use: gmemory.revise}
  merge: {use: gmemory.merge}
edges:
  - {from: START, to: team}
  - {from: team, to: record}
  - {from: record, to: credit}
  - {from: credit, to: revise}
  - {from: revise, to: merge}
  - {from: merge, to: END}
"""


@pytest.fixture
def server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer() as running:
        yield running


def defaults(server: ScriptedOpenAIServer) -> None:
    """The replies every task needs; a test's own rules, scripted first, take precedence."""
    server.script(
        Rule(system=SOLVER, text="The answer is 42."),
        Rule(system=CRITIC, json={"approve": True, "feedback": "Looks right."}),
        Rule(system=KEY_STEPS, json={"steps": ["Work out the answer", "State it"]}),
        Rule(system=MISTAKE, json={"reason": "The answer missed what the task asked for."}),
        Rule(system=REVISION, json={"operations": []}),
        Rule(system=MERGE, json={"insights": []}),
    )


class Tasks:
    """Runs tasks through the evolution graph in one namespace, and reads what they left."""

    def __init__(
        self, store: GraphStore, server: ScriptedOpenAIServer, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
    ) -> None:
        self.store, self.namespace, self.server = store, namespace, server
        self.llm = server.gateway()
        self.settings = settings_of(store, tmp_path, request)
        path = tmp_path / "gmemory-evolve-test.yaml"
        path.write_text(GRAPH)
        self.graph = load_graph(path)

    async def run(
        self,
        key: str,
        *,
        ok: bool = True,
        used: Sequence[str] = (),
        task: str = "Compute the answer to the question.",
        rounds: int = 1,
    ) -> RunResult:
        insights = [{"id": i, "text": i, "support": 1, "score": 1} for i in used]
        values = {"task": task, "task_key": key, "expected": "42" if ok else "43", "max_rounds": rounds, "insights": insights}
        return await run_graph(
            self.graph, values, store=self.store, embedder=EMBEDDER, llm=self.llm, settings=self.settings,
            checkpointer=None, namespace=self.namespace,
        )  # fmt: skip

    async def seed(self, *texts_and_credits: tuple[str, int]) -> list[str]:
        return await self.seed_into(self.store, self.namespace, *texts_and_credits)

    @staticmethod
    async def seed_into(store: GraphStore, namespace: str, *texts_and_credits: tuple[str, int]) -> list[str]:
        """Active insights with a seed credit each, in display order."""
        ids, records = [], []
        for order, (text, credit) in enumerate(texts_and_credits, 1):
            iid = insight_id(namespace, text)
            ids.append(iid)
            records.append(
                NodeRecord(
                    id=iid, namespace=namespace, kind=INSIGHT, text=text,
                    properties={"text": text, "status": "active", "score": credit, "created_order": order},
                )
            )  # fmt: skip
        credits = [
            credit_record(namespace, "seed", iid, credit, "seed") for iid, (_, credit) in zip(ids, texts_and_credits, strict=True)
        ]
        await store.upsert_nodes([*records, *(c for c, _ in credits)])
        await store.upsert_relationships([link for _, link in credits])
        return ids

    async def insight(self, iid: str) -> NodeRecord:
        [found] = await self.store.get_nodes(self.namespace, [iid])
        assert found is not None
        return found

    async def insights(self) -> dict[str, tuple[str | None, str, int]]:
        """Every insight: (text, status, cached score)."""
        found = await self.store.list_nodes(self.namespace, kind=INSIGHT, limit=1000)
        return {i.id: (i.text, i.properties["status"], i.properties["score"]) for i in found}

    async def linked(self, node_id: str, type: str, direction: str = "out") -> set[str]:
        return {n.id for n in (await linked(self.store, self.namespace, [node_id], type, direction))[node_id]}  # type: ignore[arg-type]

    def qid(self, key: str) -> str:
        return query_id(self.namespace, key)

    def first(self, *rules: Rule) -> None:
        """Put rules before every other one."""
        self.server.rules[0:0] = list(rules)


@pytest.fixture
def tasks(
    store: GraphStore, server: ScriptedOpenAIServer, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Tasks:
    defaults(server)
    return Tasks(store, server, namespace, tmp_path, request)


async def assert_scores_exact(tasks: Tasks) -> None:
    """Every insight's cached score is the sum of its credits."""
    cached = {iid: score for iid, (_, _, score) in (await tasks.insights()).items()}
    assert cached == await insight_scores(tasks.store, tasks.namespace, cached)


# -- record: the query and its interaction graph ----------------------------------------------------------------


async def test_record_writes_the_query_utterances_reply_links_and_similarity(tasks: Tasks) -> None:
    tasks.first(
        Rule(system=SOLVER, replies=["The answer is 41.", "The answer is 42."], times=2),
        Rule(system=CRITIC, json={"approve": False, "feedback": "Check the units."}, times=1),
    )
    [used] = await tasks.seed(("Check the units, because answers are compared exactly.", 1))
    first = await tasks.run("t1", rounds=2, used=[used])
    query = await tasks.store.get_nodes(tasks.namespace, [tasks.qid("t1")])
    assert query[0] is not None and first.state["query_id"] == tasks.qid("t1")
    p = query[0].properties
    assert (p["status"], p["order"], p["key_steps"], p["fail_reason"]) == ("resolved", 1, ["Work out the answer", "State it"], "")
    utterances = sorted(
        (n for n in await tasks.store.list_nodes(tasks.namespace, kind=UTTERANCE) if n.properties["query_id"] == tasks.qid("t1")),
        key=lambda n: n.properties["order"],
    )
    # the second answer reaches the goal and ends the episode before the critic speaks again
    assert [(u.properties["order"], u.properties["round"], u.properties["speaker"], u.properties["addressee"]) for u in utterances] == [
        (1, 0, "solver", "critic"), (2, 0, "critic", "solver"), (3, 1, "solver", "critic"),
    ]  # fmt: skip
    assert utterances[1].properties["message"] == "Check the units."
    assert [u.properties["kept"] for u in utterances] == [True, True, True]  # no step was dropped
    ids = [u.id for u in utterances]
    assert await tasks.linked(tasks.qid("t1"), "HAS_UTTERANCE") == set(ids)
    assert [await tasks.linked(u, "NEXT") for u in ids] == [{ids[1]}, {ids[2]}, set()]
    # each utterance replies to the last message its speaker received; the first one received nothing
    assert [await tasks.linked(u, "REPLY_TO") for u in ids] == [set(), {ids[0]}, {ids[1]}]
    # the same task text again: linked SIMILAR to the earlier query; another text is not
    await tasks.run("t2")
    await tasks.run("t3", task="Translate the poem into French.")
    assert await tasks.linked(tasks.qid("t2"), "SIMILAR") == {tasks.qid("t1")}
    assert await tasks.linked(tasks.qid("t3"), "SIMILAR") == set()
    orders = [n.properties["order"] for n in await tasks.store.list_nodes(tasks.namespace, kind=QUERY)]
    assert sorted(orders) == [1, 2, 3]


async def test_a_failure_records_the_likely_mistake(tasks: Tasks) -> None:
    result = await tasks.run("t1", ok=False)
    [query] = await tasks.store.get_nodes(tasks.namespace, [tasks.qid("t1")])
    assert query is not None and query.properties["status"] == "failed"
    assert query.properties["fail_reason"] == result.state["fail_reason"] == "The answer missed what the task asked for."


# -- credit ------------------------------------------------------------------------------------------------


async def test_scores_follow_successes_and_failures_and_prune_at_zero(tasks: Tasks) -> None:
    [rule, other] = await tasks.seed(("Restate the goal first, because it avoids drift.", 2), ("Unused rule, because.", 1))
    await tasks.run("t1", ok=True, used=[rule])
    assert (await tasks.insight(rule)).properties["score"] == 3
    result = await tasks.run("t2", ok=False, used=[rule])
    assert result.state["evolution"]["credit"]["credited"] == {rule: -2}
    assert (await tasks.insight(rule)).properties == {**(await tasks.insight(rule)).properties, "score": 1, "status": "active"}
    result = await tasks.run("t3", ok=False, used=[rule, "no-such-insight"])
    assert result.state["evolution"]["credit"]["pruned"] == [rule]
    pruned = await tasks.insight(rule)
    assert (pruned.properties["score"], pruned.properties["status"], pruned.text) == (
        -1,
        "pruned",
        "Restate the goal first, because it avoids drift.",
    )
    assert (await tasks.insight(other)).properties["score"] == 1
    assert await tasks.linked(rule, "SUPPORTED_BY") == {tasks.qid("t1")}
    assert await tasks.linked(rule, "CONTRADICTED_BY") == {tasks.qid("t2"), tasks.qid("t3")}
    credits = {
        n.properties["source"]: n.properties["delta"] for n in (await linked(tasks.store, tasks.namespace, [rule], "CREDITS", "in"))[rule]
    }
    assert credits == {"seed": 2, tasks.qid("t1"): 1, tasks.qid("t2"): -2, tasks.qid("t3"): -2}
    await assert_scores_exact(tasks)


async def test_a_replayed_task_counts_its_credit_once(tasks: Tasks) -> None:
    [rule] = await tasks.seed(("Restate the goal first, because it avoids drift.", 2))
    for _ in range(3):  # the same task (same key) finished three times: a retry or a replay
        await tasks.run("t1", ok=True, used=[rule])
    assert (await tasks.insight(rule)).properties["score"] == 3
    assert await tasks.store.count_nodes(tasks.namespace, CREDIT) == 2
    assert await tasks.store.count_nodes(tasks.namespace, QUERY) == 1
    [query] = await tasks.store.get_nodes(tasks.namespace, [tasks.qid("t1")])
    assert query is not None and query.properties["order"] == 1
    await assert_scores_exact(tasks)


# -- revision ------------------------------------------------------------------------------------------------

RULES = (
    ("Restate the goal first, because it avoids drift.", 1),
    ("Guess when unsure, because speed matters.", 1),
    ("Check every unit, because answers are compared exactly.", 1),
    ("Show the final answer on its own line, because it is read by a checker.", 1),
)


async def five_successes(tasks: Tasks, used: list[str]) -> list[RunResult]:
    return [await tasks.run(f"t{i}", used=used) for i in range(1, 6)]


async def test_revision_at_task_5_applies_add_edit_agree_remove(tasks: Tasks) -> None:
    ops = {
        "operations": [
            {"op": "EDIT", "insight": 1, "text": "Restate the goal and its constraints first, because it avoids drift."},
            {"op": "REMOVE", "insight": 2, "text": "Guessing hurts accuracy."},
            {"op": "AGREE", "insight": 3, "text": "Check every unit, because answers are compared exactly."},
            {"op": "ADD", "insight": None, "text": "Name the assumptions you make, because the critic checks them."},
        ]
    }
    tasks.first(Rule(system=REVISION, json=ops, times=1))
    ids = await tasks.seed(*RULES)
    results = await five_successes(tasks, ids)
    assert all("revise" not in r.state["evolution"] for r in results[:4])
    report = results[4].state["evolution"]["revise"]["revision-5"]
    assert len(report["applied"]) == 4 and report["errors"] == []
    # each sampled task is compared with its 3 most similar successes (of the 5 so far; no failures among them)
    assert [len(group) for group in report["groups"]] == [4] * 5
    assert all(group[0] == sample for group, sample in zip(report["groups"], report["samples"], strict=True))
    edited, removed, agreed, untouched = [await tasks.insight(i) for i in ids]
    assert edited.text == "Restate the goal and its constraints first, because it avoids drift." and edited.id == ids[0]
    assert edited.properties["history"][0]["text"] == RULES[0][0] and edited.properties["score"] == 1 + 5 + 1
    assert (removed.properties["score"], removed.properties["status"]) == (1 + 5 - 1, "active")
    assert agreed.properties["score"] == 1 + 5 + 1 and untouched.properties["score"] == 1 + 5
    added = await tasks.insight(insight_id(tasks.namespace, "Name the assumptions you make, because the critic checks them."))
    assert (added.properties["status"], added.properties["score"], added.properties["created_order"]) == ("active", 2, 5)
    supporters = await tasks.linked(added.id, "SUPPORTED_BY")
    assert supporters and supporters <= {tasks.qid(f"t{i}") for i in range(1, 6)}
    assert await tasks.linked(removed.id, "CONTRADICTED_BY") == supporters  # the same chunk of tasks
    sources = {n.properties["source"] for n in (await linked(tasks.store, tasks.namespace, [added.id], "CREDITS", "in"))[added.id]}
    assert sources == {"revision-5:0:3"}  # revision n, call 0, operation 3
    [milestone] = await tasks.store.get_nodes(tasks.namespace, [milestone_id(tasks.namespace, "revision-5")])
    assert milestone is not None and milestone.properties["status"] == "done"
    await assert_scores_exact(tasks)


async def test_revision_drops_operations_naming_missing_insights_or_repeating_rules(tasks: Tasks) -> None:
    ops = {
        "operations": [
            {"op": "EDIT", "insight": 9, "text": "Rewrite rule nine, because."},  # no insight 9: never applied to another
            {"op": "REMOVE", "insight": None, "text": "Remove something."},
            {"op": "ADD", "insight": None, "text": "Always: check every unit, because answers are compared exactly. Also more."},
            {
                "op": "EDIT",
                "insight": 1,
                "text": "Show the final answer on its own line, because it is read by a checker. Really.",
            },
        ]
    }
    tasks.first(Rule(system=REVISION, json=ops, times=1))
    ids = await tasks.seed(*RULES)
    results = await five_successes(tasks, ids)
    report = results[4].state["evolution"]["revise"]["revision-5"]
    assert any("no listed insight 9" in d for d in report["dropped"]) and any(
        "no listed insight None" in d for d in report["dropped"]
    )
    assert any("ADD: an existing insight already says it" in d for d in report["dropped"])
    # the EDIT whose text holds an existing rule became AGREE on that rule (insight 4), leaving insight 1 as it was
    assert report["applied"] == [f"call 0 #3 AGREE {ids[3]}"]
    after = await tasks.insights()
    assert set(after) == set(ids)
    assert [after[i][:2] for i in ids] == [(text, "active") for text, _ in RULES]
    assert [after[i][2] for i in ids] == [6, 6, 6, 7]
    await assert_scores_exact(tasks)


@pytest.mark.parametrize("bad", ["prose", "malformed"])
async def test_an_unreadable_revision_reply_changes_no_insight(tasks: Tasks, bad: str) -> None:
    reply = {"operations": [{"op": "REMOVE", "insight": 1, "text": "x"}]}
    tasks.first(
        Rule(system=REVISION, text="I would rather not say.")
        if bad == "prose"
        else Rule(system=REVISION, json=reply, fault="malformed")
    )
    ids = await tasks.seed(*RULES)
    results = await five_successes(tasks, ids[:2])
    before = await tasks.insights()
    assert results[4].state["evolution"]["revise"]["revision-5"]["applied"] == []
    assert results[4].state["evolution"]["revise"]["revision-5"]["errors"]
    assert await tasks.insights() == before
    assert [before[i][:2] for i in ids] == [(text, "active") for text, _ in RULES]
    await assert_scores_exact(tasks)


# -- merge ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_merge_at_task_20_consolidates_and_keeps_the_highest_score(tasks: Tasks) -> None:
    reply = {
        "insights": [
            {"text": "Restate the goal and check units, because answers are compared exactly.", "merges": [1, 2]},
            {"text": "A merge naming a missing rule.", "merges": [3, 7]},
        ]
    }
    tasks.first(Rule(system=MERGE, json=reply, times=1))
    a, b, c = await tasks.seed(
        ("Restate the goal first, because it avoids drift.", 1),
        ("Check every unit, because answers are compared exactly.", 5),
        ("Show the final answer alone, because a checker reads it.", 1),
    )
    for i in range(1, 21):
        failed = i == 7
        result = await tasks.run(f"t{i}", ok=not failed, used=[a] if failed else [a, b, c])
    report = result.state["evolution"]["merge"]["merge-20"]
    assert any("no listed insight [7]" in d for d in report["dropped"])
    [(new, merged)] = report["merged"].items()
    assert merged == [a, b]
    consolidated = await tasks.insight(new)
    # A: 1 + 19 - 2 = 18, B: 5 + 19 = 24: the merged insight keeps 24 (the reference code reset scores to 2)
    assert (consolidated.properties["status"], consolidated.properties["score"]) == ("active", 24)
    assert consolidated.text == "Restate the goal and check units, because answers are compared exactly."
    for original in (a, b):
        record = await tasks.insight(original)
        assert record.properties["status"] == "merged" and await tasks.linked(original, "MERGED_INTO") == {new}
    assert (await tasks.insight(c)).properties["status"] == "active"
    successes = {tasks.qid(f"t{i}") for i in range(1, 21) if i != 7}
    assert await tasks.linked(new, "SUPPORTED_BY") == successes
    assert await tasks.linked(new, "CONTRADICTED_BY") == {tasks.qid("t7")}
    [milestone] = await tasks.store.get_nodes(tasks.namespace, [milestone_id(tasks.namespace, "merge-20")])
    assert milestone is not None and milestone.properties["status"] == "done"
    await assert_scores_exact(tasks)


# -- concurrency ---------------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_ten_tasks_finishing_at_once_apply_every_credit_once(tasks: Tasks) -> None:
    [rule, other] = await tasks.seed(
        ("Restate the goal first, because it avoids drift.", 1), ("Check every unit, because answers are compared exactly.", 30)
    )
    outcomes = [i % 3 != 0 for i in range(1, 11)]  # 7 successes, 3 failures
    results = await asyncio.gather(
        *(tasks.run(f"t{i}", ok=ok, used=[rule, other]) for i, ok in zip(range(1, 11), outcomes, strict=True))
    )
    assert (await tasks.insight(rule)).properties["score"] == 1 + 7 - 6
    assert (await tasks.insight(other)).properties["score"] == 30 + 7 - 6
    assert await tasks.store.count_nodes(tasks.namespace, CREDIT) == 2 + 20
    orders = sorted(n.properties["order"] for n in await tasks.store.list_nodes(tasks.namespace, kind=QUERY))
    assert orders == list(range(1, 11))
    ran = [name for r in results for name in r.state["evolution"].get("revise", {})]
    assert sorted(ran) == ["revision-10", "revision-5"]
    await assert_scores_exact(tasks)


# -- the shipped graph ------------------------------------------------------------------------------------------


def test_the_task_graph_loads_with_retrieval_and_the_team() -> None:
    if not (LIBRARY / "gmemory-retrieve.yaml").is_file():
        pytest.skip("gmemory-retrieve.yaml is not written yet")
    graph = load_graph("gmemory-task")
    assert set(graph.subgraphs) == {"retrieve", "team"}
    assert [n.use for n in graph.spec.nodes.values() if n.use] == [
        "gmemory.record",
        "gmemory.learn",
        "gmemory.credit",
        "gmemory.revise",
        "gmemory.merge",
    ]


async def test_the_task_graph_runs_end_to_end_offline(
    store: GraphStore, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if not (LIBRARY / "gmemory-retrieve.yaml").is_file():
        pytest.skip("gmemory-retrieve.yaml is not written yet")
    [rule] = await Tasks.seed_into(store, namespace, ("Restate the goal first, because it avoids drift.", 2))
    used = [{"id": rule, "text": "Restate the goal first, because it avoids drift.", "support": 1, "score": 2}]
    result = await run_graph(
        load_graph("gmemory-task"), {"task": "Compute the answer.", "task_key": "t1", "insights": used},
        store=store, embedder=EMBEDDER, llm=offline_llm(), settings=settings_of(store, tmp_path, request),
        checkpointer=None, namespace=namespace,
    )  # fmt: skip
    assert result.steps[-5:] == ["record", "learn", "credit", "revise", "merge"]
    assert result.state["query_id"] == query_id(namespace, "t1") and result.state["success"]
    assert await store.count_nodes(namespace, QUERY) == 1
    assert await store.count_nodes(namespace, UTTERANCE) == len(result.state["messages"]) > 0
