"""The G-Memory evaluation: its tasks and their environment checks, the scores by position, the cut of the task
graph at the environment, and whole evaluations against the scripted server (memory learns the scored verdict)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml
from pydantic import TypeAdapter
from typer.testing import CliRunner

from mnemoflow.cli import app
from mnemoflow.errors import ConfigError
from mnemoflow.evaluation import evaluation_class
from mnemoflow.evaluation.gmemory import (
    SMALL_MODEL_EVOLUTION,
    SMALL_MODEL_RETRIEVAL,
    Check,
    GMemoryEvaluation,
    cut_at_environment,
    data_file,
    load_tasks,
    position_scores,
    same_json,
)
from mnemoflow.evaluation.harness import Attempt, EvalDataError, EvalOptions, Item, Outcome, evaluate
from mnemoflow.evaluation.meter import Reading
from mnemoflow.graphs import load_graph
from mnemoflow.graphs.spec import EdgeSpec
from mnemoflow.logging import configure_logging
from mnemoflow.memory import SQLiteStore
from mnemoflow.nodes.gmemory.model import QUERY
from mnemoflow.settings import LLMSettings, LogSettings, OpenAISettings, Settings
from tests.conftest import EMBEDDER
from tests.support.openai_server import Rule, ScriptedOpenAIServer

CHECK: TypeAdapter[Any] = TypeAdapter(Check)
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def verdict(check: dict[str, Any], answer: str) -> bool:
    return bool(CHECK.validate_python(check).verdict(answer).success)


# -- the bundled tasks ------------------------------------------------------------------------------------------


def test_the_bundled_sequence_has_thirty_tasks_in_families_that_recur_through_it() -> None:
    evaluation = GMemoryEvaluation(EvalOptions())
    items = evaluation.load()
    families = Counter(item.group for item in items)
    assert len(items) >= 30 and len(families) >= 5 and min(families.values()) >= 5
    assert len({item.id for item in items}) == len(items)
    third = len(items) // 3
    for part in (items[:third], items[third : 2 * third], items[2 * third :]):
        assert {item.group for item in part} == set(families)  # every family in every third
    assert all(item.data.answer is not None and item.data.check.verdict(item.data.answer).success for item in items)
    assert [item.id for item in GMemoryEvaluation(EvalOptions(quick=True)).select(items)] == [item.id for item in items[:3]]
    assert evaluation_class("gmemory") is GMemoryEvaluation


def test_a_folder_or_a_json_file_can_replace_the_bundled_tasks(tmp_path: Path) -> None:
    tasks = {"tasks": [{"id": "a", "family": "f", "task": "Say 7.", "check": {"kind": "number", "value": 7}}]}
    (tmp_path / "tasks.json").write_text(json.dumps(tasks))
    items = GMemoryEvaluation(EvalOptions(data=tmp_path)).load()
    assert [(item.id, item.group, item.data.task) for item in items] == [("a", "f", "Say 7.")]
    assert data_file(None).name == "tasks.yaml" and data_file(None).is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EvalDataError, match="empty: no tasks file"):
        GMemoryEvaluation(EvalOptions(data=empty)).load()


# -- malformed tasks are refused, naming the file and the task -----------------------------------------------


def good(id_: str = "a", **changes: Any) -> dict[str, Any]:
    return {"id": id_, "family": "f", "task": "Convert 1 km to m.", "check": {"kind": "number", "value": 1000}, **changes}


@pytest.mark.parametrize(
    ("second", "message"),
    [
        (good("b", check={"kind": "fuzzy", "value": 1}), r"task 2 \(id 'b'\): check: Input tag 'fuzzy' found .* does not match"),
        (good("b", check={"kind": "number"}), r"task 2 \(id 'b'\): check\.number\.value: Field required"),
        (good("b", check={"kind": "json_equals"}), r"task 2 \(id 'b'\): check\.json_equals\.value: Field required"),
        (good("a"), r"task 2 \(id 'a'\): id repeats task 1"),
        (
            good("b", check={"kind": "regex", "pattern": "(unclosed"}),
            r"task 2 \(id 'b'\): check\.regex\.pattern: .*not a regular expression",
        ),
        (
            good("b", check={"kind": "choice", "value": "Funday", "options": DAYS}),
            r"task 2 \(id 'b'\): check\.choice: .*'Funday' is not one of",
        ),
        (good("b", check={"kind": "number", "value": 5, "tolerance": -1}), r"task 2 \(id 'b'\): check\.number\.tolerance"),
        (good("b", check={"kind": "exact", "value": "x", "extra": 1}), r"task 2 \(id 'b'\): check\.exact\.extra: Extra inputs"),
        (good("b", family=""), r"task 2 \(id 'b'\): family: String should have at least 1 character"),
        (good("b", task=None), r"task 2 \(id 'b'\): task: Input should be a valid string"),
        (good("b", answer="999"), r"task 2 \(id 'b'\): .*refuses the task's own answer '999'"),
        (good("b b"), r"task 2 \(id 'b b'\): id: String should match pattern"),
        ({"family": "f", "task": "t", "check": {"kind": "number", "value": 1}}, r"task 2: id: Field required"),
        ("just text", r"task 2: Input should be a valid dictionary"),
    ],
)
def test_a_malformed_task_is_refused_naming_the_file_and_the_task(tmp_path: Path, second: Any, message: str) -> None:
    path = tmp_path / "tasks.yaml"
    path.write_text(yaml.safe_dump({"tasks": [good("a"), second]}))
    with pytest.raises(EvalDataError, match=message) as refused:
        load_tasks(path)
    assert str(path) in str(refused.value)


def test_every_problem_of_the_file_is_listed_at_once(tmp_path: Path) -> None:
    path = tmp_path / "tasks.yaml"
    path.write_text(yaml.safe_dump({"tasks": [good("a", family=""), good("b", check={"kind": "number"}), good("a")]}))
    with pytest.raises(EvalDataError) as refused:
        load_tasks(path)
    lines = str(refused.value).splitlines()
    assert [line.split(": ", 2)[1] for line in lines] == ["task 1 (id 'a')", "task 2 (id 'b')"]  # task 3 repeats an id never kept


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("tasks.yaml", "tasks: [a: [", r":1:\d+: yaml-syntax"),
        ("tasks.yaml", "tasks:\n  - id: a\n    id: b", r":3:5: duplicate-key: key 'id' appears twice"),
        ("tasks.json", '{"tasks": [{"id": "a", "id": "b"}]}', "key 'id' appears twice"),
        ("tasks.json", '{"tasks": [', "not valid JSON"),
        ("tasks.yaml", "- id: a", 'one key, "tasks"'),
        ("tasks.yaml", "tasks: []\nmore: 1", 'one key, "tasks"'),
        ("tasks.yaml", "tasks: []", "the task list is empty"),
        ("tasks.yaml", "", "the file holds no tasks"),
    ],
)
def test_a_malformed_file_is_refused_naming_it(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(EvalDataError, match=message) as refused:
        load_tasks(path)
    assert str(refused.value).startswith(f"{path}:")


def test_a_problem_of_a_yaml_file_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "tasks.yaml"
    path.write_text(
        "tasks:\n"
        "  - id: a\n"
        "    family: f\n"
        "    task: Say 7.\n"
        "    check: {kind: number, value: 7}\n"
        "  - id: b\n"
        "    family: f\n"
        "    task: Say 8.\n"
        "    check: {kind: number, value: 8, tolerance: -1}\n"
        "  - id: a\n"
        "    family: f\n"
        "    task: Say 9.\n"
        "    check: {kind: number, value: 9}\n"
    )
    with pytest.raises(EvalDataError) as refused:
        load_tasks(path)
    assert str(refused.value).splitlines() == [
        f"{path}:9: task 2 (id 'b'): check.number.tolerance: Input should be greater than or equal to 0",
        f"{path}:10: task 3 (id 'a'): id repeats task 1",
    ]


def test_a_missing_file_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(EvalDataError, match=r"missing\.yaml: cannot read"):
        load_tasks(tmp_path / "missing.yaml")


def test_the_command_refuses_malformed_tasks_before_any_model_call(tmp_path: Path) -> None:
    path = tmp_path / "tasks.yaml"
    path.write_text(yaml.safe_dump({"tasks": [good("a"), good("b", check={"kind": "number"})]}))
    with ScriptedOpenAIServer() as server:
        server.script(Rule(text="3000"))
        environment = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "test", "MNEMOFLOW_LLM_CACHE": "0"}
        try:
            arguments = ["eval", "gmemory", "--data", str(path), "--out", str(tmp_path / "r.json")]
            result = CliRunner().invoke(app, arguments, env=environment)
        finally:  # the command points logging at the runner's stream, closed once it returns
            structlog.reset_defaults()
            configure_logging(LogSettings(), force=True)
        assert server.request_count == 0
    assert result.exit_code != 0
    assert f"{path}:8: task 2 (id 'b'): check.number.value: Field required" in result.output
    assert not (tmp_path / "r.json").exists()


# -- the environment's checks -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("check", "answer", "passes"),
    [
        ({"kind": "number", "value": 3000}, "3000", True),
        ({"kind": "number", "value": 3000}, "3 km is 3,000 m", True),
        ({"kind": "number", "value": 3000}, "3000 m, that is 3 km", False),  # the last number counts
        ({"kind": "number", "value": 3000}, "three thousand", False),
        ({"kind": "number", "value": -4}, "It is -4.", True),
        ({"kind": "number", "value": 2.5, "tolerance": 0.1}, "about 2.56", True),
        ({"kind": "number", "value": 2.5, "tolerance": 0.01}, "about 2.56", False),
        ({"kind": "exact", "value": "nedrag"}, '  "Nedrag." ', True),
        ({"kind": "exact", "value": "nedrag"}, "The answer is nedrag", False),
        ({"kind": "exact", "value": "GOOD MORNING", "case_sensitive": True}, "good morning", False),
        ({"kind": "exact", "value": "GOOD MORNING", "case_sensitive": True}, "GOOD   MORNING", True),
        ({"kind": "choice", "value": "Thursday", "options": DAYS}, "It will be thursday.", True),
        ({"kind": "choice", "value": "Thursday", "options": DAYS}, "Monday, so Thursday", False),
        ({"kind": "choice", "value": "Thursday", "options": DAYS}, "Thursdays", False),
        ({"kind": "contains_all", "values": ["red", "blue"]}, "Blue and RED", True),
        ({"kind": "contains_all", "values": ["red", "blue"]}, "red only", False),
        ({"kind": "regex", "pattern": r"A\. ?L\. ?K\."}, " 'A.L.K.' ", True),
        ({"kind": "regex", "pattern": r"A\. ?L\. ?K\."}, "Initials: A. L. K.", False),  # the whole answer must match
        ({"kind": "regex", "pattern": "yes", "ignore_case": True}, "YES", True),
        ({"kind": "json_equals", "value": [2, 4, 7, 9]}, "```json\n[2, 4, 7, 9]\n```", True),
        ({"kind": "json_equals", "value": [2, 4, 7, 9]}, "Sorted: [2, 4, 7, 9].", True),
        ({"kind": "json_equals", "value": [2, 4, 7, 9]}, "[2, 4, 9, 7]", False),
        ({"kind": "json_equals", "value": {"age": 36, "name": "Ada"}}, '{"name": "Ada", "age": 36.0}', True),
        ({"kind": "json_equals", "value": {"age": 36, "name": "Ada"}}, '{"name": "Ada", "age": "36"}', False),
        ({"kind": "json_equals", "value": [1, 0]}, "[true, false]", False),
        ({"kind": "json_equals", "value": [1]}, "no JSON here", False),
    ],
)
def test_a_check_judges_an_answer(check: dict[str, Any], answer: str, passes: bool) -> None:
    assert verdict(check, answer) is passes


def test_a_failed_check_says_what_it_expected_and_what_it_got() -> None:
    number = CHECK.validate_python({"kind": "number", "value": 48}).verdict("4 x 12 = 48 eggs in 4 boxes")
    assert number.model_dump() == {
        "success": False,
        "feedback": "The answer does not meet the goal: expected the number 48, got 4.",
    }
    choice = CHECK.validate_python({"kind": "choice", "value": "Monday", "options": DAYS}).verdict("Friday or Monday")
    assert choice.feedback.endswith("got Monday, Friday.")
    assert CHECK.validate_python({"kind": "exact", "value": "x"}).verdict("x").feedback == "The answer meets the goal."


def test_json_equality_keeps_booleans_apart_from_numbers() -> None:
    assert same_json({"a": [1, 2.0, None]}, {"a": [1.0, 2, None]})
    assert not same_json(True, 1) and not same_json([0], [False]) and not same_json({"a": 1}, {"a": 1, "b": 1})
    assert not same_json("1", 1) and same_json(True, True)


# -- scores by position -----------------------------------------------------------------------------------------


def attempts(outcomes: list[tuple[str, float]]) -> list[Attempt]:
    return [
        Attempt(Item(f"t{n}", None, group), "gmemory", Outcome(score, {"success": score}), Reading(), 0.0)
        for n, (group, score) in enumerate(outcomes)
    ]


def test_success_is_reported_by_third_of_the_sequence_overall_and_per_family() -> None:
    scores = position_scores(attempts([("a", 0), ("b", 0), ("a", 1), ("b", 0), ("a", 1), ("b", 1)]))
    assert scores == {
        "success_first_third": 0.0,
        "success_middle_third": 0.5,
        "success_last_third": 1.0,
        "success_change_first_to_last_third": 1.0,
        "success_by_family": {"a": 0.6667, "b": 0.3333},
        "success_by_family_and_third": {
            "a": {"first_third": 0.0, "middle_third": 1.0, "last_third": 1.0},
            "b": {"first_third": 0.0, "middle_third": 0.0, "last_third": 1.0},
        },
    }


def test_thirds_of_a_short_sequence() -> None:
    four = position_scores(attempts([("a", 1), ("a", 1), ("a", 0), ("a", 0)]))
    assert (four["success_first_third"], four["success_middle_third"], four["success_last_third"]) == (1.0, 0.0, 0.0)
    one = position_scores(attempts([("a", 1)]))
    assert one["success_first_third"] == 1.0 and one["success_last_third"] is None
    assert "success_change_first_to_last_third" not in one


# -- the task graph cut at the environment --------------------------------------------------------------------


def test_the_task_graph_is_cut_after_the_team_keeping_the_shipped_nodes_and_settings() -> None:
    shipped = load_graph("gmemory-task")
    act, evolve = cut_at_environment(shipped, SMALL_MODEL_RETRIEVAL, SMALL_MODEL_EVOLUTION)
    assert list(act.spec.nodes) == ["retrieve", "team"] and set(act.subgraphs) == {"retrieve", "team"}
    assert [(e.from_, e.to) for e in act.spec.edges] == [("START", "retrieve"), ("retrieve", "team"), ("team", "END")]
    uses = ["gmemory.record", "gmemory.learn", "gmemory.credit", "gmemory.revise", "gmemory.merge"]
    assert [n.use for n in evolve.spec.nodes.values()] == uses
    assert evolve.subgraphs == {}
    for name, node in evolve.spec.nodes.items():
        assert node.with_ == {**shipped.spec.nodes[name].with_, **SMALL_MODEL_EVOLUTION.get(name, {})}
    retrieval, shipped_retrieval = act.subgraphs["retrieve"].spec.nodes, shipped.subgraphs["retrieve"].spec.nodes
    for name, node in retrieval.items():
        assert node.with_ == {**shipped_retrieval[name].with_, **SMALL_MODEL_RETRIEVAL.get(name, {})}
    assert act.subgraphs["team"] is shipped.subgraphs["team"]
    assert shipped.spec.nodes["revise"].with_["samples"] == 5  # the shipped graph itself is untouched
    unchanged, _ = cut_at_environment(shipped, {}, {})
    assert unchanged.subgraphs["retrieve"].spec == shipped.subgraphs["retrieve"].spec


def test_a_task_graph_that_is_not_a_chain_through_retrieval_and_the_team_is_refused() -> None:
    shipped = load_graph("gmemory-task")
    edges = [
        EdgeSpec.model_validate(e)
        for e in ({"from": "START", "to": "team"}, {"from": "team", "to": "retrieve"}, {"from": "retrieve", "to": "record"})
    ]
    swapped = replace(shipped, spec=shipped.spec.model_copy(update={"edges": edges + list(shipped.spec.edges[3:])}))
    with pytest.raises(ConfigError, match="cannot cut it"):
        cut_at_environment(swapped, {}, {})
    branched = replace(
        shipped,
        spec=shipped.spec.model_copy(
            update={"edges": [*shipped.spec.edges, EdgeSpec.model_validate({"from": "team", "to": "END"})]}
        ),
    )
    with pytest.raises(ConfigError, match="cannot cut it"):
        cut_at_environment(branched, {}, {})


# -- whole evaluations on the scripted server ---------------------------------------------------------------------

SOLVER, CRITIC = "You are the solver", "You are the critic"
EVOLUTION_REPLIES = [
    Rule(system="You summarize how a team", json={"steps": ["Convert the units."]}),
    Rule(system="A team of agents failed", json={"reason": "It named two days."}),
    Rule(system="You judge how useful", json={"ratings": [{"index": 1, "score": 8}]}),
    Rule(system="You are an agent designed to score", text="8"),
    Rule(system="You condense the record", json={"keep": [1]}),
    Rule(system="You distil one lesson", json={"text": "Give the result alone, because a check reads it."}),
]


def write_tasks(path: Path, *tasks: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({"tasks": list(tasks)}))
    return path


def settings_for(server: ScriptedOpenAIServer) -> Settings:
    return Settings(
        openai=OpenAISettings(base_url=server.base_url, api_key="test"),
        llm=LLMSettings(cache=False, initial_backoff=0.0, max_backoff=0.01),
    )


async def queries(path: Path, namespace: str) -> dict[str, dict[str, Any]]:
    async with SQLiteStore(path, embedding_model=EMBEDDER.model, embedding_dimension=EMBEDDER.dimension) as store:
        found = await store.list_nodes(namespace, kind=QUERY)
    return {str(q.properties["task_key"]): q.properties for q in found}


async def test_memory_learns_the_verdict_that_is_scored_and_only_the_memory_system_has_it(tmp_path: Path) -> None:
    data = write_tasks(
        tmp_path / "tasks.yaml",
        good("km-3", task="Convert 3 kilometres to metres.", check={"kind": "number", "value": 3000}),
        good(
            "day", family="days", task="Name the day after Monday.", check={"kind": "choice", "value": "Tuesday", "options": DAYS}
        ),
        good("km-5", task="Convert 5 kilometres to metres.", check={"kind": "number", "value": 5000}),
    )
    evaluation = GMemoryEvaluation(EvalOptions(data=data, systems=("gmemory", "no_memory")))
    items = evaluation.select(evaluation.load())
    with ScriptedOpenAIServer() as server:
        server.script(Rule(system=SOLVER, user="3 kilometres", text="3000"))
        server.script(Rule(system=SOLVER, user="Name the day", text="Tuesday or Wednesday"))  # the check refuses it at every step
        server.script(Rule(system=SOLVER, user="5 kilometres", text="5000"))
        server.script(Rule(system=CRITIC, json={"approve": True, "feedback": "Fine."}), *EVOLUTION_REPLIES)
        result = await evaluate(evaluation, items, settings_for(server), tmp_path)
        solver_prompts = [
            r["body"]["messages"] for r in server.requests if SOLVER in str(r["body"].get("messages", [{}])[0].get("content"))
        ]

    per_item = {(a["item"], a["system"]): a for a in result["per_item"]}
    for system in ("gmemory", "no_memory"):
        assert result["systems"][system]["score"] == pytest.approx(2 / 3, abs=1e-4)
        assert [per_item[(i, system)]["scores"]["success"] for i in ("km-3", "day", "km-5")] == [1.0, 0.0, 1.0]
    refused = per_item[("day", "gmemory")]["detail"]
    assert refused["answer"] == "Tuesday or Wednesday" and "got Tuesday, Wednesday" in refused["feedback"]
    # the check is the team's environment: a right answer ends the episode at once, a refused one is tried again
    # (rounds remain), and the same answer again changes nothing
    for system in ("gmemory", "no_memory"):
        assert [per_item[(i, system)]["detail"]["rewards"] for i in ("km-3", "day", "km-5")] == [[1], [0, -1], [1]]

    recorded = await queries(tmp_path / "memory.db", "eval-gmemory-gmemory")
    assert {key: q["status"] for key, q in recorded.items()} == {"km-3": "resolved", "day": "failed", "km-5": "resolved"}
    assert recorded["day"]["feedback"] == refused["feedback"]  # the memory holds the scored verdict
    assert "Wednesday" in recorded["day"]["trajectory"] and recorded["day"]["trajectory"].count("solver ->") == 1  # step 2 dropped
    assert await queries(tmp_path / "memory.db", "eval-gmemory-no-memory") == {}

    assert len(solver_prompts) == 8  # per task: gmemory, then no_memory; two steps on the refused task
    assert solver_prompts[0] == solver_prompts[1]  # nothing remembered yet: the same team, the same prompt
    assert "Observation: The goal is not reached yet." in solver_prompts[3][1]["content"]  # the refusal, not the answer
    assert "Tuesday" not in solver_prompts[3][1]["content"].replace("Tuesday or Wednesday", "")
    assert "From earlier tasks" not in str(solver_prompts[7]) and solver_prompts[7][1] == solver_prompts[6][1]
    remembered = solver_prompts[6][0]["content"]
    assert "From earlier tasks" in remembered and "Convert 3 kilometres to metres." in remembered
    assert per_item[("km-5", "gmemory")]["detail"]["memory"]["successes"] >= 1
    assert result["systems"]["gmemory"]["scores"]["evolution_failures"] == 0
    assert result["data"]["tasks"] == 3 and result["data"]["budgets"]["retrieval"] == "as shipped"


async def test_the_rate_each_system_rates_every_candidate_in_a_call_of_its_own(tmp_path: Path) -> None:
    data = write_tasks(
        tmp_path / "tasks.yaml",
        good("km-3", task="Convert 3 kilometres to metres.", check={"kind": "number", "value": 3000}),
        good("km-5", task="Convert 5 kilometres to metres.", check={"kind": "number", "value": 5000}),
    )
    evaluation = GMemoryEvaluation(EvalOptions(data=data, systems=("gmemory", "gmemory_rate_each")))
    items = evaluation.select(evaluation.load())
    with ScriptedOpenAIServer() as server:
        server.script(Rule(system=SOLVER, user="3 kilometres", text="3000"))
        server.script(Rule(system=SOLVER, user="5 kilometres", text="5000"), *EVOLUTION_REPLIES)
        result = await evaluate(evaluation, items, settings_for(server), tmp_path)
        systems_asked = [str(r["body"]["messages"][0]["content"]) for r in server.requests]

    assert set(result["systems"]) == {"gmemory", "gmemory_rate_each"}
    # the second task has one earlier success to rate: one batched call for gmemory, one per candidate for the other
    assert sum(s.startswith("You judge how useful") for s in systems_asked) == 1
    rate_each = [s for s in systems_asked if s.startswith("You are an agent designed to score")]
    assert len(rate_each) == 1
    per_item = {(a["item"], a["system"]): a for a in result["per_item"]}
    for system in ("gmemory", "gmemory_rate_each"):
        assert per_item[("km-5", system)]["detail"]["memory"]["successes"] == 1
        assert result["systems"][system]["scores"]["evolution_failures"] == 0


async def test_an_unreadable_critique_fails_the_attempt_and_an_unreadable_summary_only_the_memory(tmp_path: Path) -> None:
    data = write_tasks(
        tmp_path / "tasks.yaml",
        good("km", task="Convert 3 kilometres to metres.", check={"kind": "number", "value": 3000}),
        good(
            "day", family="days", task="Name the day after Monday.", check={"kind": "choice", "value": "Tuesday", "options": DAYS}
        ),
    )
    evaluation = GMemoryEvaluation(EvalOptions(data=data))
    with ScriptedOpenAIServer() as server:
        server.script(Rule(system=SOLVER, user="3 kilometres", text="3000"))
        server.script(Rule(system=SOLVER, user="Name the day", text="Monday"))  # refused: the critic is asked
        server.script(Rule(system=CRITIC, user="3 kilometres", json={"approve": True, "feedback": "Fine."}))
        server.script(Rule(system=CRITIC, user="Name the day", text="I cannot say."))
        server.script(Rule(system="You summarize how a team", text="no JSON at all"), *EVOLUTION_REPLIES[1:])
        result = await evaluate(evaluation, evaluation.load(), settings_for(server), tmp_path)

    per_item = {(a["item"], a["system"]): a for a in result["per_item"]}
    kept = per_item[("km", "gmemory")]
    assert kept["score"] == 1.0 and "evolution_error" in kept["detail"] and "error" not in kept
    assert result["systems"]["gmemory"]["scores"]["evolution_failures"] == 1
    for system in ("gmemory", "no_memory"):
        failed = per_item[("day", system)]
        assert failed["score"] == 0.0 and failed["scores"] == {"success": 0.0} and failed["detail"]["failed"] is True
        assert "error" in failed and result["systems"][system]["failed"] == 1
