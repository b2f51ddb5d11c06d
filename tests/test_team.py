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


async def test_the_critic_objects_once_then_the_revised_solution_passes(server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    server.script(Rule(system=SOLVER, replies=["Lyon", "Paris"]))
    server.script(Rule(system=CRITIC, replies=[{"approve": False, "feedback": "Lyon is not the capital."}, {"approve": True, "feedback": "Right."}]))
    state = await run_team("team", server, tmp_path, {"task": "Name the capital of France.", "expected": "paris", "memory": {"solver": "Capitals are seats of government."}})
    assert state["solution"] == "Paris" and state["success"] is True and state["round"] == 2
    assert [(m.speaker, m.addressee, m.text, m.round) for m in state["messages"]] == [  # type: ignore[attr-defined]
        ("solver", "critic", "Lyon", 0),
        ("critic", "solver", "Lyon is not the capital.", 0),
        ("solver", "critic", "Paris", 1),
        ("critic", "solver", "Right.", 1),
    ]
    solver_prompts = [r["body"]["messages"] for r in server.requests if SOLVER in r["body"]["messages"][0]["content"]]
    assert "Capitals are seats of government." in solver_prompts[0][0]["content"]  # the role's memory reached it
    assert "Lyon is not the capital." in solver_prompts[1][1]["content"]  # the revision saw the critique


async def test_rounds_are_bounded_and_the_environment_decides(server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    server.script(Rule(system=SOLVER, text="Lyon"))
    server.script(Rule(system=CRITIC, json={"approve": False, "feedback": "No."}))
    state = await run_team("team", server, tmp_path, {"task": "Name the capital of France.", "expected": "Paris", "max_rounds": 3})
    assert state["round"] == 3 and state["success"] is False and "'Paris' missing" in str(state["feedback"])
    assert len(state["messages"]) == 6  # type: ignore[arg-type]


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
    assert state["success"] is True and state["query_id"] == "" and len(state["messages"]) == 2  # type: ignore[arg-type]


def test_a_subgraph_whose_state_the_graph_does_not_extend_is_refused(tmp_path: Path) -> None:
    with pytest.raises(GraphSpecError, match="state-mismatch.*does not extend"):
        load_graph(wrapper(tmp_path / "wrapped.yaml", "text.TextState"))
