"""ExpeRepair's evaluation: its repositories (each hidden test fails on the bug and passes with the reference fix),
what it refuses, how a patch is scored, the seed phase, and the four systems (both memories, neither, each alone)
run by the harness against the scripted model over HTTP. The real-model run is the harness's quick test
(``tests/test_eval.py``)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from mnemoflow.errors import ConfigError
from mnemoflow.evaluation import evaluation_class
from mnemoflow.evaluation.experepair import (
    EVALUATION,
    SMALL_MODEL_BUDGETS,
    BuggyRepository,
    ExpeRepairEvaluation,
    HiddenTestRun,
    build_clone,
    reproduction_is_valid,
    run_hidden_tests,
)
from mnemoflow.evaluation.harness import Attempt, Bench, EvalDataError, EvalOptions, Item, Outcome, evaluate
from mnemoflow.evaluation.hidden_tests import Acceptance
from mnemoflow.evaluation.meter import Reading
from mnemoflow.graphs import load_graph, with_node_config, with_route_config
from mnemoflow.nodes.sandbox import Worktree
from mnemoflow.settings import LLMSettings, OpenAISettings, Settings
from tests.support.openai_server import ScriptedOpenAIServer
from tests.support.repair_repo import FIX_ADD, WRONG_MULTIPLY

MNEMOFLOW = str(Path(sys.executable).with_name("mnemoflow"))
BUNDLED: list[BuggyRepository] = [item.data for item in ExpeRepairEvaluation(EvalOptions()).load()]
FIRST = BUNDLED[0].model_dump()


def write_data(folder: Path, content: Any, name: str = "repos.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    text = json.dumps(content) if name.endswith(".json") else yaml.safe_dump(content, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path


def load_from(path: Path) -> list[Item]:
    return ExpeRepairEvaluation(EvalOptions(data=path)).load()


async def fix_as_patch(clone: Path, fix: dict[str, str]) -> str:
    """The reference fix as the unified diff a model would have to write."""
    async with Worktree(clone) as tree:
        for path, content in fix.items():
            tree.write(path, content)
        return await tree.diff()


# -- the bundled repositories ------------------------------------------------------------------------------------


def test_the_bundled_repositories_come_in_families_that_share_a_repository_and_interleave() -> None:
    evaluation = evaluation_class("experepair")(EvalOptions())
    items = evaluation.load()
    assert type(evaluation) is EVALUATION
    assert evaluation.systems == ("experepair", "no_memory", "no_episodic", "no_semantic")
    families = Counter(item.group for item in items)
    assert len(items) >= 8 and len(families) >= 3 and min(families.values()) >= 2, families
    repos = {family: {item.data.repo for item in items if item.group == family} for family in families}
    assert all(len(names) == 1 for names in repos.values()), repos  # demonstrations are drawn within one repository
    assert len(set.union(*repos.values())) == len(families)  # and never from another family's
    first_of_family: dict[str, int] = {}
    for index, item in enumerate(items):
        first_of_family.setdefault(item.group, index)
    assert max(first_of_family.values()) < len(items) // 2  # the second half holds only issues with an earlier sibling
    quick = ExpeRepairEvaluation(EvalOptions(quick=True)).select(items)
    assert len(quick) == 3 and len({item.group for item in quick}) == 3
    assert all(repository.fix for repository in BUNDLED)  # every reproduction can be checked against a fix
    # the seed phase: the first issue of each repository, i.e. the first half; the second half is the inference set
    assert evaluation.seeding == {item.id for item in items[: len(families)]} and len(families) == len(items) // 2


async def hidden_test_verdicts(repository: BuggyRepository, folder: Path) -> list[str]:
    """What is wrong with ``repository``'s hidden tests: they must fail on the bug (failures, not errors: the
    tests run and catch it) and all pass with the reference fix, given as the diff a model would write."""
    clone = await build_clone(folder / repository.id, repository)
    buggy = await run_hidden_tests(clone, "", repository.hidden_tests)
    fixed = await run_hidden_tests(clone, await fix_as_patch(clone, repository.fix), repository.hidden_tests)
    problems = []
    failures = buggy.acceptance.failed.values() if buggy.acceptance is not None else ()
    if buggy.resolved or not failures or not all(why.startswith("failed: ") for why in failures):
        problems.append(f"{repository.id}: on the buggy code {buggy}")
    if not fixed.resolved:
        problems.append(f"{repository.id}: with the fix {fixed}")
    return problems


@pytest.mark.subprocess
async def test_each_hidden_test_suite_fails_on_the_bug_and_passes_with_the_reference_fix(tmp_path: Path) -> None:
    verdicts = await asyncio.gather(*(hidden_test_verdicts(repository, tmp_path) for repository in BUNDLED))
    assert [problem for problems in verdicts for problem in problems] == []


# -- malformed data is refused, naming the file and the item ------------------------------------------------------


def without(entry: dict[str, Any], key: str) -> dict[str, Any]:
    return {name: value for name, value in entry.items() if name != key}


FILES, HIDDEN = FIRST["files"], FIRST["hidden_tests"]
BAD_ENTRIES = [
    (without(FIRST, "hidden_tests"), "item 1 (id 'listkit-page'): hidden_tests: Field required"),
    ({**FIRST, "hidden_tests": {}}, "item 1 (id 'listkit-page'): hidden_tests: Dictionary should have at least 1 item"),
    ({**FIRST, "hidden_tests": {"tests/test_x.py": " \n"}}, "hidden_tests['tests/test_x.py']: Value error, must not be empty"),
    ({**FIRST, "files": {**FILES, "/etc/evil.py": "x = 1\n"}}, "files['/etc/evil.py'] (the path): Value error, path '/etc/evil.py'"),
    ({**FIRST, "files": {**FILES, "../outside.py": "x = 1\n"}}, "files['../outside.py'] (the path): Value error"),
    ({**FIRST, "hidden_tests": {"tests/../../test_x.py": "def test_x(): pass\n"}}, "must not contain '.', '..'"),
    ({**FIRST, "files": {**FILES, ".git/hooks/pre-commit": "x"}}, "files['.git/hooks/pre-commit'] (the path)"),
    ({**FIRST, "files": {**FILES, "listkit/pages.py": ""}}, "files['listkit/pages.py']: Value error, must not be empty"),
    ({**FIRST, "files": {"README.md": "docs\n"}, "fix": {}}, "repository: Value error, files: the repository has no Python file"),
    ({**FIRST, "hidden_tests": {"tests/check_pages.py": "def test_x(): pass\n"}}, "'tests/check_pages.py' is not a pytest file"),
    ({**FIRST, "hidden_tests": {"tests/test_x.py": "x = 1\n"}}, "hidden_tests: 'tests/test_x.py' defines no test"),
    ({**FIRST, "hidden_tests": {"tests/test_x.py": "def test_x(:\n"}}, "hidden_tests: 'tests/test_x.py' line 1: "),
    ({**FIRST, "hidden_tests": {"tests/test_x.py": "def test_x(): pass\ndef test_x(): pass\n"}}, "defines tests/test_x.py::test_x more than once"),
    ({**FIRST, "hidden_tests": {**HIDDEN, "listkit/test_seen.py": "x"}, "files": {**FILES, "listkit/test_seen.py": "x"}},
     "hidden_tests: 'listkit/test_seen.py' is also in files, where the model would see it"),
    ({**FIRST, "files": {**FILES, "listkit": "x"}}, "files: 'listkit' is both a file and a folder of other files"),
    ({**FIRST, "fix": {"listkit/other.py": "x = 1\n"}}, "fix: 'listkit/other.py' is not a file of the repository"),
    ({**FIRST, "fix": {"listkit/pages.py": FILES["listkit/pages.py"]}}, "fix: 'listkit/pages.py' is the same as the buggy file"),
    ({**FIRST, "issue": "   "}, "item 1 (id 'listkit-page'): issue: Value error, must not be empty"),
    ({**FIRST, "id": "has space"}, "item 1 (id 'has space'): id: String should match pattern"),
    ({**FIRST, "repo": "no-owner"}, "repo: String should match pattern"),
    ({**FIRST, "solution": "use + size"}, "solution: Extra inputs are not permitted"),
    (without(FIRST, "id"), "item 1: id: Field required"),
    ("a repository", "item 1: expected a mapping of id, family, repo, issue, files, hidden_tests and fix"),
]  # fmt: skip


@pytest.mark.parametrize(("entry", "message"), BAD_ENTRIES)
def test_a_malformed_repository_is_refused_naming_the_file_and_the_item(tmp_path: Path, entry: Any, message: str) -> None:
    bad = write_data(tmp_path, [entry], "bad.yaml")
    with pytest.raises(EvalDataError) as caught:
        load_from(bad)
    text = str(caught.value)
    assert text.startswith(f"1 problem in the ExpeRepair repositories of {bad}:\n{bad}: item 1") and message in text, text


def test_every_problem_in_every_file_is_named_at_once(tmp_path: Path) -> None:
    folder = tmp_path / "repos"
    first = write_data(folder, [FIRST, {**FIRST, "id": "other", "issue": ""}], "01.yaml")
    second = write_data(folder, {**FIRST, "family": "a family"}, "02.yaml")
    (folder / "03.yml").write_text("id: [unclosed\n", encoding="utf-8")
    (folder / "notes.txt").write_text("not a repository, not read\n", encoding="utf-8")
    with pytest.raises(EvalDataError) as caught:
        load_from(folder)
    lines = str(caught.value).splitlines()
    assert lines[0] == f"3 problems in the ExpeRepair repositories of {folder}:"
    assert lines[1] == f"{first}: item 2 (id 'other'): issue: Value error, must not be empty"
    assert lines[2].startswith(f"{second}: item 1 (id 'listkit-page'): family: String should match pattern")
    assert lines[3].startswith(f"{folder / '03.yml'}: cannot be read as YAML")
    assert len(lines) == 4  # the header and one line per problem; notes.txt is not a repository file


def test_a_repeated_id_names_the_item_that_used_it_first(tmp_path: Path) -> None:
    folder = tmp_path / "repos"
    first = write_data(folder, FIRST, "01.yaml")
    second = write_data(folder, {**FIRST, "issue": "another report"}, "02.json")
    with pytest.raises(EvalDataError, match="the id 'listkit-page' is already used by") as caught:
        load_from(folder)
    assert f"{second}: item 1 (id 'listkit-page')" in str(caught.value) and f"by {first}: item 1" in str(caught.value)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.yaml", "", "expected one repository (a mapping) or a list of them, got NoneType"),
        ("list.yaml", "[]\n", "expected one repository (a mapping) or a list of them, got list"),
        ("scalar.yaml", "just text\n", "got str"),
        ("broken.json", '{"id": ', "cannot be read as JSON"),
        ("repo.py", "x = 1\n", "a repository file is YAML or JSON (.yaml, .yml, .json)"),
    ],
)
def test_a_file_that_holds_no_repositories_is_refused(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(EvalDataError, match=re.escape(message)) as caught:
        load_from(path)
    assert str(path) in str(caught.value)


def test_a_missing_path_and_a_folder_without_repository_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(EvalDataError, match="no such file or folder of repositories"):
        load_from(tmp_path / "missing")
    (tmp_path / "README.md").write_text("nothing here\n", encoding="utf-8")
    with pytest.raises(EvalDataError, match=r"no repository files \(.yaml, .yml, .json\) in this folder"):
        load_from(tmp_path)


def test_a_file_may_hold_a_list_of_repositories_read_in_order(tmp_path: Path) -> None:
    second = {**FIRST, "id": "listkit-page-again"}
    items = load_from(write_data(tmp_path, [FIRST, second]))
    assert [item.id for item in items] == ["listkit-page", "listkit-page-again"]
    assert [item.group for item in items] == ["off_by_one", "off_by_one"]


async def test_a_malformed_last_repository_stops_even_a_quick_run_before_any_model_call(tmp_path: Path) -> None:
    folder = tmp_path / "repos"
    for number, repository in enumerate(BUNDLED, start=1):
        write_data(folder, repository.model_dump(), f"{number:02d}.yaml")
    write_data(folder, without(FIRST, "hidden_tests") | {"id": "last"}, "99.yaml")
    with ScriptedOpenAIServer() as server:
        server.script(json={})
        evaluation = ExpeRepairEvaluation(EvalOptions(quick=True, data=folder))
        with pytest.raises(EvalDataError, match="99.yaml: item 1 \\(id 'last'\\): hidden_tests: Field required"):
            await evaluate(evaluation, evaluation.select(evaluation.load()), scripted_settings(server), tmp_path / "work")
        assert server.requests == []
    assert not (tmp_path / "work").exists()


@pytest.mark.subprocess
def test_the_command_refuses_bad_repositories_before_it_looks_for_a_model(tmp_path: Path) -> None:
    bad = write_data(tmp_path, [FIRST, without(FIRST, "hidden_tests") | {"id": "second"}], "bad.yaml")
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("MNEMOFLOW_", "OPENAI_"))}
    no_model = {"MNEMOFLOW_LLM_OFFLINE": "0", "MNEMOFLOW_LOCAL_SERVER_HOME": "/nonexistent/mnemoflow-model"}
    done = subprocess.run(
        [MNEMOFLOW, "eval", "experepair", "--data", str(bad)],
        cwd=tmp_path, env={**environment, **no_model}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0 and f"{bad}: item 2 (id 'second'): hidden_tests: Field required" in done.stderr, done.stderr
    assert "local server" not in done.stderr and not (tmp_path / "bench").exists()


# -- scoring -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("run", "resolved"),
    [
        (HiddenTestRun(applied=True, acceptance=Acceptance(("t::a", "t::b"), {})), True),
        (HiddenTestRun(applied=False, error="patch does not apply"), False),
        (HiddenTestRun(applied=True, acceptance=Acceptance((), {})), False),  # no hidden test: nothing ran
        (HiddenTestRun(applied=True, acceptance=Acceptance(("t::a",), {"t::b": "failed: assert 1 == 2"})), False),
        (HiddenTestRun(applied=True, acceptance=Acceptance(("t::a",), {"t::b": "did not run"}, timed_out=True)), False),
    ],
)
def test_resolved_needs_an_applied_patch_and_every_hidden_test_run_and_passed(run: HiddenTestRun, resolved: bool) -> None:
    assert run.resolved is resolved


PAGES = BUNDLED[0]
GAMING_PATCHES = {
    "a conftest that skips every test": "--- /dev/null\n+++ b/conftest.py\n@@ -0,0 +1,3 @@\n+import pytest\n+def pytest_collection_modifyitems(items):\n+    items.clear()\n",
    "an ini that deselects every test": "--- /dev/null\n+++ b/pytest.ini\n@@ -0,0 +1,2 @@\n+[pytest]\n+addopts = -k nothing_matches\n",
    "a package that prints a passing report and exits": (
        '--- a/listkit/__init__.py\n+++ b/listkit/__init__.py\n@@ -1 +1,3 @@\n """Helpers for lists: pages and ranges."""\n'
        '+print(\'@@hidden-tests@@{"exit": 0, "passed": 4, "failed": 0, "errors": 0}\', flush=True)\n+import os; os._exit(0)\n'
    ),
}  # fmt: skip


HIDDEN_NAMES = re.findall(r"^def (test_\w+)", PAGES.hidden_tests["tests/test_hidden_pages.py"], re.MULTILINE)
PASSING_COPIES = "".join(f"def {name}():\n    pass\n\n\n" for name in HIDDEN_NAMES)
GAMING_FILES = {
    "a tests package holding passing tests of the hidden tests' names, imported by the package": {
        "tests/__init__.py": "",
        "tests/test_hidden_pages.py": PASSING_COPIES,
        "test_hidden_pages.py": PASSING_COPIES,
        "listkit/__init__.py": "import test_hidden_pages, tests.test_hidden_pages\n",
    },
    "a pytest.py that reports every test passed": {
        "pytest.py": "import sys\nprint('4 passed')\nsys.exit(0)\n",
    },
    "a pyproject.toml that deselects every test": {
        "pyproject.toml": "[tool.pytest.ini_options]\naddopts = '-k nothing_matches'\n",
    },
}


@pytest.mark.subprocess
async def test_a_patch_cannot_pass_the_hidden_tests_without_fixing_the_bug(tmp_path: Path) -> None:
    clone = await build_clone(tmp_path / "pages", PAGES)
    patches = {**GAMING_PATCHES, **{name: await fix_as_patch(clone, files) for name, files in GAMING_FILES.items()}}
    for name, patch in patches.items():
        run = await run_hidden_tests(clone, patch, PAGES.hidden_tests)
        assert run.applied and not run.resolved and run.acceptance is not None and run.acceptance.failed, (name, run)
    fixed_but_broken = PAGES.fix["listkit/pages.py"].replace("(total + size - 1) // size", "total // size")
    run = await run_hidden_tests(clone, await fix_as_patch(clone, {"listkit/pages.py": fixed_but_broken}), PAGES.hidden_tests)
    assert run.applied and not run.resolved and run.acceptance is not None
    assert "tests/test_hidden_pages.py::test_page_count_is_unchanged" in run.acceptance.failed
    fixed = await fix_as_patch(clone, {**PAGES.fix, **GAMING_FILES["a pytest.py that reports every test passed"]})
    assert (await run_hidden_tests(clone, fixed, PAGES.hidden_tests)).resolved  # the tricks only fail, never mislead
    assert not (await run_hidden_tests(clone, "", PAGES.hidden_tests)).resolved  # the bug itself
    assert not (await run_hidden_tests(clone, FIX_ADD, PAGES.hidden_tests)).applied  # a diff of another repository


@pytest.mark.subprocess
async def test_a_reproduction_is_valid_when_it_fails_on_the_bug_and_passes_with_the_fix(tmp_path: Path) -> None:
    clone = await build_clone(tmp_path / "pages", PAGES)
    tells_them_apart = "from listkit.pages import page\nassert page([1, 2, 3], 1, 3) == [1, 2, 3], page([1, 2, 3], 1, 3)\n"
    assert await reproduction_is_valid(clone, tells_them_apart, PAGES.fix)
    assert not await reproduction_is_valid(clone, "raise SystemExit(1)\n", PAGES.fix)  # fails either way
    assert not await reproduction_is_valid(clone, "from listkit.pages import page\nprint(page([1], 1, 1))\n", PAGES.fix)
    assert not await reproduction_is_valid(clone, "test_reproduction.py", PAGES.fix)  # what a small model may write


def attempt(item_id: str, family: str, resolved: float) -> Attempt:
    outcome = Outcome(resolved, {"resolved": resolved, "patch_produced": 1.0})
    return Attempt(Item(item_id, None, group=family), "experepair", outcome, Reading(), 1.0)


def test_the_summary_gives_the_resolve_rate_per_family_per_half_of_the_sequence_and_per_phase() -> None:
    attempts = [attempt("a1", "a", 0.0), attempt("b1", "b", 1.0), attempt("a2", "a", 1.0), attempt("b2", "b", 1.0),
                attempt("c1", "c", 0.0)]  # fmt: skip
    evaluation = ExpeRepairEvaluation(EvalOptions())
    evaluation.seeding = {"a1", "b1", "c1"}
    summary = evaluation.summarize("experepair", attempts)
    assert summary == {
        "resolved_first_half": 0.5,
        "resolved_second_half": pytest.approx(2 / 3, abs=1e-4),
        "resolved_seed_phase": pytest.approx(1 / 3, abs=1e-4),
        "resolved_inference_phase": 1.0,
        "resolved_by_family": {"a": 0.5, "b": 1.0, "c": 0.0},
    }
    assert ExpeRepairEvaluation(EvalOptions()).summarize("experepair", []) == {"resolved_by_family": {}}


def test_the_seed_phase_takes_the_first_issues_of_each_repository(tmp_path: Path) -> None:
    other = {**FIRST, "id": "other-repo", "repo": "acme/other"}
    data = write_data(tmp_path, [FIRST, {**FIRST, "id": "second"}, other, {**FIRST, "id": "third"}])
    seeds = {}
    for seed in (None, 0, 2):
        evaluation = ExpeRepairEvaluation(EvalOptions(data=data, seed=seed))
        evaluation.load()
        seeds[seed] = evaluation.seeding
        assert evaluation.describe()["seed"]["items"] == [item for item in ("listkit-page", "second", "other-repo", "third")
                                                          if item in evaluation.seeding]  # fmt: skip
    assert seeds == {None: {"listkit-page", "other-repo"}, 0: set(), 2: {"listkit-page", "second", "other-repo"}}
    with pytest.raises(ConfigError, match="seed -1: the number of issues per repository run in the seed phase cannot be negative"):
        ExpeRepairEvaluation(EvalOptions(seed=-1))


def test_a_failed_attempt_scores_zero_on_every_score_its_item_has() -> None:
    evaluation = ExpeRepairEvaluation(EvalOptions())
    with_fix = Item(PAGES.id, PAGES, PAGES.family)
    without_fix = Item("plain", PAGES.model_copy(update={"fix": {}}), PAGES.family)
    assert evaluation.failure(with_fix, "experepair").scores == {"resolved": 0.0, "patch_produced": 0.0, "reproduction_valid": 0.0}
    assert evaluation.failure(without_fix, "no_memory").scores == {"resolved": 0.0, "patch_produced": 0.0}


async def test_on_the_small_local_model_the_graph_runs_with_smaller_loops_and_reply_caps(tmp_path: Path) -> None:
    budgets = {}
    for kind in ("local", "openai"):
        evaluation = ExpeRepairEvaluation(EvalOptions())
        bench = Bench("experepair", None, SimpleNamespace(kind=kind), tmp_path)  # type: ignore[arg-type]
        await evaluation.prepare(bench, "experepair")
        budgets[kind] = evaluation.describe()["budgets"]
    local, own = budgets["local"], budgets["openai"]
    assert local["routes"] == {"judge_test": {"max_test_attempts": 1}, "review": {"max_rounds": 1}}
    assert local["nodes"]["generate"] == {"temperatures": [0.0, 0.8], "max_tokens": 384}
    assert local["nodes"]["review"] == {"reviews": 2, "exit_code_gate": False, "max_tokens": 128}
    assert local["nodes"]["write_diff_tests"] == {"temperatures": [0.0], "max_inputs": 4, "max_tokens": 256}
    assert local["nodes"]["variants"] == {"max_patches": 1, "timeout_s": 30.0, "memory_mb": 512, "max_tokens": 384}
    assert local["nodes"]["update_insights"] == {"max_tokens": 96}
    assert all(local["nodes"][name]["timeout_s"] == 30.0 for name in ("run_test", "evaluate", "variants", "run_diff_tests"))
    # the file's (the paper's) budgets on a capable endpoint
    assert own["routes"] == {"judge_test": {"max_test_attempts": 3}, "review": {"max_rounds": 3}}
    assert own["nodes"]["generate"] == {"temperatures": [0.0, 0.8, 0.8, 0.8]} and own["nodes"]["review"]["reviews"] == 4
    assert "update_insights" not in own["nodes"]


# -- both systems on the scripted model -------------------------------------------------------------------------

CALC = {"calc/__init__.py": '"""A calculator."""\n', "calc/ops.py": "def add(a, b):\n    return a - b\n",
        "calc/more.py": "def multiply(a, b):\n    return a + b\n"}  # fmt: skip
ADD_SCRIPT = "from calc.ops import add\nprint(add(2, 3))\nassert add(2, 3) == 5\n"
WEAK_MULTIPLY_SCRIPT = "from calc.more import multiply\nprint(multiply(2, 3))\nassert multiply(2, 3) != 5\n"
"""Fails on the bug, but also passes with a wrong patch: the graph's own check is only as good as its script."""
REPOSITORIES = [
    {"id": "calc-add", "family": "operator", "repo": "acme/calc", "issue": "add(2, 3) gives -1 instead of 5.",
     "files": CALC, "hidden_tests": {"tests/test_add.py": "from calc.ops import add\n\ndef test_add():\n    assert add(2, 3) == 5\n"},
     "fix": {"calc/ops.py": "def add(a, b):\n    return a + b\n"}},
    {"id": "calc-multiply", "family": "operator", "repo": "acme/calc", "issue": "multiply(2, 3) gives 5 instead of 6.",
     "files": CALC, "hidden_tests": {"tests/test_multiply.py": "from calc.more import multiply\n\ndef test_multiply():\n"
                                     "    assert multiply(2, 3) == 6\n    assert multiply(0, 7) == 0\n"},
     "fix": {"calc/more.py": "def multiply(a, b):\n    return a * b\n"}},
]  # fmt: skip
TESTER_INSIGHT = "Assert the exact expected value."


def reply(body: dict[str, Any]) -> Any:
    """The scripted model, by the reply schema asked for: the add issue gets the right fix, the multiply issue a
    wrong one that its weak script passes; every reviewer accepts, and validation keeps the first group."""
    schema = body["response_format"]["json_schema"]["name"]
    system, user = body["messages"][0]["content"], body["messages"][-1]["content"]
    adding = user.startswith(("Issue:\nadd(", "Issue: add("))  # the issue, not an example from another one
    path, function = ("calc/ops.py", "add") if adding else ("calc/more.py", "multiply")
    replies: dict[str, Any] = {
        "TestScript": {"script": ADD_SCRIPT if adding else WEAK_MULTIPLY_SCRIPT},
        "Judgement": {"analysis": "the assertion fails as reported", "reproduces": True},
        "SuspiciousFiles": {"files": [path]},
        "FunctionTargets": {"functions": [{"file": path, "function": function, "reason": "the operator"}]},
        "EditLocations": {"locations": [{"file": path, "function": function, "start": 1, "end": 2, "reason": "the operator"}]},
        "Patch": {"patch": FIX_ADD if adding else WRONG_MULTIPLY},
        "Review": {"ranking": [1, 2], "correct": [1, 2], "analysis": "the reproduction passes"},
        "PatchVariants": {"expanded": "", "compressed": ""},
        "DiffTest": {"script": ""},
        "GroupSelection": {"correct": [1], "analysis": "it fixes the issue"},
        "GroupRanking": {"ranking": [1], "analysis": "the first"},
    }
    if schema == "InsightEdits":
        tester = "insights for the tester agent" in system
        return {"edits": [{"operation": "ADD", "number": 0, "text": TESTER_INSIGHT}] if tester else []}
    if schema not in replies:
        raise AssertionError(f"unscripted reply {schema}: {system[:80]}")
    return replies[schema]


def scripted_settings(server: ScriptedOpenAIServer) -> Settings:
    return Settings(
        openai=OpenAISettings(base_url=server.base_url, api_key="test"),  # type: ignore[arg-type]
        llm=LLMSettings(model="scripted", initial_backoff=0.0, max_backoff=0.01),
    )


SYSTEMS = ("experepair", "no_memory", "no_episodic", "no_semantic")


@pytest.mark.subprocess
@pytest.mark.slow
async def test_every_system_is_scored_by_the_hidden_tests_and_reads_and_grows_only_its_memories(tmp_path: Path) -> None:
    with ScriptedOpenAIServer() as server:
        server.script(respond=reply)
        evaluation = ExpeRepairEvaluation(EvalOptions(data=write_data(tmp_path, REPOSITORIES)))
        # the small model's budgets (fewer candidates, reviews and sandbox runs than the file's): they must fit the nodes
        graph = with_node_config(load_graph("experepair"), SMALL_MODEL_BUDGETS["nodes"])
        evaluation.graph = with_route_config(graph, SMALL_MODEL_BUDGETS["routes"])
        result = await evaluate(evaluation, evaluation.load(), scripted_settings(server), tmp_path / "work")
        sent = json.dumps([request["body"] for request in server.requests])
        tester_prompts = [(r["body"]["messages"][0]["content"], r["body"]["messages"][-1]["content"]) for r in server.requests
                          if "You are the Test Agent" in r["body"]["messages"][0]["content"]]  # fmt: skip
    assert "def test_add" not in sent and "def test_multiply" not in sent  # the hidden tests never reach the model
    assert "return a * b" not in sent  # nor the reference fix
    assert list(result["systems"]) == list(SYSTEMS)
    per_item = {(entry["item"], entry["system"]): entry for entry in result["per_item"]}
    for system in SYSTEMS:
        add, multiply = per_item[("calc-add", system)], per_item[("calc-multiply", system)]
        assert add["scores"] == {"resolved": 1.0, "patch_produced": 1.0, "reproduction_valid": 1.0}
        assert add["detail"]["hidden_tests"]["passed"] == 1 and "+    return a + b" in add["detail"]["final_patch"]
        # the graph accepted a wrong patch (its script passes with it); the hidden tests do not
        assert multiply["detail"]["status"] == "resolved" and "return a - b" in multiply["detail"]["final_patch"]
        assert multiply["scores"] == {"resolved": 0.0, "patch_produced": 1.0, "reproduction_valid": 1.0}
        assert multiply["detail"]["hidden_tests"]["failed"] == 1
        # the first issue of the repository seeds (static prompts), the second reads what the seed left
        assert (add["detail"]["phase"], multiply["detail"]["phase"]) == ("seed", "inference")
        assert add["detail"]["insights_shown"] == {"tester": 0, "coder": 0} and add["detail"]["demos_used"] == {}
        scores = result["systems"][system]["scores"]
        assert scores["resolved_by_family"] == {"operator": 0.5} and result["systems"][system]["score"] == 0.5
        assert (scores["resolved_seed_phase"], scores["resolved_inference_phase"]) == (1.0, 0.0)
    shown = {system: per_item[("calc-multiply", system)]["detail"]["insights_shown"] for system in SYSTEMS}
    assert shown == {"experepair": {"tester": 1, "coder": 0}, "no_memory": {"tester": 0, "coder": 0},
                     "no_episodic": {"tester": 1, "coder": 0}, "no_semantic": {"tester": 0, "coder": 0}}  # fmt: skip
    used = {system: per_item[("calc-multiply", system)]["detail"]["demos_used"] for system in SYSTEMS}
    assert set(used["experepair"]) == set(used["no_semantic"]) == {"test_initial"}  # the first issue's working script
    assert used["experepair"]["test_initial"][0]["rank"] == 1 and used["no_memory"] == used["no_episodic"] == {}
    for item in ("calc-add", "calc-multiply"):  # the same repair; editing insights adds its two calls
        calls = {system: per_item[(item, system)]["calls"] for system in SYSTEMS}
        assert calls["experepair"] == calls["no_episodic"] == calls["no_memory"] + 2 == calls["no_semantic"] + 2
    assert len(tester_prompts) == 2 * len(SYSTEMS)  # in the order the harness runs: item by item, system by system
    first, second = dict(zip(SYSTEMS, tester_prompts[:4], strict=True)), dict(zip(SYSTEMS, tester_prompts[4:], strict=True))
    assert all("Not available" in user and TESTER_INSIGHT not in system for system, user in first.values())  # seed phase
    for name, (system, user) in second.items():
        assert (ADD_SCRIPT in user) is (name in ("experepair", "no_semantic")), name
        assert (TESTER_INSIGHT in system) is (name in ("experepair", "no_episodic")), name
    assert result["data"]["families"] == {"operator": 2} and result["data"]["budgets"]["routes"] == SMALL_MODEL_BUDGETS["routes"]
    assert result["data"]["seed"]["items"] == ["calc-add"]
