"""ExpeRepair with its memories against ExpeRepair without them: do the memories resolve more issues?

The paper's claim is that episodic demonstrations and semantic insights, gathered from earlier issues of a
repository, make later repairs succeed more often. The data (``data/experepair/*.yaml``, one small repository per
file, in the order of the file names) holds families of similar bugs; the issues of one family share a repository
name, because demonstrations are only ever retrieved from other issues of the same repository. Each repository has
hidden tests that the model never sees: they are not in the clone the graph repairs, and only afterwards do they run
against the final patch, from a folder outside the patched checkout, with the runner L2MAC's evaluation uses too
(:mod:`mnemoflow.evaluation.hidden_tests`: one verdict per test, nothing the patch adds can configure the run).

Systems, all running ``graphs/library/experepair.yaml`` with the same budgets on the same model, each in its own
namespace (so each builds its memory from the earlier issues of the run only):

- ``experepair``: both memories on;
- ``no_memory``: the graph's ``memory: false`` switch, the paper's ablation without either memory: no insights, no
  retrieved demonstrations, nothing learned (so none of its calls are spent on memory either);
- ``no_episodic`` (``episodic: false``): insights only, no demonstrations read or recorded;
- ``no_semantic`` (``semantic: false``): demonstrations only, no insights shown or edited.

The paper's two phases: the first ``seed`` issues of each repository (:data:`SEED_PER_REPOSITORY` unless the
evaluation is given another number) run in the seed phase, with static prompts while the memory systems still
record what they learn; every later issue runs in the inference phase. One per repository by default: the
bundled data holds two issues per repository, interleaved, and the first of a repository has no demonstration of
its own repository to read anyway, so seeding it follows the paper (a seed set, then inference) at the cost of
only the insights it would have seen from other repositories; the second issue of each repository is then the
inference set, and the result reports the resolve rate of both phases.

Scores per issue: ``resolved`` (the main score): the graph ended with a final patch, it applies to a clean checkout
and every hidden test passes with it; ``patch_produced``: the graph submitted a patch (the paper's single
top-ranked submission, whether its reviewers accepted it or not: the detail's ``status`` says);
``reproduction_valid`` (repositories with a reference ``fix``): the reproduction script the run ended with fails on
the buggy code and passes on the fixed code, the ground truth behind the judge's verdict that the test demonstrations
rest on.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from mnemoflow.errors import ConfigError, SandboxError
from mnemoflow.evaluation.harness import Attempt, Bench, EvalDataError, EvalOptions, Evaluation, Item, Outcome, mean
from mnemoflow.evaluation.hidden_tests import Acceptance, expected_tests, run_acceptance
from mnemoflow.nodes.experepair.model import ROLES
from mnemoflow.nodes.sandbox import SANDBOX_DIR, Limits, Worktree, run_python
from mnemoflow.nodes.tokens import clip

if TYPE_CHECKING:
    from mnemoflow.graphs.loader import LoadedGraph

__all__ = [
    "EVALUATION",
    "SEED_PER_REPOSITORY",
    "SMALL_MODEL_BUDGETS",
    "SWITCHES",
    "BuggyRepository",
    "ExpeRepairEvaluation",
    "HiddenTestRun",
    "build_clone",
    "bundled_data",
    "load_repositories",
    "reproduction_is_valid",
    "resolve_rate_by_family",
    "run_hidden_tests",
    "seed_items",
]

MECHANISM = "experepair"
BASELINE = "no_memory"
SWITCHES: dict[str, dict[str, bool]] = {
    MECHANISM: {"memory": True, "episodic": True, "semantic": True},
    BASELINE: {"memory": False, "episodic": True, "semantic": True},
    "no_episodic": {"memory": True, "episodic": False, "semantic": True},
    "no_semantic": {"memory": True, "episodic": True, "semantic": False},
}
"""Each system's memory switches (the graph's ``memory``, ``episodic`` and ``semantic`` inputs)."""
SEED_PER_REPOSITORY = 1
"""Issues of each repository run in the seed phase before the others run in the inference phase (see above)."""
DATA_FILES = (".yaml", ".yml", ".json")
HIDDEN_TEST_LIMITS = Limits(timeout_s=60.0, memory_mb=1024)
"""Bounds of one hidden-test or reproduction run: the code under test is the model's patch, so it is sandboxed."""

SMALL_MODEL_BUDGETS: dict[str, dict[str, dict[str, Any]]] = {
    "routes": {"judge_test": {"max_test_attempts": 1}, "review": {"max_rounds": 1}},
    "nodes": {
        "write_test": {"max_tokens": 256},
        "run_test": {"timeout_s": 30.0},
        "judge_test": {"max_tokens": 128},
        "localize_files": {"max_files": 2, "max_tokens": 96},
        "localize_functions": {"max_functions": 4, "max_tokens": 128},
        "localize_lines": {"context_lines": 5, "max_tokens": 128},
        "generate": {"temperatures": [0.0, 0.8], "max_tokens": 384},
        "evaluate": {"timeout_s": 30.0},
        "review": {"reviews": 2, "exit_code_gate": False, "max_tokens": 128},
        "refine": {"max_tokens": 384},
        "variants": {"max_patches": 1, "timeout_s": 30.0, "max_tokens": 384},
        "write_diff_tests": {"temperatures": [0.0], "max_inputs": 4, "max_tokens": 256},
        "run_diff_tests": {"timeout_s": 30.0},
        "validate": {"max_tokens": 128},
        "finish": {"submit": "best"},
        "update_insights": {"max_tokens": 96},
    },
}
"""The graph's budgets on the local 135M model, whose every reply takes seconds (tests/test_real_model.py runs it
so too), sized so that one evaluation of the four systems on the bundled data stays near 15 minutes (the graph's
own defaults, the paper's, make about 25 to 55 calls per issue, these about 11 to 19): one reproduction script;
two candidates at the paper's two temperatures (0.0, then 0.8: the least that gives validation two patches to tell
apart); two reviews (the least whose verdicts combine); one refinement round (one patch per review); one accepted
patch expanded and compressed; one differential test of at most four inputs; the paper's single top-ranked
submission; the localization bounded to two files, four functions and five lines of context, which is room enough
in the bundled repositories (three files of about 25 lines in all, each bug in one function). Script runs stop after 30 s instead of 300: these repositories' scripts
finish in well under a second, so only a hanging script meets the limit, and it should not cost five minutes.
Replies are capped a little above what a good answer for these small repositories takes (a script or a diff of a
dozen lines, a short verdict, one or two one-line insight edits). The caps matter because the model now and then
runs on inside its JSON, and a reply cut off is asked for twice more with twice the room, then re-asked once:
uncapped, the coder's insight update of the second bundled issue wrote 800, 1,024, 2,048 and 54 tokens (over a
minute on its own); capped at 96, such a runaway costs at most 96 + 192 + 384 + 96, while its usual edits take 30
to 64. A capable endpoint runs the graph's own defaults."""

_SLUG = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
_FORBIDDEN_PARTS = {".git", SANDBOX_DIR}


def _safe_path(path: str) -> str:
    """A repository-relative POSIX path that stays inside the repository."""
    pure = PurePosixPath(path)
    if not path or path != path.strip() or "\\" in path or pure.is_absolute() or path.endswith("/"):
        raise ValueError(f"path {path!r} must be relative, with forward slashes and no surrounding spaces")
    if any(part in ("", ".", "..") for part in path.split("/")) or _FORBIDDEN_PARTS & set(pure.parts):
        raise ValueError(f"path {path!r} must not contain '.', '..', empty parts, .git or {SANDBOX_DIR}")
    return path


def _non_empty(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return text


RelativePath = Annotated[str, AfterValidator(_safe_path)]
Text = Annotated[str, AfterValidator(_non_empty)]


class BuggyRepository(BaseModel):
    """One repository with one bug: the issue a user would report, the code, and the tests that decide the fix."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=_SLUG, max_length=100)
    """Unique in the data set; the issue's id in the graph."""
    family: str = Field(pattern=_SLUG, max_length=100)
    """The kind of bug (off by one, a boundary, ...): resolve rates are reported per family."""
    repo: str = Field(pattern=r"^[\w.-]+/[\w.-]+$", max_length=200)
    """The repository's name as the graph sees it; demonstrations come only from other issues of the same name."""
    issue: Text
    """What a user would report: the symptom, never the solution."""
    files: dict[RelativePath, Text] = Field(min_length=1)
    """The repository at the issue (path -> content): the only code the model sees."""
    hidden_tests: dict[RelativePath, Text] = Field(min_length=1)
    """pytest files that fail on the buggy code and pass on a correct fix; never shown to the model."""
    fix: dict[RelativePath, Text] = Field(default_factory=dict)
    """A reference fix (path -> new content of a file of ``files``); never shown to the model."""

    @model_validator(mode="after")
    def _consistent(self) -> BuggyRepository:
        if not any(path.endswith(".py") for path in self.files):
            raise ValueError("files: the repository has no Python file")
        for path in self.hidden_tests:
            if not (PurePosixPath(path).name.startswith("test_") and path.endswith(".py")):
                raise ValueError(f"hidden_tests: {path!r} is not a pytest file (test_*.py)")
            if path in self.files:
                raise ValueError(f"hidden_tests: {path!r} is also in files, where the model would see it")
            try:  # the runner expects the tests the file defines: a file of none would pass nothing
                if not expected_tests(path, self.hidden_tests[path]):
                    raise ValueError(f"hidden_tests: {path!r} defines no test (functions named test_*)")
            except SyntaxError as error:
                raise ValueError(f"hidden_tests: {path!r} line {error.lineno}: {error.msg}") from error
        paths = {*self.files, *self.hidden_tests}
        folders = {str(parent) for path in paths for parent in PurePosixPath(path).parents}
        if clashes := sorted(paths & folders):
            raise ValueError(f"files: {clashes[0]!r} is both a file and a folder of other files")
        for path, content in self.fix.items():
            if path not in self.files:
                raise ValueError(f"fix: {path!r} is not a file of the repository")
            if content == self.files[path]:
                raise ValueError(f"fix: {path!r} is the same as the buggy file")
        return self


def bundled_data() -> Traversable:
    """The data set shipped with the package."""
    return files("mnemoflow.evaluation").joinpath("data", MECHANISM)


def _data_files(source: Traversable) -> list[Traversable]:
    if not source.is_dir():
        if not source.is_file():
            raise EvalDataError(f"{source}: no such file or folder of repositories")
        return [source]
    found = sorted((entry for entry in source.iterdir() if entry.name.endswith(DATA_FILES)), key=lambda entry: entry.name)
    if not found:
        raise EvalDataError(f"{source}: no repository files ({', '.join(DATA_FILES)}) in this folder")
    return found


def _parse(source: Traversable) -> list[Any]:
    """The file's repositories as parsed data: one mapping, or a list of them."""
    if not source.name.endswith(DATA_FILES):
        raise EvalDataError(f"{source}: a repository file is YAML or JSON ({', '.join(DATA_FILES)})")
    try:
        text = source.read_text(encoding="utf-8")
        content = json.loads(text) if source.name.endswith(".json") else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as exc:
        kind = "JSON" if source.name.endswith(".json") else "YAML"
        raise EvalDataError(f"{source}: cannot be read as {kind}: {' '.join(str(exc).split())}") from exc
    if isinstance(content, dict):
        return [content]
    if isinstance(content, list) and content:
        return content
    raise EvalDataError(f"{source}: expected one repository (a mapping) or a list of them, got {type(content).__name__}")


def _location(parts: tuple[int | str, ...]) -> str:
    """A pydantic error location as the data file spells it: ``files['a/b.py']``, ``hidden_tests``."""
    if not parts:
        return "repository"
    keys = "".join(" (the path)" if part == "[key]" else f"[{part!r}]" for part in parts[1:])
    return f"{parts[0]}{keys}"


def load_repositories(source: Traversable) -> list[BuggyRepository]:
    """Every repository in ``source`` (a file, or a folder of files read in name order), each checked; raises
    :class:`EvalDataError` listing every problem at once, each naming its file and its repository (id and
    position)."""
    repositories: list[BuggyRepository] = []
    problems: list[str] = []
    seen: dict[str, str] = {}
    for data_file in _data_files(source):
        try:
            entries = _parse(data_file)
        except EvalDataError as exc:
            problems.append(str(exc))
            continue
        for index, entry in enumerate(entries, start=1):
            name = entry.get("id") if isinstance(entry, dict) else None
            where = f"{data_file}: item {index}" + (f" (id {name!r})" if isinstance(name, str) else "")
            if not isinstance(entry, dict):
                problems.append(f"{where}: expected a mapping of id, family, repo, issue, files, hidden_tests and fix")
                continue
            try:
                repository = BuggyRepository.model_validate(entry)
            except ValidationError as exc:
                problems += [f"{where}: {_location(error['loc'])}: {error['msg']}" for error in exc.errors()]
                continue
            if repository.id in seen:
                problems.append(f"{where}: the id {repository.id!r} is already used by {seen[repository.id]}")
                continue
            seen[repository.id] = where
            repositories.append(repository)
    if problems:
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        raise EvalDataError(f"{count} in the ExpeRepair repositories of {source}:\n" + "\n".join(problems))
    return repositories


# -- running code of a repository ----------------------------------------------------------------------------------


async def _git(folder: Path, *args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        "git", "-c", "user.name=mnemoflow eval", "-c", "user.email=eval@mnemoflow.invalid", "-c", "commit.gpgsign=false",
        *args, cwd=folder, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await process.communicate()
    if process.returncode != 0:
        raise SandboxError(f"git {args[0]} in {folder} failed: {err.decode(errors='replace').strip()}")


async def build_clone(folder: Path, repository: BuggyRepository) -> Path:
    """The buggy repository as a fresh git repository with one commit (the graph needs a clone to repair)."""
    folder.mkdir(parents=True, exist_ok=False)
    for path, content in repository.files.items():
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
    await _git(folder, "init", "-q")
    await _git(folder, "add", "--all")
    await _git(folder, "commit", "-q", "-m", f"{repository.id}: the code at the issue")
    return folder


@dataclass(frozen=True)
class HiddenTestRun:
    """The hidden tests on the patched repository: whether the patch applied, and if it did, each test's verdict."""

    applied: bool
    """Whether the patch applied to a clean checkout (nothing ran when it did not)."""
    acceptance: Acceptance | None = None
    error: str = ""
    """Why the patch did not apply."""

    @property
    def resolved(self) -> bool:
        """The patch applied, and there is at least one hidden test and every one passed."""
        return self.applied and self.acceptance is not None and self.acceptance.all_passed

    def detail(self) -> dict[str, Any]:
        """What an attempt's detail keeps of the run."""
        run = self.acceptance or Acceptance((), {})
        return {
            "applied": self.applied, "passed": len(run.passed), "failed": len(run.failed), "failed_tests": run.failed,
            "timed_out": run.timed_out, "error": self.error,
        }  # fmt: skip


async def run_hidden_tests(
    clone: Path, patch: str, hidden_tests: dict[str, str], limits: Limits = HIDDEN_TEST_LIMITS
) -> HiddenTestRun:
    """Apply ``patch`` to a clean checkout of ``clone`` (none: the code as it is) and run the hidden tests against it
    with the evaluations' shared runner, from a folder outside the checkout: no file the patch adds (a conftest, a
    pytest configuration, a file at a hidden test's path) takes part in the run."""
    async with Worktree(clone) as tree:
        applied = await tree.apply(patch) if patch else None
        if applied is not None and not applied.applied:
            return HiddenTestRun(applied=False, error=applied.error)
        with tempfile.TemporaryDirectory(prefix="mnemoflow-hidden-tests-") as folder:
            acceptance = await run_acceptance(tree.path, hidden_tests, Path(folder), limits=limits)
    return HiddenTestRun(applied=True, acceptance=acceptance)


async def reproduction_is_valid(clone: Path, script: str, fix: dict[str, str], limits: Limits = HIDDEN_TEST_LIMITS) -> bool:
    """Whether ``script`` tells the bug from the fix: it exits non-zero on the buggy code and zero with ``fix``."""
    async with Worktree(clone) as tree:
        on_bug = await run_python(tree, script, limits)
    if on_bug.passed or on_bug.timed_out:
        return False
    async with Worktree(clone) as tree:
        for path, content in fix.items():
            tree.write(path, content)
        return (await run_python(tree, script, limits)).passed


# -- the evaluation ---------------------------------------------------------------------------------------------


def resolve_rate_by_family(attempts: list[Attempt]) -> dict[str, float]:
    """The mean ``resolved`` per family (the items' group), families in order of first appearance."""
    families: dict[str, list[float]] = {}
    for attempt in attempts:
        families.setdefault(attempt.item.group, []).append(attempt.outcome.scores.get("resolved", 0.0))
    return {family: round(mean(values), 4) for family, values in families.items()}


def seed_items(repositories: list[BuggyRepository], seed: int) -> set[str]:
    """The ids of the first ``seed`` issues of each repository (by ``repo``), in data order: the seed phase."""
    counts: dict[str, int] = {}
    chosen: set[str] = set()
    for repository in repositories:
        if counts.get(repository.repo, 0) < seed:
            chosen.add(repository.id)
        counts[repository.repo] = counts.get(repository.repo, 0) + 1
    return chosen


class ExpeRepairEvaluation(Evaluation):
    """Resolve rate on hidden tests, with ExpeRepair's memories, without either and without each one."""

    mechanism: ClassVar[str] = MECHANISM
    systems: ClassVar[tuple[str, ...]] = tuple(SWITCHES)
    score_name: ClassVar[str] = "resolve rate (hidden tests pass)"

    def __init__(self, options: EvalOptions) -> None:
        """``options.seed``: issues of each repository run in the seed phase (:data:`SEED_PER_REPOSITORY` when None;
        0: every issue in the inference phase)."""
        super().__init__(options)
        seed = options.seed
        if seed is not None and seed < 0:
            raise ConfigError(f"seed {seed}: the number of issues per repository run in the seed phase cannot be negative")
        self.seed = SEED_PER_REPOSITORY if seed is None else seed
        self.repositories: list[BuggyRepository] = []
        self.seeding: set[str] = set()
        """The ids of the issues run in the seed phase."""
        self.graph: LoadedGraph | None = None
        """The graph every system runs, fitted to the model in :meth:`prepare`."""

    def source(self) -> Traversable:
        """``--data`` (a repository file or a folder of them), else the bundled repositories."""
        return self.options.data if self.options.data is not None else bundled_data()

    def load(self) -> list[Item]:
        self.repositories = load_repositories(self.source())
        self.seeding = seed_items(self.repositories, self.seed)
        return [Item(id=repository.id, data=repository, group=repository.family) for repository in self.repositories]

    async def prepare(self, bench: Bench, system: str) -> None:
        """Load the graph once, fitted to the small model when it is the one measured."""
        if self.graph is not None:
            return
        from mnemoflow.graphs import load_graph, with_node_config, with_route_config

        graph = load_graph(MECHANISM)
        if bench.small_model:
            graph = with_node_config(graph, SMALL_MODEL_BUDGETS["nodes"])
            graph = with_route_config(graph, SMALL_MODEL_BUDGETS["routes"])
        self.graph = graph

    async def attempt(self, bench: Bench, system: str, item: Item) -> Outcome:
        repository: BuggyRepository = item.data
        await self.prepare(bench, system)
        assert self.graph is not None
        clone = await build_clone(bench.workdir / MECHANISM / system / repository.id, repository)
        phase = "seed" if repository.id in self.seeding else "inference"
        values = {
            "repo": repository.repo, "repo_path": str(clone), "issue_id": repository.id, "issue": repository.issue,
            "phase": phase, **SWITCHES[system],
        }  # fmt: skip
        state = (await bench.run(self.graph, values, system=system)).state
        shown = {role: len((state.get("insight_ids") or {}).get(role, [])) for role in ROLES}
        patch = str(state.get("final_patch") or "")
        hidden = await run_hidden_tests(clone, patch, repository.hidden_tests) if patch else None
        scores = {"resolved": float(hidden is not None and hidden.resolved), "patch_produced": float(bool(patch))}
        script = str(state.get("test_script") or "")
        if repository.fix:
            scores["reproduction_valid"] = float(bool(script) and await reproduction_is_valid(clone, script, repository.fix))
        detail = {
            "repo": repository.repo,
            "phase": phase,
            "status": state.get("status", ""),
            "final_patch": clip(patch, 3_000),
            "hidden_tests": hidden.detail() if hidden is not None else None,
            "judged_reproduced": bool(state.get("reproduced")),
            "test_script": clip(script, 1_500),
            "rounds": len(state.get("rounds") or []),
            "demos_used": state.get("demos_used") or {},
            "insights_shown": shown,
            "graph_errors": [clip(str(error), 300) for error in (state.get("errors") or [])[:8]],
        }
        return Outcome(scores["resolved"], scores, detail)

    def failure(self, item: Item, system: str) -> Outcome:
        repository: BuggyRepository = item.data
        keys = ["resolved", "patch_produced", *(["reproduction_valid"] if repository.fix else [])]
        return Outcome(0.0, dict.fromkeys(keys, 0.0))

    def summarize(self, system: str, attempts: list[Attempt]) -> dict[str, Any]:
        """The resolve rate per family, in the first and second half of the sequence and in each phase: memory can
        only help where earlier issues (of the same repository) left something, and is read only in the inference
        phase."""
        middle = len(attempts) // 2
        parts = {
            "resolved_first_half": attempts[:middle],
            "resolved_second_half": attempts[middle:],
            "resolved_seed_phase": [attempt for attempt in attempts if attempt.item.id in self.seeding],
            "resolved_inference_phase": [attempt for attempt in attempts if attempt.item.id not in self.seeding],
        }
        summary: dict[str, Any] = {
            name: round(mean([attempt.outcome.scores.get("resolved", 0.0) for attempt in part]), 4)
            for name, part in parts.items()
            if part
        }
        summary["resolved_by_family"] = resolve_rate_by_family(attempts)
        return summary

    def describe(self) -> dict[str, Any]:
        families: dict[str, int] = {}
        for repository in self.repositories:
            families[repository.family] = families.get(repository.family, 0) + 1
        graph = self.graph
        return {
            "source": str(self.source()),
            "repositories": len(self.repositories),
            "families": families,
            "hidden_tests": "never shown to the model; run with the final patch after the graph ends",
            "systems": {
                MECHANISM: "both memories, each system in its own namespace, built from earlier issues only",
                BASELINE: "memory: false (neither memory read nor written)",
                "no_episodic": "episodic: false (insights only)",
                "no_semantic": "semantic: false (demonstrations only)",
            },
            "seed": {
                "per_repository": self.seed,
                "items": [repository.id for repository in self.repositories if repository.id in self.seeding],
                "phases": "the seed items run with static prompts and record what they learn; the others read memory",
            },
            "budgets": None
            if graph is None
            else {
                "nodes": {name: dict(node.with_) for name, node in graph.spec.nodes.items() if node.with_},
                "routes": {route.from_: dict(route.with_) for route in graph.spec.routes if route.with_},
            },
        }


EVALUATION = ExpeRepairEvaluation
