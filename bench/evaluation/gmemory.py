"""G-Memory against the same team without memory: does the team's success rise as the tasks accumulate?

The data is a sequence of small tasks in families of similar tasks (``data/gmemory/tasks.yaml``), interleaved so
each family recurs through the sequence. Each task carries an environment check, a declarative test of the team's
final answer (:data:`Check`). Two systems run every task in order:

- ``gmemory``: the shipped ``gmemory-task`` graph in its own namespace, so its memory grows over the sequence. It
  runs in two parts cut at the environment: retrieval and the team (``retrieve``, ``team``), then, once the task's
  check has judged the answer, the evolution steps (``record``, ``credit``, ``revise``, ``merge``) with that
  verdict as the task's ``success`` and ``feedback``. The team's own check (the answer contains ``expected``) only
  knows substrings; cutting the graph there lets the memory learn from the very verdict that is scored, as in the
  paper, where the environment's reward decides what the memory credits. The nodes and their settings are the
  shipped graph's.
- ``no_memory``: the ``team`` graph alone, the same solver and critic with the same prompts and rounds and an
  empty memory.

Scores: ``success`` (0/1, the check's verdict), and by position: the success rate of the first, middle and last
third of the sequence, overall and per family, so a reader sees whether it rises as the memory grows.
"""

from __future__ import annotations

import json
import math
import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, field_validator, model_validator

from mnemoflow.errors import ConfigError
from mnemoflow.evaluation.harness import (
    FAILED_ATTEMPT,
    Attempt,
    Bench,
    EvalDataError,
    EvalOptions,
    Evaluation,
    Item,
    Outcome,
    mean,
)
from mnemoflow.llm.parsing import extract_json

if TYPE_CHECKING:
    from mnemoflow.graphs.loader import LoadedGraph

__all__ = [
    "EVALUATION",
    "Check",
    "GMemoryEvaluation",
    "Task",
    "Verdict",
    "cut_at_environment",
    "data_file",
    "load_tasks",
    "position_scores",
    "same_json",
]

DATA_FILES = ("tasks.yaml", "tasks.yml", "tasks.json")
"""What a data folder is searched for, in this order."""

SMALL_MODEL_ROUNDS = 1
"""Team rounds on the local 135M model: a second round doubles the time and its critic rarely helps there."""
SMALL_MODEL_RETRIEVAL: dict[str, dict[str, Any]] = {
    "seed": {"successful_topk": 1, "failed_topk": 1},
    "split": {"successful_topk": 1, "failed_topk": 1},
    "rate": {"successful_topk": 1, "failed_topk": 1},
    "sparsify": {"max_utterances": 4},
}
"""Retrieval on the local model: one similar success and one failure, each condensed from its first 4 messages."""
SMALL_MODEL_EVOLUTION: dict[str, dict[str, Any]] = {"revise": {"samples": 1}}
"""Evolution on the local model: a revision every 5 tasks (as shipped) draws one task instead of five."""

ENVIRONMENT_CUT = "team"
"""The node of ``gmemory-task`` after which the environment judges the answer."""
THIRDS = ("first_third", "middle_third", "last_third")


# -- the environment: checks of an answer ----------------------------------------------------------------------


class Verdict(BaseModel):
    """What the environment says of an answer."""

    success: bool
    feedback: str


class _Check(BaseModel, ABC):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def verdict(self, answer: str) -> Verdict:
        """Success or not, with feedback naming what was expected and what was found: the team's own check words a
        failure the same way, and G-Memory keeps the feedback with the task, so a later team can see what went wrong."""
        passed, found = self._judge(answer)
        if passed:
            return Verdict(success=True, feedback="The answer meets the goal.")
        return Verdict(success=False, feedback=f"The answer does not meet the goal: expected {self.describe()}, {found}.")

    @abstractmethod
    def describe(self) -> str:
        """What the check expects, in words."""

    @abstractmethod
    def _judge(self, answer: str) -> tuple[bool, str]:
        """Whether ``answer`` passes, and what was found in it (``got ...``)."""


_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_QUOTES = "\"'`“”‘’"


def _bare(answer: str) -> str:
    """The answer without outer spaces and quotes, its inner spaces collapsed."""
    return " ".join(answer.split()).strip(_QUOTES + " ")


def _shown(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


class NumberCheck(_Check):
    """The last number in the answer is within ``tolerance`` of ``value``: a worked answer ends on its result, so
    the numbers of the working before it do not count."""

    kind: Literal["number"]
    value: float
    tolerance: float = Field(0.0, ge=0)

    @field_validator("value")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    def describe(self) -> str:
        number = f"{self.value:g}"
        return f"the number {number}" + (f" (within {self.tolerance:g})" if self.tolerance else "")

    def _judge(self, answer: str) -> tuple[bool, str]:
        numbers = _NUMBER.findall(answer)
        if not numbers:
            return False, "got no number"
        last = float(numbers[-1].replace(",", ""))
        return abs(last - self.value) <= self.tolerance, f"got {last:g}"


class ExactCheck(_Check):
    """The answer is ``value``, outer spaces, quotes and one final period aside (and case, unless ``case_sensitive``)."""

    kind: Literal["exact"]
    value: str = Field(min_length=1)
    case_sensitive: bool = False

    def describe(self) -> str:
        return f"exactly {self.value!r}" + (" (case counts)" if self.case_sensitive else "")

    def _judge(self, answer: str) -> tuple[bool, str]:
        given = _bare(answer)
        given = given[:-1].rstrip(_QUOTES + " ") if given.endswith(".") and not self.value.endswith(".") else given
        same = given == self.value if self.case_sensitive else given.casefold() == self.value.casefold()
        return same, f"got {_shown(given)}"


class ChoiceCheck(_Check):
    """The answer names ``value`` and no other of ``options`` (whole words, case aside)."""

    kind: Literal["choice"]
    value: str = Field(min_length=1)
    options: list[str] = Field(min_length=2)

    @model_validator(mode="after")
    def _value_among_options(self) -> ChoiceCheck:
        folded = [option.casefold() for option in self.options]
        if len(set(folded)) != len(folded):
            raise ValueError("options repeat")
        if self.value.casefold() not in folded:
            raise ValueError(f"value {self.value!r} is not one of the options")
        return self

    def describe(self) -> str:
        return f"{self.value!r} and no other of {', '.join(self.options)}"

    def _judge(self, answer: str) -> tuple[bool, str]:
        named = [o for o in self.options if re.search(rf"(?<!\w){re.escape(o)}(?!\w)", answer, re.IGNORECASE)]
        right = [o.casefold() for o in named] == [self.value.casefold()]
        return right, f"got {', '.join(named)}" if named else "got none of them"


class ContainsAllCheck(_Check):
    """The answer contains every one of ``values`` (case aside)."""

    kind: Literal["contains_all"]
    values: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)

    def describe(self) -> str:
        return "all of " + ", ".join(repr(value) for value in self.values)

    def _judge(self, answer: str) -> tuple[bool, str]:
        missing = [value for value in self.values if value.casefold() not in answer.casefold()]
        return not missing, "missing " + ", ".join(repr(value) for value in missing)


class RegexCheck(_Check):
    """The whole answer, outer spaces and quotes aside, matches ``pattern``."""

    kind: Literal["regex"]
    pattern: str = Field(min_length=1)
    ignore_case: bool = False

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from exc
        return pattern

    def describe(self) -> str:
        return f"text matching /{self.pattern}/"

    def _judge(self, answer: str) -> tuple[bool, str]:
        given = _bare(answer)
        matched = re.fullmatch(self.pattern, given, re.IGNORECASE if self.ignore_case else 0) is not None
        return matched, f"got {_shown(given)}"


class JsonEqualsCheck(_Check):
    """The first JSON value in the answer (bare, fenced or amid prose) equals ``value``, types included (``1`` is
    not ``true``, ``"1"`` is not ``1``; ``2`` and ``2.0`` are the same number)."""

    kind: Literal["json_equals"]
    value: JsonValue

    def describe(self) -> str:
        return f"the JSON {json.dumps(self.value)}"

    def _judge(self, answer: str) -> tuple[bool, str]:
        try:
            given = extract_json(answer)
        except ValueError:
            return False, f"got no JSON value in {_shown(answer.strip())}"
        return same_json(given, self.value), f"got {_shown(json.dumps(given))}"


def same_json(left: Any, right: Any) -> bool:
    """Equality of two JSON values where a boolean is never a number (Python says ``True == 1``)."""
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left == right
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(same_json(a, b) for a, b in zip(left, right, strict=True))
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(same_json(left[key], right[key]) for key in left)
    return type(left) is type(right) and left == right


Check = Annotated[
    NumberCheck | ExactCheck | ChoiceCheck | ContainsAllCheck | RegexCheck | JsonEqualsCheck, Field(discriminator="kind")
]
"""An environment check, chosen by its ``kind``."""


class Task(BaseModel):
    """One task of the sequence."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
    family: str = Field(min_length=1, max_length=100)
    task: str = Field(min_length=1, max_length=4000)
    check: Check
    answer: str | None = Field(None, min_length=1, max_length=4000)
    """A right answer, optional; when given the check must accept it, so a check that would refuse every right
    answer is caught before any model runs."""

    @model_validator(mode="after")
    def _check_accepts_the_answer(self) -> Task:
        if self.answer is not None and not (verdict := self.check.verdict(self.answer)).success:
            raise ValueError(f"the check refuses the task's own answer {self.answer!r}: {verdict.feedback}")
        return self


# -- the data ---------------------------------------------------------------------------------------------------


def data_file(given: Path | None) -> Path:
    """The tasks file: ``given`` (a file, or a folder holding one of :data:`DATA_FILES`), else the bundled one."""
    if given is None:
        return Path(str(files("mnemoflow.evaluation").joinpath("data", "gmemory", "tasks.yaml")))
    if given.is_dir():
        found = next((given / name for name in DATA_FILES if (given / name).is_file()), None)
        if found is None:
            raise EvalDataError(f"{given}: no tasks file in the folder (looked for {', '.join(DATA_FILES)})")
        return found
    return given


def load_tasks(path: Path) -> list[Task]:
    """Every task of ``path`` (YAML or JSON: ``{"tasks": [...]}``), checked; :class:`EvalDataError` lists every
    problem, each with the file, the line (YAML) and the task's number and id."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalDataError(f"{path}: cannot read the tasks file: {exc}") from exc
    document, where = _parse(path, text)
    if not isinstance(document, dict) or set(document) != {"tasks"} or not isinstance(document["tasks"], list):
        raise EvalDataError(f'{path}: the file must hold one key, "tasks", a list of tasks')
    if not document["tasks"]:
        raise EvalDataError(f"{path}: the task list is empty")
    tasks: list[Task] = []
    problems: list[str] = []
    first_of: dict[str, int] = {}
    for index, entry in enumerate(document["tasks"]):
        number = index + 1
        label = f"task {number}" + (f" (id {entry['id']!r})" if isinstance(entry, dict) and "id" in entry else "")
        try:
            task = Task.model_validate(entry)
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                location = ".".join(str(part) for part in error["loc"])
                at = where(("tasks", index, *error["loc"]))
                problems.append(f"{at}: {label}: " + (f"{location}: " if location else "") + error["msg"])
            continue
        if task.id in first_of:
            problems.append(f"{where(('tasks', index, 'id'))}: {label}: id repeats task {first_of[task.id]}")
            continue
        first_of[task.id] = number
        tasks.append(task)
    if problems:
        raise EvalDataError("\n".join(problems))
    return tasks


def _parse(path: Path, text: str) -> tuple[Any, Callable[[tuple[str | int, ...]], str]]:
    """The document, and where a value of it is written (``file:line`` for YAML, the file for JSON). Duplicate keys
    are refused in both: a second ``check`` silently replacing the first would test something else."""
    if path.suffix == ".json":

        def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
            keys = [key for key, _ in pairs]
            if len(set(keys)) != len(keys):
                raise EvalDataError(f"{path}: key {next(k for k in keys if keys.count(k) > 1)!r} appears twice in an object")
            return dict(pairs)

        try:
            return json.loads(text, object_pairs_hook=unique), lambda _: str(path)
        except json.JSONDecodeError as exc:
            raise EvalDataError(f"{path}: not valid JSON: {exc}") from exc
    from mnemoflow.graphs.loader import read_yaml

    document, positions, problems = read_yaml(text, str(path), holds="tasks")
    if problems:
        raise EvalDataError("\n".join(str(problem) for problem in problems))
    return document, lambda key: f"{path}:{positions.at(key)[0]}"


# -- scores by position -------------------------------------------------------------------------------------------


def position_scores(attempts: list[Attempt]) -> dict[str, Any]:
    """Success by third of the sequence (``attempts`` in sequence order), overall and per family, and the change
    from the first third to the last: whether success rises as a memory grows."""
    thirds: list[list[Attempt]] = [[], [], []]
    for position, attempt in enumerate(attempts):
        thirds[position * 3 // len(attempts)].append(attempt)

    def rate(chosen: list[Attempt]) -> float | None:
        return round(mean([a.outcome.scores.get("success", 0.0) for a in chosen]), 4) if chosen else None

    scores: dict[str, Any] = {f"success_{name}": rate(part) for name, part in zip(THIRDS, thirds, strict=True)}
    first, last = scores["success_first_third"], scores["success_last_third"]
    if first is not None and last is not None:
        scores["success_change_first_to_last_third"] = round(last - first, 4)
    families = list(dict.fromkeys(attempt.item.group for attempt in attempts))
    scores["success_by_family"] = {f: rate([a for a in attempts if a.item.group == f]) for f in families}
    scores["success_by_family_and_third"] = {
        f: {name: rate([a for a in part if a.item.group == f]) for name, part in zip(THIRDS, thirds, strict=True)}
        for f in families
    }
    return scores


# -- the evaluation -------------------------------------------------------------------------------------------------


class GMemoryEvaluation(Evaluation):
    """The team with G-Memory against the team without memory, on a sequence of checked tasks."""

    mechanism: ClassVar[str] = "gmemory"
    systems: ClassVar[tuple[str, ...]] = ("gmemory", "no_memory")
    score_name: ClassVar[str] = "success rate (the environment check)"

    def __init__(self, options: EvalOptions) -> None:
        super().__init__(options)
        self._file: Path | None = None
        self._tasks: list[Task] = []
        self._rounds: int | None = None
        self._team: LoadedGraph | None = None
        self._parts: tuple[LoadedGraph, LoadedGraph] | None = None
        self._budgets: dict[str, Any] = {}

    def load(self) -> list[Item]:
        self._file = data_file(self.options.data)
        self._tasks = load_tasks(self._file)
        return [Item(task.id, task, group=task.family) for task in self._tasks]

    async def prepare(self, bench: Bench, system: str) -> None:
        from mnemoflow.graphs import load_graph

        small = bench.small_model
        self._rounds = SMALL_MODEL_ROUNDS if small else None
        if system == "no_memory":
            self._team = load_graph("team")
        else:
            retrieval, evolution = (SMALL_MODEL_RETRIEVAL, SMALL_MODEL_EVOLUTION) if small else ({}, {})
            self._parts = cut_at_environment(load_graph("gmemory-task"), retrieval, evolution)
        self._budgets = {
            "max_rounds": self._rounds or "the team graph's default",
            "retrieval": SMALL_MODEL_RETRIEVAL if small else "as shipped",
            "evolution": SMALL_MODEL_EVOLUTION if small else "as shipped",
        }

    async def attempt(self, bench: Bench, system: str, item: Item) -> Outcome:
        task: Task = item.data
        values: dict[str, Any] = {"task": task.task} | ({"max_rounds": self._rounds} if self._rounds else {})
        if system == "no_memory":
            assert self._team is not None, "prepare() loads the team graph"
            acted = await bench.run(self._team, values, system=system)
        else:
            assert self._parts is not None, "prepare() cuts the gmemory-task graph"
            acted = await bench.run(self._parts[0], {**values, "task_key": item.id}, system=system)
        answer = str(acted.state.get("solution", ""))
        verdict = task.check.verdict(answer)
        detail: dict[str, Any] = {
            "task": task.task,
            "expected": task.check.describe(),
            "answer": answer[:1000],
            "feedback": verdict.feedback,
            "rounds": acted.state.get("round"),
        }
        if self._parts is not None and system == "gmemory":
            detail["memory"] = _memory_given(acted.state)
            judged = {**acted.state, "success": verdict.success, "feedback": verdict.feedback}
            try:
                evolved = await bench.run(self._parts[1], judged, system=system)
                detail["evolution"] = _evolution_summary(evolved.state.get("evolution", {}))
            except FAILED_ATTEMPT as exc:  # the answer stands; only the memory missed this task
                detail["evolution_error"] = f"{type(exc).__name__}: {exc}"[:1000]
        return Outcome(float(verdict.success), {"success": float(verdict.success)}, detail)

    def failure(self, item: Item, system: str) -> Outcome:
        """0 on ``success`` too, so a failed attempt counts in its third and its family like any other failure."""
        return Outcome(0.0, {"success": 0.0})

    def summarize(self, system: str, attempts: list[Attempt]) -> dict[str, Any]:
        if not attempts:
            return {}
        scores = position_scores(attempts)
        if system == "gmemory":
            scores["evolution_failures"] = sum("evolution_error" in a.outcome.detail for a in attempts)
        return scores

    def describe(self) -> dict[str, Any]:
        return {
            "file": self._file.name if self._file else None,
            "tasks": len(self._tasks),
            "families": dict(Counter(task.family for task in self._tasks)),
            "checks": dict(Counter(task.check.kind for task in self._tasks)),
            "budgets": self._budgets,
            "environment": "each task's check judges the team's final answer; gmemory records and credits that verdict",
            "baseline": "no_memory: the team graph alone (same solver, critic, prompts and rounds; empty memory)",
        }


def cut_at_environment(
    graph: LoadedGraph, retrieval: dict[str, dict[str, Any]], evolution: dict[str, dict[str, Any]]
) -> tuple[LoadedGraph, LoadedGraph]:
    """``gmemory-task`` as two graphs cut after the team (:data:`ENVIRONMENT_CUT`): retrieval and the team, then
    evolution. The nodes and settings are the shipped ones, with ``retrieval`` set on the retrieval subgraph's
    nodes and ``evolution`` on the evolution nodes; both parts are checked like any graph. Refuses a graph that is
    no longer a single chain of steps with retrieval before the team, rather than evaluate something else."""
    from mnemoflow.graphs import with_node_config
    from mnemoflow.graphs.spec import END, START, EdgeSpec

    spec = graph.spec
    following = {edge.from_: edge.to for edge in spec.edges}
    chain: list[str] = []
    at = following.get(START)
    while at is not None and at != END and at not in chain:
        chain.append(at)
        at = following.get(at)
    single_chain = not spec.routes and not spec.fanouts and len(following) == len(spec.edges) and at == END
    cuttable = single_chain and set(chain) == set(spec.nodes) and ENVIRONMENT_CUT in chain
    if not cuttable or "retrieve" not in chain[: chain.index(ENVIRONMENT_CUT)]:
        raise ConfigError(
            f"{spec.name} is no longer a chain of steps with retrieve before {ENVIRONMENT_CUT!r}: the evaluation cannot cut it"
        )
    cut = chain.index(ENVIRONMENT_CUT) + 1

    def part(name: str, steps: list[str], config: dict[str, dict[str, Any]]) -> LoadedGraph:
        links = [START, *steps, END]
        edges = [EdgeSpec.model_validate({"from": a, "to": b}) for a, b in zip(links, links[1:], strict=False)]
        nodes = {step: spec.nodes[step] for step in steps}
        subgraphs = {step: sub for step, sub in graph.subgraphs.items() if step in steps}
        if "retrieve" in subgraphs:
            subgraphs["retrieve"] = with_node_config(subgraphs["retrieve"], retrieval)
        named = spec.model_copy(update={"name": f"{spec.name}-{name}", "nodes": nodes, "edges": edges})
        return with_node_config(replace(graph, spec=named, subgraphs=subgraphs), config)

    return part("act", chain[:cut], {}), part("evolve", chain[cut:], evolution)


def _memory_given(state: dict[str, Any]) -> dict[str, Any]:
    insights = state.get("insights") or []
    return {
        "insights": [getattr(i, "text", i) for i in insights],
        "successes": len(state.get("successes") or []),
        "failures": len(state.get("failures") or []),
        "trajectories": len(state.get("trajectories") or []),
        "solver_memory_chars": len((state.get("memory") or {}).get("solver", "")),
    }


def _evolution_summary(evolution: dict[str, Any]) -> dict[str, Any]:
    record = evolution.get("record") or {}
    credit = evolution.get("credit") or {}
    return {
        "status": record.get("status"),
        "similar": len(record.get("similar") or []),
        "credited": credit.get("credited") or {},
        "pruned": credit.get("pruned") or [],
        "revision": evolution.get("revise") or None,
        "merge": evolution.get("merge") or None,
    }


EVALUATION = GMemoryEvaluation
