"""L2MAC against one long context: programs larger than the context window, scored by tests the model never sees.

The paper's claim is that L2MAC finishes outputs a single context cannot hold. Each item is a program
specification (``data/l2mac/*.yaml``): a task, the instructions that build it (given, so both systems carry out the
same plan and no planning call differs), a reference solution and hidden acceptance tests. Both systems run the
library ``l2mac`` graph with the same context window (:data:`CONTEXT_WINDOW`), the same instructions and the same
turn and restart caps:

- ``l2mac``: each instruction starts from a fresh context (the task, the instruction, a short summary of the
  previous one, the file list); the files carry the work from one instruction to the next.
- ``whole_history``: the same graph with ``keep_history: true``: every instruction continues the whole dialog so
  far, as one long conversation with the same tools would. When that dialog outgrows the window, the graph asks
  for a progress summary and restarts the instruction, but the history it restarts with is still whole, so it
  overflows again and the run gives up after ``max_restarts``: what a single context that is full can do.

Every specification's reference solution alone is larger than the window, while each instruction (its fresh
context, the files it writes and the room kept for a reply) fits in it; :meth:`L2macEvaluation.load` checks both,
with the graph's own token count. A run that gives up (max_turns, max_restarts) still has the files it wrote: they
are exported and tested like a finished run's, and the error is kept in the detail. The hidden tests run with
:func:`mnemoflow.evaluation.hidden_tests.run_acceptance` (ExpeRepair's evaluation runs the same): pytest in the
sandbox the project runs untrusted code in (time and memory bounds, no network), outside the project's folder, each
test with its own time limit.

Scores per specification: ``pass_rate`` (the score: hidden tests passed / hidden tests), ``all_pass`` (0 or 1),
``files_written``, ``instructions_done`` (the fraction of instructions completed) and ``finished`` (0 or 1).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.resources import files as package_files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from mnemoflow.errors import ConfigError, NodeError
from mnemoflow.evaluation.harness import Attempt, Bench, EvalDataError, EvalOptions, Evaluation, Item, Outcome
from mnemoflow.evaluation.hidden_tests import expected_tests, run_acceptance
from mnemoflow.nodes.l2mac import agents
from mnemoflow.nodes.l2mac.control import STEP_TOOLS_SIZE, GuardConfig
from mnemoflow.nodes.l2mac.files import PathError, check_path
from mnemoflow.nodes.l2mac.window import context_size
from mnemoflow.nodes.tokens import count_tokens

if TYPE_CHECKING:
    from mnemoflow.graphs.loader import LoadedGraph

__all__ = [
    "CONTEXT_WINDOW",
    "L2macEvaluation",
    "Program",
    "ProgramSpec",
    "instruction_tokens",
    "output_tokens",
    "system_graph",
]

CONTEXT_WINDOW = 4_800
"""The window both systems run with, in :func:`~mnemoflow.nodes.tokens.count_tokens` tokens: every instruction of
the bundled specifications fits in it, none of their outputs does. It was 4,600 until the step tools gained the
paper's ``run_python_file`` and ``pytest_files``, whose schemas every context carries (about 270 tokens). The local
model's server holds 8,192 tokens of its own, more than this window's prompts take."""
SUMMARY_TOKENS = 40
"""What the previous instruction's summary is taken to cost in the next instruction's context (one or two
sentences; the graph carries the previous one only, as the paper)."""
SMALL_MODEL_CAPS: dict[str, dict[str, Any]] = {
    "call_model": {"max_turns": 2},
    "summarize_overflow": {"max_restarts": 1},
    "run_tools": {"timeout_s": 30},
}
"""On the local 135M model (as tests/test_real_model.py runs it): 2 model calls per attempt at an instruction (enough to
write files, then declare the step complete) and one restart, so a run that cannot progress stops within a minute
(the paper's 30 restarts would let it go round for the better part of an hour per specification); on any other
endpoint the graph's own caps (40 calls, 30 restarts) hold."""
SYSTEMS = {
    "l2mac": "the library l2mac graph: a fresh context per instruction (task, instruction, previous summary, files)",
    "whole_history": (
        "the same graph with keep_history: true: every instruction continues the whole dialog; once the dialog "
        "outgrows the window the graph summarizes and restarts with the whole history again, overflows again and "
        "gives up after max_restarts; the files written until then are scored"
    ),
}
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's loader where PyYAML was built with it: the specifications hold a lot of text."""
_ID = r"^[a-z0-9][a-z0-9-]{0,63}$"
_Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
"""What the model reads (a task, an instruction): not blank, surrounding whitespace dropped."""
_TEST_FILE = re.compile(r"test_[A-Za-z0-9_]+\.py")


class InstructionSpec(BaseModel):
    """One instruction, as both systems get it, and the reference files it writes (to size its context)."""

    model_config = ConfigDict(extra="forbid")

    text: _Text
    writes: list[str] = Field(min_length=1)


class ProgramSpec(BaseModel):
    """A specification file: what the model is told (task, instructions) and what it never sees (the reference
    solution and the hidden tests)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=_ID)
    family: str = Field(min_length=1)
    task: _Text
    instructions: list[InstructionSpec] = Field(min_length=2)
    reference: dict[str, str] = Field(min_length=1)
    """A solution, path -> content: sizes the output and proves the hidden tests pass on a correct project."""
    hidden_tests: dict[str, str] = Field(min_length=1)
    """pytest files, name -> content, run against the files the model wrote."""


@dataclass(frozen=True)
class Program:
    """A checked specification and what was measured of it."""

    spec: ProgramSpec
    source: str
    """The file it was read from."""
    tests: tuple[str, ...]
    """The hidden tests, ``file::name`` (``file::Class::name`` in a class)."""
    output_tokens: int
    instruction_tokens: tuple[int, ...]


# -- sizes ---------------------------------------------------------------------------------------------------------


def output_tokens(files: Mapping[str, str]) -> int:
    """The size of a project's files, as the graph counts context tokens."""
    return sum(count_tokens(content) for content in files.values())


def instruction_tokens(spec: ProgramSpec, index: int, reply_tokens: int | None = None) -> int:
    """The context instruction ``index`` needs at its largest when it goes well: its fresh context (system, task,
    instruction with the previous one's summary and the files so far, the tool schemas), one turn writing its files,
    their results, the "carry on" message, and the room the guard keeps for the next reply."""
    reply = GuardConfig().reply_tokens if reply_tokens is None else reply_tokens
    instruction = spec.instructions[index]
    earlier = sorted({path for step in spec.instructions[:index] for path in step.writes})
    listing = "\n".join(f"- {path} (version 1)" for path in earlier) or "(no files yet)"
    summaries = [("word " * SUMMARY_TOKENS).rstrip()] * index
    written = {path: spec.reference[path] for path in instruction.writes}
    arguments = json.dumps({"files": [{"path": path, "content": content} for path, content in written.items()]})
    results = "\n".join(f"wrote {path} (version 1, {len(content.splitlines())} lines)" for path, content in written.items())
    messages = [
        {"role": "system", "content": agents.SYSTEM},
        agents.task_message(spec.task),
        agents.instruction_message(index, len(spec.instructions), instruction.text, summaries, "", listing),
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "write_files", "arguments": arguments}}]},
        {"role": "tool", "content": results},
        agents.cycle_message(index, listing),
    ]
    return context_size(messages) + STEP_TOOLS_SIZE + reply


# -- the data ------------------------------------------------------------------------------------------------------


def _problems(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in problem['loc']) or 'the file'}: {problem['msg']}" for problem in error.errors()
    )


def _check_files(spec: ProgramSpec, window: int) -> tuple[tuple[str, ...], list[str]]:
    """The hidden tests, and every problem of the paths, the sources, the instructions' files and the sizes."""
    problems: list[str] = []
    for path, content in spec.reference.items():
        try:
            normal = check_path(path)
        except PathError as error:
            problems.append(f"reference path {path!r}: {error}")
            continue
        if normal != path:
            problems.append(f"reference path {path!r}: write it as {normal!r}")
        if path.endswith(".py"):
            try:
                compile(content, path, "exec")
            except SyntaxError as error:
                problems.append(f"reference {path} line {error.lineno}: {error.msg}")
    for number, instruction in enumerate(spec.instructions, 1):
        unknown = [path for path in instruction.writes if path not in spec.reference]
        if unknown:
            problems.append(f"instruction {number} writes {', '.join(unknown)}, which the reference does not hold")
    writes = [path for instruction in spec.instructions for path in instruction.writes]
    unwritten, twice = sorted(set(spec.reference) - set(writes)), sorted({path for path in writes if writes.count(path) > 1})
    if unwritten:
        problems.append(f"no instruction writes the reference file(s) {', '.join(unwritten)}")
    if twice:  # the reference holds one version of a file: the one instruction that writes it
        problems.append(f"more than one instruction writes {', '.join(twice)}")
    tests: list[str] = []
    for name, source in spec.hidden_tests.items():
        if not _TEST_FILE.fullmatch(name):
            problems.append(f"hidden test file {name!r}: name it test_<name>.py (a file name, no folder)")
            continue
        try:
            found = expected_tests(name, source)
        except SyntaxError as error:
            problems.append(f"hidden test file {name} line {error.lineno}: {error.msg}")
            continue
        except ValueError as error:
            problems.append(str(error))
            continue
        if not found:
            problems.append(f"hidden test file {name} defines no test (functions named test_*)")
        tests += found
    if problems:  # the sizes below need every written file to be in the reference
        return tuple(tests), problems
    size = output_tokens(spec.reference)
    if size <= window:
        problems.append(
            f"its reference solution is {size} tokens, within the context window of {window}: the output must exceed it"
        )
    for number in range(len(spec.instructions)):
        need = instruction_tokens(spec, number)
        if need > window:
            problems.append(
                f"instruction {number + 1} needs about {need} tokens, more than the context window of {window}: split it"
            )
    return tuple(tests), problems


def _read_spec(text: str, source: str, index: int, window: int) -> Program:
    """The specification in ``text`` (read from ``source``, the ``index``-th file), checked; EvalDataError naming the
    file, the specification and every problem found."""

    def refuse(label: str, why: str) -> EvalDataError:
        return EvalDataError(f"{source}: {label}: {why}")

    try:
        data = yaml.load(text, Loader=_YAML_LOADER)
    except yaml.YAMLError as error:
        raise refuse(f"specification #{index}", f"not valid YAML: {error}") from error
    if not isinstance(data, dict):
        raise refuse(
            f"specification #{index}",
            f"expected a mapping of id, family, task, instructions, reference and hidden_tests, not {type(data).__name__}",
        )
    label = f"specification {data['id']!r}" if isinstance(data.get("id"), str) else f"specification #{index} (no id)"
    try:
        spec = ProgramSpec.model_validate(data)
    except ValidationError as error:
        raise refuse(label, _problems(error)) from error
    tests, problems = _check_files(spec, window)
    if problems:
        raise refuse(label, "; ".join(problems))
    return Program(
        spec,
        source,
        tests,
        output_tokens(spec.reference),
        tuple(instruction_tokens(spec, n) for n in range(len(spec.instructions))),
    )


def _data_files(data: Path | None) -> list[tuple[str, Traversable | Path]]:
    """The specification files to read, by name: the bundled ones, or those of a file or folder."""
    if data is None:
        folder: Traversable | Path = package_files("mnemoflow.evaluation").joinpath("data", "l2mac")
    elif data.is_dir():
        folder = data
    elif data.is_file():
        return [(str(data), data)]
    else:
        raise EvalDataError(f"{data}: no such file or folder of L2MAC specifications")
    found = sorted((entry for entry in folder.iterdir() if entry.name.endswith((".yaml", ".yml"))), key=lambda entry: entry.name)
    if not found:
        raise EvalDataError(f"{folder}: no specification files (*.yaml) in it")
    return [(str(entry), entry) for entry in found]


# -- the systems ---------------------------------------------------------------------------------------------------


def system_graph(system: str, *, small_model: bool) -> LoadedGraph:
    """The ``l2mac`` graph as ``system`` runs it: the same file and caps for both, the baseline keeping the whole
    history; the caps of :data:`SMALL_MODEL_CAPS` on the local model."""
    from mnemoflow.graphs import load_graph, with_node_config

    if system not in SYSTEMS:
        raise ValueError(f"unknown system {system!r}; the systems: {', '.join(SYSTEMS)}")
    config: dict[str, dict[str, Any]] = {"start_instruction": {"keep_history": system == "whole_history"}}
    if small_model:
        config.update(SMALL_MODEL_CAPS)
    return with_node_config(load_graph("l2mac"), config)


@dataclass
class _Run:
    """What one system's run on a specification left: its files, instructions, and how it ended."""

    gave_up: str | None = None
    state: dict[str, Any] = field(default_factory=dict)
    instructions: list[dict[str, Any]] = field(default_factory=list)
    exported: list[str] = field(default_factory=list)
    export_problem: str | None = None


class L2macEvaluation(Evaluation):
    """L2MAC against a whole-history baseline on programs larger than the context window."""

    mechanism = "l2mac"
    systems = tuple(SYSTEMS)
    score_name = "hidden acceptance tests passed (pass rate)"
    quick_items = 3
    context_window: ClassVar[int] = CONTEXT_WINDOW
    score_keys: ClassVar[tuple[str, ...]] = ("pass_rate", "all_pass", "files_written", "instructions_done", "finished")

    def __init__(self, options: EvalOptions) -> None:
        super().__init__(options)
        self.programs: list[Program] = []
        self.caps: dict[str, dict[str, Any]] = {}

    def load(self) -> list[Item]:
        programs: list[Program] = []
        seen: dict[str, str] = {}
        for index, (name, entry) in enumerate(_data_files(self.options.data), 1):
            try:
                text = entry.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                raise EvalDataError(f"{name}: cannot be read: {error}") from error
            program = _read_spec(text, name, index, self.context_window)
            if program.spec.id in seen:
                raise EvalDataError(f"{name}: specification {program.spec.id!r}: the id is used by {seen[program.spec.id]} too")
            seen[program.spec.id] = name
            programs.append(program)
        self.programs = programs
        return [Item(program.spec.id, program, group=program.spec.family) for program in programs]

    async def prepare(self, bench: Bench, system: str) -> None:
        self.caps = SMALL_MODEL_CAPS if bench.small_model else {}

    async def attempt(self, bench: Bench, system: str, item: Item) -> Outcome:
        program: Program = item.data
        spec = program.spec
        folder = bench.workdir / "l2mac" / system / spec.id
        run = await self._run(bench, system, spec, folder / "project")
        acceptance = await run_acceptance(folder / "project", spec.hidden_tests, folder / "acceptance")
        done = sum(instruction.get("status") == "done" for instruction in run.instructions)
        finished = run.gave_up is None and done == len(spec.instructions)
        scores = {
            "pass_rate": acceptance.pass_rate,
            "all_pass": float(acceptance.all_passed),
            "files_written": float(len(run.exported)),
            "instructions_done": done / len(spec.instructions),
            "finished": float(finished),
        }
        files = {path: count_tokens((folder / "project" / path).read_text(encoding="utf-8")) for path in run.exported}
        detail: dict[str, Any] = {
            "tests": len(program.tests),
            "passed": len(acceptance.passed),
            "failed_tests": acceptance.failed,
            "files": files,
            "output_tokens": sum(files.values()),
            "reference_tokens": program.output_tokens,
            "context_window": self.context_window,
            "instructions": run.instructions,
            "restarts": run.state.get("restarts", sum(int(i.get("restarts") or 0) for i in run.instructions)),
            "peak_context_tokens": run.state.get("peak_context_tokens"),
        }
        if run.gave_up is not None:
            detail["gave_up"] = run.gave_up
        if run.export_problem is not None:
            detail["export_problem"] = run.export_problem
        if acceptance.timed_out:
            detail["acceptance_timed_out"] = True
        return Outcome(acceptance.pass_rate, scores, detail)

    async def _run(self, bench: Bench, system: str, spec: ProgramSpec, project: Path) -> _Run:
        """Run the graph; a run that gives up still leaves its files, exported to ``project`` either way."""
        from mnemoflow.memory.records import NodeRecord
        from mnemoflow.nodes.l2mac.export import export_files
        from mnemoflow.nodes.l2mac.model import instruction_id

        graph = system_graph(system, small_model=bench.small_model)
        thread = f"eval-{spec.id}"
        instructions = [step.text for step in spec.instructions]
        values = {"task": spec.task, "instructions": instructions, "context_window": self.context_window}
        run = _Run()
        try:
            result = await bench.run(graph, values, system=system, thread_id=thread)
            run.state = result.state
        except NodeError as error:  # the graph gave up (max_turns, max_restarts): its files are still scored
            run.gave_up = str(error)
        namespace, store = bench.namespace(system), bench.parts.store
        ids = [instruction_id(namespace, thread, index) for index in range(len(spec.instructions))]
        records: list[NodeRecord | None] = await store.get_nodes(namespace, ids)
        run.instructions = [  # the ones that started; "instructions_done" counts the done ones over all
            {
                "instruction": index + 1,
                **{key: record.properties.get(key) for key in ("status", "turns", "restarts", "checks", "error")},
            }
            for index, record in enumerate(records)
            if record is not None and record.properties.get("status") != "pending"
        ]
        try:
            run.exported = (await export_files(store, namespace, thread, project)).written
        except ConfigError as error:  # no project (nothing planned), or a tree no folder can hold
            run.export_problem = str(error)
        return run

    def failure(self, item: Item, system: str) -> Outcome:
        return Outcome(0.0, dict.fromkeys(self.score_keys, 0.0))

    def summarize(self, system: str, attempts: list[Attempt]) -> dict[str, Any]:
        return {
            "tests_passed": sum(int(attempt.outcome.detail.get("passed", 0)) for attempt in attempts),
            "tests_total": sum(len(attempt.item.data.tests) for attempt in attempts),
        }

    def describe(self) -> dict[str, Any]:
        return {
            "context_window": self.context_window,
            "token_count": "mnemoflow.nodes.tokens.count_tokens (words and punctuation marks), as the graph counts its window",
            "reply_room": GuardConfig().reply_tokens,
            "caps": self.caps or "the graph's own (max_turns 40, max_restarts 30)",
            "checker": "pylint (the graph's default: syntax, pylint's error codes and the tests)",
            "systems": SYSTEMS,
            "specifications": [
                {
                    "id": program.spec.id,
                    "family": program.spec.family,
                    "file": Path(program.source).name,
                    "instructions": len(program.spec.instructions),
                    "reference_files": len(program.spec.reference),
                    "reference_tokens": program.output_tokens,
                    "reference_over_window": round(program.output_tokens / self.context_window, 2),
                    "largest_instruction_tokens": max(program.instruction_tokens),
                    "hidden_tests": len(program.tests),
                }
                for program in self.programs
            ],
        }


EVALUATION = L2macEvaluation
