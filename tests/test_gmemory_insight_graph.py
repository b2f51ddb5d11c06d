"""G-Memory's insight tier (``gmemory.learn`` and retrieval's DERIVED_FROM hop) on both stores.

Evolution runs a small graph (the team -> record -> learn -> credit) against the scripted model, the insights
a task was given handed in as input; retrieval runs ``gmemory-retrieve`` with the offline model over records
written by hand; the whole ``gmemory-task`` graph runs twice with the offline model.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from mnemoflow.flows.server.ui.mechanisms import gmemory
from mnemoflow.graphs import load_graph, run_graph, with_node_config
from mnemoflow.graphs.runner import RunResult
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import NodeRecord, RelationshipRecord
from mnemoflow.nodes.gmemory.agents import LEARN_SYSTEM
from mnemoflow.nodes.gmemory.insights import credit_record
from mnemoflow.nodes.gmemory.learn import LearnConfig
from mnemoflow.nodes.gmemory.model import CREDIT, INSIGHT, QUERY, credit_id, insight_id, learned_insight_id, query_id
from tests.conftest import EMBEDDER, offline_llm, settings_of
from tests.support.openai_server import Rule, ScriptedOpenAIServer

TASK = "Compute the answer to the question."
LESSON = "  Work out the answer,   then state it alone, because checks compare the final answer. "
FAIL_LESSON = "Read what the task asks before answering, because a wrong target fails the check."
GRAPH = """
name: gmemory-learn-test
version: 1
description: The G-Memory task graph without retrieval, revision and merge.
state: gmemory.TaskState
input: [task]
nodes:
  team: {graph: team}
  record: {use: gmemory.record}
  learn: {use: gmemory.learn}
  credit: {use: gmemory.credit}
edges:
  - {from: START, to: team}
  - {from: team, to: record}
  - {from: record, to: learn}
  - {from: learn, to: credit}
  - {from: credit, to: END}
"""


@pytest.fixture
def server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer() as running:
        running.script(
            Rule(system="You are the solver", text="The answer is 42."),
            Rule(system="You are the critic", json={"approve": True, "feedback": "Looks right."}),
            Rule(system="You summarize how a team", json={"steps": ["Work out the answer", "State it"]}),
            Rule(system="A team of agents failed", json={"reason": "It answered another question."}),
        )
        yield running


def learn_chats(server: ScriptedOpenAIServer) -> list[dict[str, Any]]:
    return [r for r in server.requests if r["path"].endswith("/chat/completions") and r["body"]["messages"][0]["content"] == LEARN_SYSTEM]


async def seed_insights(store: GraphStore, namespace: str, *texts: str, status: str = "active") -> list[str]:
    """Insights with a credit of 3 each (``status`` as given), in display order."""
    ids = [insight_id(namespace, text) for text in texts]
    properties: list[dict[str, Any]] = [
        {"text": t, "status": status, "score": 3, "created_order": n} for n, t in enumerate(texts, 1)
    ]
    credits = [credit_record(namespace, "seed", i, 3, "seed") for i in ids]
    await store.upsert_nodes(
        [NodeRecord(id=i, namespace=namespace, kind=INSIGHT, text=t, properties=p) for i, t, p in zip(ids, texts, properties, strict=True)]
        + [c for c, _ in credits]
    )
    await store.upsert_relationships([link for _, link in credits])
    return ids


async def run_task(
    store: GraphStore, server: ScriptedOpenAIServer, namespace: str, tmp_path: Path, request: pytest.FixtureRequest,
    key: str, *, ok: bool = True, used: Sequence[str] = (),
) -> RunResult:  # fmt: skip
    path = tmp_path / "gmemory-learn-test.yaml"
    path.write_text(GRAPH)
    insights = [{"id": i, "text": i, "support": 1, "score": 3} for i in used]
    values = {"task": TASK, "task_key": key, "expected": "42" if ok else "43", "max_rounds": 1, "insights": insights}
    return await run_graph(
        load_graph(path), values, store=store, embedder=EMBEDDER, llm=server.gateway(),
        settings=settings_of(store, tmp_path, request), checkpointer=None, namespace=namespace,
    )  # fmt: skip


async def links(store: GraphStore, namespace: str, node: str, type: str) -> dict[tuple[str, str], dict[str, Any]]:
    """``{(source, target): properties}`` of the ``type`` relationships touching ``node``."""
    page = await store.neighbours(namespace, node, limit=200)
    return {(r.source_id, r.target_id): dict(r.properties) for r in page.relationships if r.type == type}


async def counts(store: GraphStore, namespace: str) -> dict[str, int]:
    """G-Memory's records and links by kind (the runner's own run records left out)."""
    kinds = {kind: n for kind, n in (await store.count_nodes_by_kind(namespace)).items() if kind.startswith("G")}
    types = ("SUPPORTED_BY", "CONTRADICTED_BY", "INFORMED", "DERIVED_FROM", "CREDITS")
    return {**kinds, **{t: await store.count_relationships(namespace, t) for t in types}}


async def test_a_task_learns_one_lesson_supported_by_its_query_and_derived_from_the_insights_it_used(
    store: GraphStore, namespace: str, server: ScriptedOpenAIServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    server.rules[0:0] = [Rule(system=LEARN_SYSTEM, json={"text": LESSON})]
    first, second = await seed_insights(store, namespace, "Check the units, because answers are exact.", "Show the work, because it helps.")
    result = await run_task(store, server, namespace, tmp_path, request, "t1", used=[first, second])
    qid, lesson = query_id(namespace, "t1"), learned_insight_id(namespace, query_id(namespace, "t1"))
    [chat] = learn_chats(server)
    [query] = await store.get_nodes(namespace, [qid])
    kept = query.properties["trajectory"] if query else ""  # what the write-time filter kept, as record stored it
    assert kept.startswith("solver -> critic: The answer is 42.")
    assert chat["body"]["messages"][1]["content"] == (
        f"Task: {TASK}\n\nOutcome: resolved. The solution meets the goal.\n\nKey steps:\n- Work out the answer\n- State it"
        f"\n\nMessages:\n{kept}"
    )
    text = "Work out the answer, then state it alone, because checks compare the final answer."
    [record] = await store.get_nodes(namespace, [lesson])
    assert record is not None and (record.kind, record.text) == (INSIGHT, text)
    assert record.properties == {
        "text": text, "status": "active", "score": LearnConfig().score, "created_order": 3, "source": f"learned:{qid}", "query_id": qid,
    }  # fmt: skip
    [credit] = await store.get_nodes(namespace, [credit_id(namespace, f"learned:{qid}", lesson)])
    assert credit is not None and credit.kind == CREDIT
    assert credit.properties == {"insight_id": lesson, "delta": 2, "reason": "learned", "source": f"learned:{qid}"}
    assert await links(store, namespace, lesson, "SUPPORTED_BY") == {(lesson, qid): {}}
    assert await links(store, namespace, lesson, "DERIVED_FROM") == {
        (lesson, first): {"via_query": qid}, (lesson, second): {"via_query": qid}
    }
    assert await links(store, namespace, qid, "INFORMED") == {(first, qid): {"rank": 1}, (second, qid): {"rank": 2}}
    assert result.state["evolution"]["learn"] == {
        "insight": lesson, "new": True, "text": text, "score": 2, "informed": [first, second], "derived_from": [first, second],
    }  # fmt: skip
    assert result.state["evolution"]["credit"]["credited"] == {first: 1, second: 1}  # the lesson is not credited twice
    assert result.state["errors"] == []


async def test_a_failure_learns_a_lesson_from_its_mistake_supported_by_the_failed_query(
    store: GraphStore, namespace: str, server: ScriptedOpenAIServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    server.rules[0:0] = [Rule(system=LEARN_SYSTEM, json={"text": FAIL_LESSON})]
    [used] = await seed_insights(store, namespace, "Check the units, because answers are exact.")
    result = await run_task(store, server, namespace, tmp_path, request, "t1", ok=False, used=[used])
    qid, lesson = query_id(namespace, "t1"), learned_insight_id(namespace, query_id(namespace, "t1"))
    prompt = learn_chats(server)[0]["body"]["messages"][1]["content"]
    assert f"\n\nOutcome: failed. {result.state['feedback']}\n\n" in prompt and "'43'" in result.state["feedback"]
    assert "\n\nLikely mistake: It answered another question.\n\nMessages:\n" in prompt
    assert await links(store, namespace, lesson, "SUPPORTED_BY") == {(lesson, qid): {}}
    assert await links(store, namespace, lesson, "CONTRADICTED_BY") == {}
    assert await links(store, namespace, used, "CONTRADICTED_BY") == {(used, qid): {}}  # the insight that misled
    [record] = await store.get_nodes(namespace, [lesson])
    assert record is not None and record.text == FAIL_LESSON and record.properties["score"] == 2


async def test_a_replayed_task_asks_nothing_and_writes_nothing_twice(
    store: GraphStore, namespace: str, server: ScriptedOpenAIServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    server.rules[0:0] = [Rule(system=LEARN_SYSTEM, replies=[{"text": LESSON}, {"text": "Another lesson, because replies vary."}])]
    used = await seed_insights(store, namespace, "Check the units, because answers are exact.")
    await run_task(store, server, namespace, tmp_path, request, "t1", used=used)
    before = await counts(store, namespace)
    assert (before["GInsight"], before["DERIVED_FROM"], before["INFORMED"], before["CREDITS"]) == (2, 1, 1, 3)
    lesson = learned_insight_id(namespace, query_id(namespace, "t1"))
    [learned] = await store.get_nodes(namespace, [lesson])
    replay = await run_task(store, server, namespace, tmp_path, request, "t1", used=used)
    assert len(learn_chats(server)) == 1
    assert await counts(store, namespace) == before
    assert await store.get_nodes(namespace, [lesson]) == [learned]
    assert replay.state["evolution"]["learn"]["new"] is False
    again = await run_task(store, server, namespace, tmp_path, request, "t1", used=[*used, lesson])  # handed its own lesson
    assert again.state["evolution"]["learn"]["derived_from"] == used  # never derived from itself
    assert await store.count_relationships(namespace, "DERIVED_FROM") == 1


async def test_an_unreadable_lesson_learns_nothing_but_records_what_informed_the_task(
    store: GraphStore, namespace: str, server: ScriptedOpenAIServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    server.rules[0:0] = [Rule(system=LEARN_SYSTEM, text="A lesson? Be careful.")]
    [used] = await seed_insights(store, namespace, "Check the units, because answers are exact.")
    result = await run_task(store, server, namespace, tmp_path, request, "t1", used=[used])
    qid = query_id(namespace, "t1")
    [error] = result.state["errors"]
    assert error.startswith("gmemory.learn: the lesson could not be read, so the task taught no insight: ")
    assert await store.get_nodes(namespace, [learned_insight_id(namespace, qid)]) == [None]
    assert await store.count_nodes(namespace, INSIGHT) == 1
    assert await links(store, namespace, qid, "INFORMED") == {(used, qid): {"rank": 1}}
    assert result.state["evolution"]["learn"]["insight"] is None


# -- retrieval through the insight graph ----------------------------------------------------------------------


async def test_retrieval_reaches_an_insight_only_through_derived_from_from_a_live_one(
    store: GraphStore, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    task = "write a report on quarterly sales"
    [vector] = await EMBEDDER.embed([task])
    qid = query_id(namespace, "q1")
    await store.upsert_nodes(
        [NodeRecord(id=qid, namespace=namespace, kind=QUERY, text=task, embedding=vector, properties={"task": task, "status": "resolved", "order": 1})]
    )
    live, derived, pruned_near, dead = await seed_insights(
        store, namespace, "Live, because supported.", "Derived, because linked.", "Pruned neighbour, because it failed.", "Dead, because pruned."
    )
    beyond, _ = await seed_insights(store, namespace, "Beyond a pruned one, because unreachable.", "Two hops, because far.")
    await store.upsert_nodes(
        [n.model_copy(update={"properties": {**n.properties, "status": "pruned"}}) for n in await store.get_nodes(namespace, [pruned_near, dead]) if n]
    )
    two_hops = insight_id(namespace, "Two hops, because far.")
    rel = [RelationshipRecord(namespace=namespace, type="SUPPORTED_BY", source_id=i, target_id=qid) for i in (live, dead)]
    rel += [
        RelationshipRecord(namespace=namespace, type="DERIVED_FROM", source_id=a, target_id=b, properties={"via_query": qid})
        for a, b in ((derived, live), (live, pruned_near), (beyond, dead), (two_hops, derived))
    ]
    await store.upsert_relationships(rel)

    async def chosen(derived_hop: bool) -> list[tuple[str, int, str]]:
        graph = with_node_config(load_graph("gmemory-retrieve"), {"insights": {"derived": derived_hop}})
        result = await run_graph(
            graph, {"task": "write a report on monthly sales"}, store=store, embedder=EMBEDDER, llm=offline_llm(),
            settings=settings_of(store, tmp_path, request), checkpointer=None, namespace=namespace,
        )  # fmt: skip
        return [(i.id, i.support, i.via) for i in result.state["insights"]]

    assert await chosen(True) == [(live, 1, "support"), (derived, 0, "derived")]
    assert await chosen(False) == [(live, 1, "support")]


async def test_the_task_graph_learns_then_hands_the_lesson_to_a_similar_task(
    store: GraphStore, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    graph = load_graph("gmemory-task")
    states = []
    for key in ("t1", "t2"):
        result = await run_graph(
            graph, {"task": TASK, "task_key": key}, store=store, embedder=EMBEDDER, llm=offline_llm(),
            settings=settings_of(store, tmp_path, request), checkpointer=None, namespace=namespace,
        )  # fmt: skip
        states.append(result.state)
    q1, q2 = query_id(namespace, "t1"), query_id(namespace, "t2")
    l1, l2 = learned_insight_id(namespace, q1), learned_insight_id(namespace, q2)
    assert [i.id for i in states[1]["insights"]] == [l1]  # supported by t1's query, found for t2
    assert "1. Follow the key steps of a similar solved task in order" in states[1]["memory"]["solver"]
    assert await links(store, namespace, l2, "DERIVED_FROM") == {(l2, l1): {"via_query": q2}}
    assert await links(store, namespace, q2, "INFORMED") == {(l1, q2): {"rank": 1}}
    [lesson] = await store.get_nodes(namespace, [l1])
    assert lesson is not None and lesson.properties["score"] == 3  # 2 to start, +1: t2 succeeded with it


async def test_the_namespace_and_query_views_show_lessons_and_what_informed_a_task(
    store: GraphStore, namespace: str
) -> None:
    task = "write a report on quarterly sales"
    qid = query_id(namespace, "q1")
    properties = {"task": task, "task_key": "q1", "status": "resolved", "order": 1}
    await store.upsert_nodes([NodeRecord(id=qid, namespace=namespace, kind=QUERY, text=task, properties=properties)])
    given, older, lesson = await seed_insights(store, namespace, "Given, because new.", "Given before, because old.", "Lesson, because learned.")
    await store.upsert_relationships(
        [
            RelationshipRecord(namespace=namespace, type="INFORMED", source_id=given, target_id=qid, properties={"rank": 1}),
            RelationshipRecord(namespace=namespace, type="USED_INSIGHT", source_id=qid, target_id=older, properties={"rank": 2}),
            RelationshipRecord(namespace=namespace, type="DERIVED_FROM", source_id=lesson, target_id=given, properties={"via_query": qid}),
        ]
    )
    view = {i["id"]: i for i in (await gmemory.namespace_view(store, namespace))["insights"]["items"]}
    assert [i["id"] for i in view[lesson]["derived_from"]] == [given] and view[lesson]["derived_into"] == []
    assert [i["id"] for i in view[given]["derived_into"]] == [lesson]
    assert (view[given]["used_by"], view[older]["used_by"], view[lesson]["used_by"]) == (1, 1, 0)
    query = await gmemory.query_view(store, namespace, qid)
    assert [(i["id"], i["rank"]) for i in query["used_insights"]] == [(given, 1), (older, 2)]  # INFORMED, and the older link
