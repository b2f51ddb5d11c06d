"""G-Memory against the same team without memory: does the team's success rise as the tasks accumulate?

The data is a sequence of small tasks in families of similar tasks (``data/gmemory/tasks.yaml``), interleaved so
each family recurs through the sequence. Each task carries an environment check, a declarative test of the team's
answer (:data:`Check`, the team's own environment checks). The check is the team's environment: it goes in as the
team's ``goal``, so every proposal is a step the check rewards (1 ends the episode when the goal is reached, -1
for an empty or repeated proposal, 0 otherwise), with an observation that does not reveal the expected answer.
After the team the same check judges its final answer: that verdict is the score. Three systems run every task:

- ``gmemory``: the shipped ``gmemory-task`` graph in its own namespace, so its memory grows over the sequence. It
  runs in two parts cut at the environment: retrieval and the team (``retrieve``, ``team``), then, once the task's
  check has judged the answer, the evolution steps (``record``, ``credit``, ``revise``, ``merge``) with that
  verdict as the task's ``success`` and ``feedback``, so what the memory credits is by construction the very
  verdict that is scored, as in the paper, where the environment's reward decides what the memory credits; the
  steps and their rewards reach ``record``, which filters them. The nodes and their settings are the shipped
  graph's.
- ``gmemory_rate_each``: the same, with retrieval's ``rate`` asking the model once per candidate (``mode: each``,
  the paper's rating) instead of once for all (the shipped ``batched``).
- ``no_memory``: the ``team`` graph alone, the same solver and critic with the same prompts and rounds and an
  empty memory.

Scores: ``success`` (0/1, the check's verdict), and by position: the success rate of the first, middle and last
third of the sequence, overall and per family, so a reader sees whether it rises as the memory grows.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

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
from mnemoflow.nodes.team.environment import Check, Verdict, same_json

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


# -- the tasks ------------------------------------------------------------------------------------------------------


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
    systems: ClassVar[tuple[str, ...]] = ("gmemory", "gmemory_rate_each", "no_memory")
    score_name: ClassVar[str] = "success rate (the environment check)"

    def __init__(self, options: EvalOptions) -> None:
        super().__init__(options)
        self._file: Path | None = None
        self._tasks: list[Task] = []
        self._rounds: int | None = None
        self._team: LoadedGraph | None = None
        self._parts: dict[str, tuple[LoadedGraph, LoadedGraph]] = {}
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
            if system == "gmemory_rate_each":
                retrieval = {**retrieval, "rate": {**retrieval.get("rate", {}), "mode": "each"}}
            self._parts[system] = cut_at_environment(load_graph("gmemory-task"), retrieval, evolution)
        self._budgets = {
            "max_rounds": self._rounds or "the team graph's default",
            "retrieval": SMALL_MODEL_RETRIEVAL if small else "as shipped",
            "evolution": SMALL_MODEL_EVOLUTION if small else "as shipped",
        }

    async def attempt(self, bench: Bench, system: str, item: Item) -> Outcome:
        task: Task = item.data
        values: dict[str, Any] = {"task": task.task, "goal": task.check.model_dump(mode="json")}
        values |= {"max_rounds": self._rounds} if self._rounds else {}
        if system == "no_memory":
            assert self._team is not None, "prepare() loads the team graph"
            acted = await bench.run(self._team, values, system=system)
        else:
            assert system in self._parts, "prepare() cuts the gmemory-task graph"
            acted = await bench.run(self._parts[system][0], {**values, "task_key": item.id}, system=system)
        answer = str(acted.state.get("solution", ""))
        verdict = task.check.verdict(answer)
        detail: dict[str, Any] = {
            "task": task.task,
            "expected": task.check.describe(),
            "answer": answer[:1000],
            "feedback": verdict.feedback,
            "rounds": acted.state.get("round"),
            "rewards": [step.reward for step in acted.state.get("steps") or []],
        }
        if system in self._parts:
            detail["memory"] = _memory_given(acted.state)
            judged = {**acted.state, "success": verdict.success, "feedback": verdict.feedback}
            try:
                evolved = await bench.run(self._parts[system][1], judged, system=system)
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
        if system != "no_memory":
            scores["evolution_failures"] = sum("evolution_error" in a.outcome.detail for a in attempts)
        return scores

    def describe(self) -> dict[str, Any]:
        return {
            "file": self._file.name if self._file else None,
            "tasks": len(self._tasks),
            "families": dict(Counter(task.family for task in self._tasks)),
            "checks": dict(Counter(task.check.kind for task in self._tasks)),
            "budgets": self._budgets,
            "environment": "each task's check rewards every proposal of the team (its goal) and judges its final answer; "
            "gmemory records and credits that verdict",
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
        "lesson": (evolution.get("learn") or {}).get("insight"),
        "revision": evolution.get("revise") or None,
        "merge": evolution.get("merge") or None,
    }


EVALUATION = GMemoryEvaluation
