"""The L2MAC evaluation: its specifications, what it refuses, how it scores, and its two systems on a scripted model.

The data is checked where it could silently mislead: every bundled specification's hidden tests pass on its
reference solution and fail on an empty project, its output is larger than the run's context window while each
instruction fits, and a model that writes the reference instruction by instruction finishes with L2MAC but not with
the whole history in the same window. Nothing here runs the real model (tests/test_eval.py does, for every
mechanism).
"""

from __future__ import annotations

import asyncio
import copy
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from mnemoflow.evaluation import evaluation_class
from mnemoflow.evaluation import l2mac as l2mac_evaluation
from mnemoflow.evaluation.harness import EvalDataError, EvalOptions, Item, evaluate
from mnemoflow.evaluation.hidden_tests import run_acceptance
from mnemoflow.evaluation.l2mac import (
    CONTEXT_WINDOW,
    SMALL_MODEL_CAPS,
    L2macEvaluation,
    Program,
    ProgramSpec,
    instruction_tokens,
    output_tokens,
    system_graph,
)
from mnemoflow.graphs import LoadedGraph, with_node_config
from mnemoflow.settings import LLMSettings, OpenAISettings, Settings
from tests.support.l2mac_model import instruction_turn
from tests.support.openai_server import Calls, Reply, ScriptedOpenAIServer

Spec = dict[str, Any]


@cache
def bundled() -> list[Item]:
    return L2macEvaluation(EvalOptions()).load()


@cache
def _parsed(spec_id: str) -> Spec:
    program: Program = next(item.data for item in bundled() if item.id == spec_id)
    data: Spec = yaml.load(Path(program.source).read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return data


def raw_spec(spec_id: str = "todo-cli") -> Spec:
    """A bundled specification file as data, to break in one place."""
    return copy.deepcopy(_parsed(spec_id))


def write_spec(folder: Path, data: Any, name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.dump(data, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False), encoding="utf-8")
    return path


def load(data: Path) -> list[Item]:
    return L2macEvaluation(EvalOptions(data=data)).load()


# -- the bundled data ----------------------------------------------------------------------------------------------


def test_the_bundled_specifications_are_three_families_larger_than_the_window() -> None:
    evaluation = evaluation_class("l2mac")(EvalOptions(quick=True))
    items = evaluation.load()
    assert len(items) >= 3 and len({item.group for item in items}) >= 3
    assert len(evaluation.select(items)) == 3
    for item in items:
        program: Program = item.data
        assert item.id == program.spec.id and item.group == program.spec.family
        assert len(program.spec.instructions) >= 5 and len(program.tests) >= 10
        assert program.output_tokens == output_tokens(program.spec.reference) > CONTEXT_WINDOW
        assert max(program.instruction_tokens) <= CONTEXT_WINDOW
    described = evaluation.describe()
    assert described["context_window"] == CONTEXT_WINDOW
    assert [spec["id"] for spec in described["specifications"]] == [item.id for item in items]
    assert all(spec["reference_over_window"] > 1 for spec in described["specifications"])


async def test_hidden_tests_pass_on_each_reference_and_fail_on_an_empty_project(tmp_path: Path) -> None:
    programs: list[Program] = [item.data for item in bundled()]
    for program in programs:
        for path, content in program.spec.reference.items():
            (tmp_path / program.spec.id / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / program.spec.id / path).write_text(content, encoding="utf-8")
    runs = [
        run_acceptance(tmp_path / project, program.spec.hidden_tests, tmp_path / f"acceptance-{project}")
        for program in programs
        for project in (program.spec.id, f"empty-{program.spec.id}")
    ]
    results = await asyncio.gather(*runs)
    for program, solved, empty in zip(programs, results[::2], results[1::2], strict=True):
        assert solved.failed == {} and sorted(solved.passed) == sorted(program.tests), program.spec.id
        assert empty.passed == () and set(empty.failed) == set(program.tests), program.spec.id
        reasons = list(empty.failed.values())
        assert all(reasons) and sum("No module named" in why for why in reasons) >= len(reasons) - 1  # one runs python -m
        assert not list((tmp_path / program.spec.id).rglob("test_acceptance*"))  # the hidden tests stay outside


# -- malformed data ------------------------------------------------------------------------------------------------


def _set(key: str, value: Any) -> Callable[[Spec], None]:
    return lambda spec: spec.__setitem__(key, value)


def _first_instruction(**changes: Any) -> Callable[[Spec], None]:
    return lambda spec: spec["instructions"][0].update(changes)


def _reference(path: str, content: str) -> Callable[[Spec], None]:
    return lambda spec: spec["reference"].__setitem__(path, content)


def _shrink(spec: Spec) -> None:
    spec["reference"] = {path: "x = 1\n" for path in spec["reference"]}


def _giant_first_file(spec: Spec) -> None:
    spec["reference"]["todo/model.py"] += "".join(f"VALUE_{n} = {n}\n" for n in range(700))


def _rename_written(spec: Spec) -> None:
    spec["reference"]["../escape.py"] = "x = 1\n"
    spec["instructions"][0]["writes"].append("../escape.py")


def _unwritten(spec: Spec) -> None:
    spec["reference"]["extra.py"] = "x = 1\n"


def _second_instruction_also_writes_the_model(spec: Spec) -> None:
    spec["instructions"][1]["writes"].append("todo/model.py")


def _unnormal(spec: Spec) -> None:
    spec["reference"]["./todo/extra.py"] = "x = 1\n"
    spec["instructions"][0]["writes"].append("./todo/extra.py")


MALFORMED: list[tuple[str, Callable[[Spec], None], str]] = [
    ("no hidden tests", lambda spec: spec.pop("hidden_tests"), "hidden_tests: Field required"),
    ("empty hidden tests", _set("hidden_tests", {}), "hidden_tests: Dictionary should have at least 1 item"),
    ("a hidden file without tests", _set("hidden_tests", {"test_a.py": "def helper():\n    pass\n"}), "defines no test"),
    ("a hidden file that does not parse", _set("hidden_tests", {"test_a.py": "def test_x(:\n"}), "test_a.py line 1"),
    ("a hidden file badly named", _set("hidden_tests", {"checks.py": "def test_x():\n    pass\n"}), "name it test_<name>.py"),
    (
        "a hidden test twice",
        _set("hidden_tests", {"test_a.py": "def test_x():\n    pass\n\n\ndef test_x():\n    pass\n"}),
        "more than once",
    ),
    ("a reference that does not parse", _reference("todo/model.py", "def broken(:\n"), "reference todo/model.py line 1"),
    ("a reference path outside the root", _rename_written, "climbs out of the project's root"),
    ("a reference path not normalized", _unnormal, "write it as 'todo/extra.py'"),
    (
        "an instruction writing a file the reference lacks",
        _first_instruction(writes=["todo/missing.py"]),
        "which the reference does not hold",
    ),
    ("a reference file no instruction writes", _unwritten, "no instruction writes the reference file(s) extra.py"),
    (
        "a file two instructions write",
        _second_instruction_also_writes_the_model,
        "more than one instruction writes todo/model.py",
    ),
    ("a blank instruction", _first_instruction(text="   "), "instructions.0.text: String should have at least 1 character"),
    (
        "one instruction",
        lambda spec: spec.__setitem__("instructions", spec["instructions"][:1]),
        "instructions: List should have at least 2 items",
    ),
    ("a missing task", lambda spec: spec.pop("task"), "task: Field required"),
    ("an unknown key", _set("deadline", "soon"), "deadline: Extra inputs are not permitted"),
    ("an output within the window", _shrink, "within the context window of"),
    ("an instruction larger than the window", _giant_first_file, "instruction 1 needs about"),
]


@pytest.mark.parametrize(("mutate", "problem"), [case[1:] for case in MALFORMED], ids=[case[0] for case in MALFORMED])
def test_a_malformed_specification_is_refused_naming_the_file_and_the_specification(
    tmp_path: Path, mutate: Callable[[Spec], None], problem: str
) -> None:
    spec = raw_spec()
    mutate(spec)
    path = write_spec(tmp_path, spec)
    with pytest.raises(EvalDataError) as refused:
        load(path)
    message = str(refused.value)
    assert message.startswith(f"{path}: specification 'todo-cli': "), message
    assert problem in message, message


def test_every_problem_of_a_specification_is_named_at_once(tmp_path: Path) -> None:
    spec = raw_spec()
    spec["reference"]["todo/model.py"] = "def broken(:\n"
    spec["hidden_tests"]["helpers.py"] = "x = 1\n"
    with pytest.raises(EvalDataError) as refused:
        load(write_spec(tmp_path, spec))
    assert "reference todo/model.py line 1" in str(refused.value) and "'helpers.py': name it" in str(refused.value)


def test_a_specification_without_an_id_is_named_by_its_position(tmp_path: Path) -> None:
    spec = raw_spec()
    spec["id"] = "Todo CLI"
    write_spec(tmp_path, raw_spec("unit-converter"), "a.yaml")
    second = write_spec(tmp_path, spec, "b.yaml")
    with pytest.raises(EvalDataError, match=re.escape(f"{second}: specification 'Todo CLI': id: String should match")):
        load(tmp_path)
    spec.pop("id")
    write_spec(tmp_path, spec, "b.yaml")
    with pytest.raises(EvalDataError, match=re.escape(f"{second}: specification #2 (no id): id: Field required")):
        load(tmp_path)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("id: [never closed\n", "specification #1: not valid YAML"),
        ("- a list\n- not a mapping\n", "specification #1: expected a mapping"),
    ],
)
def test_a_file_that_is_not_a_specification_is_refused(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(EvalDataError, match=re.escape(f"{path}: {problem}")):
        load(path)


def test_two_specifications_with_one_id_and_folders_without_any_are_refused(tmp_path: Path) -> None:
    write_spec(tmp_path, raw_spec(), "a.yaml")
    twin = write_spec(tmp_path, raw_spec(), "b.yaml")
    with pytest.raises(
        EvalDataError, match=re.escape(f"{twin}: specification 'todo-cli': the id is used by {tmp_path / 'a.yaml'} too")
    ):
        load(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvalDataError, match="no specification files"):
        load(tmp_path / "empty")
    with pytest.raises(EvalDataError, match="no such file or folder"):
        load(tmp_path / "absent")
    assert [item.id for item in load(tmp_path / "a.yaml")] == ["todo-cli"]  # one file is a data set too


async def test_malformed_data_stops_the_evaluation_before_any_model_call(tmp_path: Path) -> None:
    spec = raw_spec()
    spec["hidden_tests"] = {}
    path = write_spec(tmp_path, spec)
    with ScriptedOpenAIServer() as server:
        server.script(text="never asked")
        evaluation = L2macEvaluation(EvalOptions(data=path))
        with pytest.raises(EvalDataError):
            await evaluate(evaluation, evaluation.select(evaluation.load()), scripted_settings(server), tmp_path / "work")
        assert server.request_count == 0
    assert not (tmp_path / "work").exists()


# -- scoring -------------------------------------------------------------------------------------------------------


def test_instruction_sizes_grow_with_what_they_write_and_what_came_before() -> None:
    spec = ProgramSpec.model_validate(raw_spec())
    base = instruction_tokens(spec, 1)
    assert instruction_tokens(spec, 1, reply_tokens=0) == base - 1_000  # the guard's room for a reply
    bigger = spec.model_copy(deep=True)
    bigger.reference["todo/store.py"] += "# more\n" * 50
    assert instruction_tokens(bigger, 1) == base + 200  # '#', 'more' and the escaped newline '\', 'n' per line
    assert instruction_tokens(bigger, 0) == instruction_tokens(spec, 0)  # instruction 1 does not write it
    assert output_tokens({"a.py": "x = 1\n", "b.md": "two words"}) == 5


# -- the systems ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("small_model", [False, True])
def test_the_two_systems_run_the_same_graph_but_for_the_history(small_model: bool) -> None:
    mechanism, baseline = (system_graph(name, small_model=small_model) for name in ("l2mac", "whole_history"))
    assert mechanism.spec.nodes["start_instruction"].with_ == {"keep_history": False}
    assert baseline.spec.nodes["start_instruction"].with_ == {"keep_history": True}
    for name in set(mechanism.spec.nodes) - {"start_instruction"}:
        assert mechanism.spec.nodes[name] == baseline.spec.nodes[name], name
    caps = {name: mechanism.spec.nodes[name].with_ for name in SMALL_MODEL_CAPS}
    if small_model:
        assert all(caps[name].items() >= values.items() for name, values in SMALL_MODEL_CAPS.items())
    else:
        assert caps["call_model"]["max_turns"] == 40 and caps["summarize_overflow"]["max_restarts"] == 30
    with pytest.raises(ValueError, match="unknown system"):
        system_graph("single_shot", small_model=small_model)


def scripted_settings(server: ScriptedOpenAIServer) -> Settings:
    return Settings(
        openai=OpenAISettings(base_url=server.base_url, api_key="test"),
        llm=LLMSettings(model="scripted", initial_backoff=0.0, max_backoff=0.01),
    )


class ReferenceModel:
    """Writes each instruction's reference files and declares the step complete in one turn; summarizes on request."""

    def __init__(self, spec: ProgramSpec) -> None:
        self.spec = spec

    def __call__(self, body: dict[str, Any]) -> Reply:
        messages: list[dict[str, Any]] = body["messages"]
        if not body.get("tools"):
            return "Progress: some files are written." if "context window is full" in messages[-1]["content"] else "Done."
        index, _, turns = instruction_turn(messages)
        if turns:
            return Calls(("step_complete", {}))
        files = [{"path": path, "content": self.spec.reference[path]} for path in self.spec.instructions[index].writes]
        return Calls(("write_files", {"files": files}), ("step_complete", {}))


async def test_a_model_writing_the_reference_finishes_with_l2mac_but_not_with_the_whole_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def without_project_tests(system: str, *, small_model: bool) -> LoadedGraph:
        """The systems' graphs with the checks compiling but neither running pylint nor the project's own tests (they
        pass: the model writes the reference), which would cost a sandboxed pylint and pytest run per instruction."""
        config = {"run_tools": {"tests": False, "checker": "compile"}}
        return with_node_config(system_graph(system, small_model=small_model), config)

    monkeypatch.setattr(l2mac_evaluation, "system_graph", without_project_tests)
    evaluation = L2macEvaluation(EvalOptions())
    item = next(item for item in evaluation.load() if item.id == "todo-cli")
    program: Program = item.data
    with ScriptedOpenAIServer() as server:
        server.script(respond=ReferenceModel(program.spec))
        result = await evaluate(evaluation, [item], scripted_settings(server), tmp_path)
        sent = server.request_count
    l2mac, baseline = (next(entry for entry in result["per_item"] if entry["system"] == name) for name in evaluation.systems)
    assert l2mac["scores"] == {
        "pass_rate": 1.0, "all_pass": 1.0, "files_written": len(program.spec.reference), "instructions_done": 1.0, "finished": 1.0,
    }  # fmt: skip
    assert l2mac["detail"]["failed_tests"] == {} and l2mac["detail"]["passed"] == len(program.tests)
    assert l2mac["detail"]["peak_context_tokens"] <= CONTEXT_WINDOW
    assert "gave_up" not in l2mac["detail"]
    assert "overflowed" in baseline["detail"]["gave_up"] and baseline["scores"]["finished"] == 0.0
    assert 0.0 < baseline["scores"]["instructions_done"] < 1.0
    assert 0.0 < baseline["score"] < 1.0 and baseline["scores"]["files_written"] < len(program.spec.reference)
    started = l2mac["detail"]["instructions"]
    assert len(started) == len(program.spec.instructions) and all(status["status"] == "done" for status in started)
    assert l2mac["calls"] + baseline["calls"] == sent and baseline["calls"] > 0
    assert l2mac["prompt_tokens"] > 0 and baseline["prompt_tokens"] > 0
    systems = result["systems"]
    assert systems["l2mac"]["scores"]["tests_passed"] == systems["l2mac"]["scores"]["tests_total"] == len(program.tests)
    assert set(evaluation.failure(item, "l2mac").scores) == set(l2mac["scores"]) and evaluation.failure(item, "l2mac").score == 0.0
