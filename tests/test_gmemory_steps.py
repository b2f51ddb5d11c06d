"""G-Memory's write-time filter on both stores: the team's environment steps are recorded, and a step that changed
nothing (reward -1) is kept for audit but left out of what the memory learns from.

The graph under test is the team followed by ``gmemory.record`` (a temporary file), against the scripted model.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mnemoflow.graphs import load_graph, run_graph
from mnemoflow.graphs.runner import RunResult
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import NodeRecord
from mnemoflow.nodes.gmemory.evolve import kept_trajectory
from mnemoflow.nodes.gmemory.links import linked
from mnemoflow.nodes.gmemory.model import STEP, UTTERANCE, query_id, step_id
from mnemoflow.nodes.team.agents import Message
from mnemoflow.nodes.team.environment import Step
from tests.conftest import EMBEDDER, settings_of
from tests.support.openai_server import Rule, ScriptedOpenAIServer

SOLVER, CRITIC = "You are the solver", "You are the critic"
KEY_STEPS, MISTAKE = "You summarize how a team", "A team of agents failed"
TASK = "Compute the answer to the question."

GRAPH = """
name: gmemory-steps-test
version: 1
description: The team, then G-Memory's record step.
state: gmemory.TaskState
input: [task]
nodes:
  team: {graph: team}
  record: {use: gmemory.record}
edges:
  - {from: START, to: team}
  - {from: team, to: record}
  - {from: record, to: END}
"""

RECORD_ONLY = GRAPH.replace("team: {graph: team}\n  ", "").replace(
    "{from: START, to: team}\n  - {from: team, to: record}", "{from: START, to: record}"
)


@pytest.fixture
def server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer() as running:
        running.script(
            Rule(system=CRITIC, json={"approve": False, "feedback": "Recount."}),
            Rule(system=KEY_STEPS, json={"steps": ["Add the numbers", "State the sum"]}),
            Rule(system=MISTAKE, json={"reason": "The sum was never recounted."}),
        )
        yield running


async def run(
    text: str, store: GraphStore, server: ScriptedOpenAIServer, namespace: str, tmp_path: Path, request: pytest.FixtureRequest,
    values: dict[str, Any],
) -> RunResult:  # fmt: skip
    path = tmp_path / "graph.yaml"
    path.write_text(text)
    return await run_graph(
        load_graph(path), {"task": TASK, **values}, store=store, embedder=EMBEDDER, llm=server.gateway(),
        settings=settings_of(store, tmp_path, request), checkpointer=None, namespace=namespace,
    )  # fmt: skip


def user_prompt(server: ScriptedOpenAIServer, system: str) -> str:
    [prompt] = [r["body"]["messages"][1]["content"] for r in server.requests if system in r["body"]["messages"][0]["content"]]
    return str(prompt)


async def utterances(store: GraphStore, namespace: str, qid: str) -> list[NodeRecord]:
    found = [n for n in await store.list_nodes(namespace, kind=UTTERANCE) if n.properties["query_id"] == qid]
    return sorted(found, key=lambda n: n.properties["order"])


async def test_a_repeated_action_is_stored_for_audit_but_not_learned_from(
    store: GraphStore, server: ScriptedOpenAIServer, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    server.rules.insert(0, Rule(system=SOLVER, replies=["It is 41.", "it is  41", "The answer is 42."]))
    result = await run(GRAPH, store, server, namespace, tmp_path, request, {"task_key": "t1", "expected": "42", "max_rounds": 3})
    qid = query_id(namespace, "t1")
    assert result.state["success"] is True and result.state["key_steps"] == ["Add the numbers", "State the sum"]
    assert {k: result.state["evolution"]["record"][k] for k in ("steps", "dropped_steps", "utterances")} == {
        "steps": 3, "dropped_steps": [2], "utterances": 5,
    }  # fmt: skip
    steps = await store.get_nodes(namespace, [step_id(namespace, qid, n) for n in (1, 2, 3)])
    assert [s.properties if s else None for s in steps] == [
        {"query_id": qid, "number": 1, "round": 0, "action": "It is 41.", "observation": "The goal is not reached yet.", "reward": 0, "kept": True},
        {"query_id": qid, "number": 2, "round": 1, "action": "it is  41", "observation": "Nothing happens: the action repeats step 1.", "reward": -1, "kept": False},
        {"query_id": qid, "number": 3, "round": 2, "action": "The answer is 42.", "observation": "The goal is reached.", "reward": 1, "kept": True},
    ]  # fmt: skip
    ids = [step_id(namespace, qid, n) for n in (1, 2, 3)]
    assert {n.id for n in (await linked(store, namespace, [qid], "HAS_STEP", "out"))[qid]} == set(ids)
    assert [{n.id for n in found} for found in (await linked(store, namespace, ids, "NEXT", "out")).values()] == [
        {ids[1]},
        {ids[2]},
        set(),
    ]
    said = await utterances(store, namespace, qid)
    assert [(u.properties["speaker"], u.properties["round"], u.properties["kept"]) for u in said] == [
        ("solver", 0, True), ("critic", 0, True), ("solver", 1, False), ("critic", 1, False), ("solver", 2, True),
    ]  # fmt: skip
    trajectory = (
        "solver -> critic: It is 41.\nenvironment -> solver: The goal is not reached yet.\ncritic -> solver: Recount.\n"
        "solver -> critic: The answer is 42.\nenvironment -> solver: The goal is reached."
    )
    [query] = await store.get_nodes(namespace, [qid])
    assert query is not None and query.properties["trajectory"] == trajectory
    assert (
        user_prompt(server, KEY_STEPS)
        == f"Task: {TASK}\n\nOutcome: resolved. The solution meets the goal.\n\nMessages:\n{trajectory}"
    )
    assert await store.count_nodes(namespace, STEP) == 3


async def test_a_failure_names_its_mistake_from_the_kept_steps_only(
    store: GraphStore, server: ScriptedOpenAIServer, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    server.rules.insert(0, Rule(system=SOLVER, replies=["It is 41.", ""]))
    result = await run(GRAPH, store, server, namespace, tmp_path, request, {"task_key": "t1", "expected": "42", "max_rounds": 2})
    assert result.state["success"] is False and result.state["fail_reason"] == "The sum was never recounted."
    trajectory = "solver -> critic: It is 41.\nenvironment -> solver: The goal is not reached yet.\ncritic -> solver: Recount."
    outcome = "failed. The solution does not reach the goal ('42' missing)."
    assert user_prompt(server, MISTAKE) == f"Task: {TASK}\n\nOutcome: {outcome}\n\nMessages:\n{trajectory}"
    assert user_prompt(server, KEY_STEPS) == user_prompt(server, MISTAKE)
    qid = query_id(namespace, "t1")
    [empty] = await store.get_nodes(namespace, [step_id(namespace, qid, 2)])
    assert empty is not None and (empty.text, empty.properties["reward"], empty.properties["kept"]) == (None, -1, False)


async def test_a_task_without_steps_records_as_before(
    store: GraphStore, server: ScriptedOpenAIServer, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    messages = [
        {"speaker": "solver", "addressee": "critic", "text": "It is 42.", "round": 0},
        {"speaker": "critic", "addressee": "solver", "text": "Right.", "round": 0},
    ]
    values = {"task_key": "t0", "messages": messages, "success": True, "feedback": "Done."}
    result = await run(RECORD_ONLY, store, server, namespace, tmp_path, request, values)
    qid = query_id(namespace, "t0")
    assert result.state["evolution"]["record"]["steps"] == 0 and await store.count_nodes(namespace, STEP) == 0
    assert ["kept" in u.properties for u in await utterances(store, namespace, qid)] == [False, False]
    [query] = await store.get_nodes(namespace, [qid])
    assert query is not None and query.properties["trajectory"] == "solver -> critic: It is 42.\ncritic -> solver: Right."


def test_steps_without_messages_of_their_round_are_listed_after_the_messages() -> None:
    said = [Message(speaker="planner", addressee="worker", text="Plan it.", round=0)]
    steps = [
        Step(number=1, round=1, action="open the door", observation="The door opens.", reward=0),
        Step(number=2, round=2, action="open the door", observation="Nothing happens.", reward=-1),
    ]
    assert kept_trajectory(said, steps) == "planner -> worker: Plan it.\nenvironment: open the door -> The door opens."
    assert kept_trajectory([], []) == "(no messages)"
