"""The solver/critic team on its own, and a team graph used as a subgraph by a graph whose state extends its own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from mnemoflow.errors import GraphSpecError
from mnemoflow.graphs import load_graph, run_graph
from mnemoflow.memory import SQLiteStore
from mnemoflow.settings import Settings, StoreSettings
from tests.conftest import EMBEDDER
from tests.support.openai_server import Rule, ScriptedOpenAIServer

SOLVER, CRITIC = "You are the solver", "You are the critic"


@pytest.fixture
def server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer() as running:
        yield running


async def run_team(graph: Path | str, server: ScriptedOpenAIServer, tmp_path: Path, values: dict[str, object]) -> dict[str, object]:
    async with SQLiteStore(tmp_path / "memory.db", embedding_model=EMBEDDER.model, embedding_dimension=EMBEDDER.dimension) as store:
        result = await run_graph(
            load_graph(graph), values, store=store, embedder=EMBEDDER, llm=server.gateway(),
            settings=Settings(store=StoreSettings(sqlite_path=tmp_path / "memory.db")), checkpointer=None, namespace="team",
        )  # fmt: skip
    return result.state


def prompts(server: ScriptedOpenAIServer, system: str) -> list[str]:
    """The user prompts the role was sent, in order."""
    return [r["body"]["messages"][1]["content"] for r in server.requests if system in r["body"]["messages"][0]["content"]]


def steps_of(state: dict[str, object]) -> list[tuple[int, int, str, str, int]]:
    return [(s.number, s.round, s.action, s.observation, s.reward) for s in state["steps"]]  # type: ignore[attr-defined]


async def test_the_critic_objects_once_then_the_revised_solution_reaches_the_goal(server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    server.script(Rule(system=SOLVER, replies=["Lyon", "Paris"]))
    server.script(Rule(system=CRITIC, json={"approve": False, "feedback": "Lyon is not the capital."}))
    state = await run_team("team", server, tmp_path, {"task": "Name the capital of France.", "expected": "paris", "memory": {"solver": "Capitals are seats of government."}})
    assert state["solution"] == "Paris" and state["success"] is True and state["feedback"] == "The solution meets the goal."
    # the goal reached at step 2 ends the episode: the critic does not review it
    assert state["round"] == 1 and state["approved"] is False
    assert steps_of(state) == [(1, 0, "Lyon", "The goal is not reached yet.", 0), (2, 1, "Paris", "The goal is reached.", 1)]
    assert [(m.speaker, m.addressee, m.text, m.round) for m in state["messages"]] == [  # type: ignore[attr-defined]
        ("solver", "critic", "Lyon", 0),
        ("critic", "solver", "Lyon is not the capital.", 0),
        ("solver", "critic", "Paris", 1),
    ]
    solver_systems = [r["body"]["messages"][0]["content"] for r in server.requests if SOLVER in r["body"]["messages"][0]["content"]]
    assert "Capitals are seats of government." in solver_systems[0]  # the role's memory reached it
    observed = "The steps so far and what the environment observed:\nStep 1: Lyon\nObservation: The goal is not reached yet."
    assert prompts(server, SOLVER) == [
        "Task: Name the capital of France.",
        f"Task: Name the capital of France.\n\n{observed}\n\nYour last solution: Lyon\nThe critic says: Lyon is not the capital.",
    ]
    assert prompts(server, CRITIC) == [f"Task: Name the capital of France.\n\n{observed}\n\nSolution: Lyon"]


async def test_rounds_are_bounded_and_repeated_actions_change_nothing(server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    server.script(Rule(system=SOLVER, replies=["Lyon", " lyon. ", ""]))
    server.script(Rule(system=CRITIC, json={"approve": True, "feedback": "Fine."}))  # an approval does not end an unreached goal
    state = await run_team("team", server, tmp_path, {"task": "Name the capital of France.", "expected": "Paris", "max_rounds": 3})
    assert state["round"] == 3 and state["success"] is False and "'Paris' missing" in str(state["feedback"])
    assert steps_of(state) == [
        (1, 0, "Lyon", "The goal is not reached yet.", 0),
        (2, 1, "lyon.", "Nothing happens: the action repeats step 1.", -1),  # case, spaces and a final period aside
        (3, 2, "", "Nothing happens: the action is empty.", -1),
    ]
    assert len(state["messages"]) == 6  # type: ignore[arg-type]
    assert prompts(server, SOLVER)[2].endswith(
        "Step 2: lyon.\nObservation: Nothing happens: the action repeats step 1.\n\nYour last solution: lyon.\nThe critic says: Fine."
    )


async def test_a_declarative_goal_rewards_each_action_without_revealing_itself(server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    server.script(Rule(system=SOLVER, replies=["It is 41.", "The answer is 42."]))
    server.script(Rule(system=CRITIC, json={"approve": False, "feedback": "Recount."}))
    goal = {"kind": "number", "value": 42}
    state = await run_team("team", server, tmp_path, {"task": "Add 40 and 2.", "goal": goal})
    assert state["success"] is True and [s[4] for s in steps_of(state)] == [0, 1]
    assert "42" not in prompts(server, SOLVER)[1].replace("The answer is 42.", "")  # observations never name the goal


async def test_without_a_goal_the_critic_ends_the_rounds(server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    server.script(Rule(system=SOLVER, text="Some text."), Rule(system=CRITIC, json={"approve": True, "feedback": "Yes."}))
    state = await run_team("team", server, tmp_path, {"task": "Write something.", "max_rounds": 3})  # any non-empty text passes
    assert state["success"] is True and state["approved"] is True and state["round"] == 1
    assert steps_of(state) == [(1, 0, "Some text.", "The action is taken; no goal is set to check it against.", 0)]


def wrapper(path: Path, state: str) -> Path:
    spec = {
        "name": "wrapped", "state": state, "input": ["task"],
        "nodes": {"team": {"graph": "team"}},
        "edges": [{"from": "START", "to": "team"}, {"from": "team", "to": "END"}],
    }  # fmt: skip
    path.write_text(yaml.safe_dump(spec))
    return path


async def test_a_team_runs_as_a_subgraph_of_a_graph_whose_state_extends_its_own(server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    server.script(Rule(system=SOLVER, text="Paris"))
    server.script(Rule(system=CRITIC, json={"approve": True, "feedback": "Yes."}))
    state = await run_team(wrapper(tmp_path / "wrapped.yaml", "gmemory.TaskState"), server, tmp_path, {"task": "Capital of France?", "expected": "Paris"})
    assert state["success"] is True and state["query_id"] == "" and len(state["messages"]) == 1  # type: ignore[arg-type]
    assert [s.reward for s in state["steps"]] == [1]  # type: ignore[attr-defined]


def test_a_subgraph_whose_state_the_graph_does_not_extend_is_refused(tmp_path: Path) -> None:
    with pytest.raises(GraphSpecError, match="state-mismatch.*does not extend"):
        load_graph(wrapper(tmp_path / "wrapped.yaml", "text.TextState"))
