"""Hidden tests: pytest files a model never saw, run against the code it wrote, one verdict per test.

The evaluations that score written code (L2MAC's programs, ExpeRepair's patches) share this runner, so a test passes
or fails for the same reasons in both. What it guards against, and how:

- **Nothing in the project changes the run.** The tests are written to a folder outside the project, with an empty
  ``pytest.ini`` of their own (the rootdir, and where conftest lookup stops), and run with ``--noconftest``: a
  ``conftest.py``, ``pytest.ini`` or ``pyproject.toml`` in the project is never read. The project is the working
  folder and on the import path, so the tests import it as its users would.
- **Nothing in the project stands in for a test file.** The tests are imported in pytest's ``importlib`` mode (the
  test folder is not put on ``sys.path``), the files are named on the command line, and a test whose module was not
  loaded from its hidden file (a module of the project imported under the same name first) fails as shadowed.
  pytest itself is imported before the project is on the path, so a ``pytest.py`` there cannot replace it.
- **Nothing printed counts.** Each report goes to a results file, not to the output the tested code shares.
- **A hanging test fails alone.** Each test has its own time limit (SIGALRM); a test deaf to it is stopped with the
  whole run by the sandbox's bound, and the reports written before then still count.

This is a guard against accidents and cheap tricks, not a security boundary: the tested code runs as the same user
on the same filesystem (:mod:`mnemoflow.nodes.sandbox`).
"""

from __future__ import annotations

import ast
import contextlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnemoflow.nodes.sandbox import Limits, run_python

__all__ = ["LIMITS", "TEST_SECONDS", "Acceptance", "expected_tests", "run_acceptance", "tally"]

TEST_SECONDS = 10.0
"""Time one hidden test may take before it fails alone (a hanging test does not fail the others)."""
LIMITS = Limits(timeout_s=120.0, memory_mb=1_024)
"""The whole run's bounds; tests that did not report before it was killed fail."""

_RESULTS = "results.jsonl"
_SCRIPT = """\
import os, sys
_project = os.path.realpath(os.getcwd())
_path = list(sys.path)  # pytest and this script's modules from the interpreter, never from the project
sys.path[:] = [entry for entry in sys.path if not (os.path.realpath(entry or ".") + os.sep).startswith(_project + os.sep)]
import json, signal
os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # no plugin of the interpreter's environment
import pytest
sys.path[:] = _path

TESTS, FILES, RESULTS, SECONDS = %(tests)r, %(files)r, %(results)r, %(seconds)r


def too_slow(signum, frame):
    raise TimeoutError(f"the test ran longer than {SECONDS} s")


class Record:
    def __init__(self):
        self.out = open(RESULTS, "a", encoding="utf-8")

    def write(self, test, outcome, why):
        self.out.write(json.dumps({"test": test, "outcome": outcome, "why": why[-600:]}) + "\\n")
        self.out.flush()

    def pytest_collection_modifyitems(self, items):
        kept = []
        for item in items:
            origin = getattr(getattr(item, "module", None), "__file__", None) or "no file"
            if os.path.realpath(origin) == os.path.realpath(str(item.path)):
                kept.append(item)
            else:
                self.write(item.nodeid, "error", f"shadowed: its module was loaded from {origin}, not the hidden test file")
        items[:] = kept

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item):
        signal.signal(signal.SIGALRM, too_slow)
        signal.setitimer(signal.ITIMER_REAL, SECONDS)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)

    def pytest_runtest_logreport(self, report):
        if report.when == "call" or report.failed:
            outcome = report.outcome if report.when == "call" else "error"  # set-up or tear-down failed
            self.write(report.nodeid, outcome, report.longreprtext if report.failed else "")

    def pytest_collectreport(self, report):
        if report.failed:
            self.write(report.nodeid, "error", report.longreprtext)


arguments = ["-q", "-p", "no:cacheprovider", "--import-mode=importlib", "--noconftest",
             "-c", os.path.join(TESTS, "pytest.ini"), "--rootdir", TESTS]
sys.exit(int(pytest.main([*arguments, *(os.path.join(TESTS, name) for name in FILES)], plugins=[Record()])))
"""


@dataclass(frozen=True)
class Acceptance:
    """How a project did on the hidden tests."""

    passed: tuple[str, ...]
    failed: dict[str, str]
    """Each failed test with why (``outcome: the gist of pytest's report``, or why it did not run)."""
    timed_out: bool = False

    @property
    def pass_rate(self) -> float:
        total = len(self.passed) + len(self.failed)
        return len(self.passed) / total if total else 0.0

    @property
    def all_passed(self) -> bool:
        """At least one hidden test, and every one passed: no run of nothing counts as a success."""
        return bool(self.passed) and not self.failed


def expected_tests(name: str, source: str) -> list[str]:
    """The tests pytest collects from a test file (functions ``test*``, methods ``test*`` of classes ``Test*``), by
    ``file::name``; what is expected comes from the file, so a test that never reports fails rather than vanishes.
    SyntaxError for a file that does not parse, ValueError for one naming a test twice."""
    tree = ast.parse(source, filename=name)
    found: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test"):
            found.append(f"{name}::{node.name}")
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            found += [
                f"{name}::{node.name}::{member.name}"
                for member in node.body
                if isinstance(member, ast.FunctionDef | ast.AsyncFunctionDef) and member.name.startswith("test")
            ]
    twice = sorted({test for test in found if found.count(test) > 1})
    if twice:
        raise ValueError(f"{name} defines {', '.join(twice)} more than once (pytest would run only the last)")
    return found


def _gist(report: str) -> str:
    """The line of a pytest report that says what went wrong (its first ``E`` line), else its last line."""
    lines = [line.strip() for line in report.splitlines() if line.strip()]
    errors = [line[1:].strip() for line in lines if line.startswith("E ")]
    return (errors or lines[-1:] or [""])[0][:300]


def tally(records: Iterable[Mapping[str, Any]], tests: Sequence[str], *, timed_out: bool = False) -> Acceptance:
    """Each expected test's verdict from the run's records: passed when every report of it (each parameter, set-up,
    the call, tear-down) passed; a test without a report failed, with its file's collection error when there is
    one."""
    reports: dict[str, list[Mapping[str, Any]]] = {}
    broken: dict[str, str] = {}
    for record in records:
        test = str(record["test"]).split("[", 1)[0]
        if "::" not in test:
            broken[test] = str(record.get("why", ""))
        reports.setdefault(test, []).append(record)
    passed: list[str] = []
    failed: dict[str, str] = {}
    for test in tests:
        mine = reports.get(test, [])
        if mine and all(report["outcome"] == "passed" for report in mine):
            passed.append(test)
            continue
        wrong = next((report for report in mine if report["outcome"] != "passed"), None)
        if wrong is not None:
            failed[test] = f"{wrong['outcome']}: {_gist(str(wrong.get('why', '')))}".strip()
        elif test.split("::", 1)[0] in broken:
            failed[test] = "not collected: " + _gist(broken[test.split("::", 1)[0]])
        else:
            failed[test] = "did not run: the run was stopped (time limit)" if timed_out else "did not run"
    return Acceptance(tuple(passed), failed, timed_out)


async def run_acceptance(
    project: Path,
    hidden_tests: Mapping[str, str],
    folder: Path,
    *,
    limits: Limits = LIMITS,
    test_seconds: float = TEST_SECONDS,
) -> Acceptance:
    """Run ``hidden_tests`` (relative path -> source, such as ``test_a.py`` or ``tests/test_a.py``) against the
    project in ``project`` (the working folder, its root on the import path), from ``folder`` (created; outside the
    project, so the project never holds them and nothing in it configures the run), in the sandbox."""
    root, tests_root = project.resolve(), folder.resolve()
    if tests_root == root or tests_root.is_relative_to(root):
        raise ValueError(f"the hidden tests' folder {folder} is inside the project {project}")
    folder.mkdir(parents=True, exist_ok=True)
    project.mkdir(parents=True, exist_ok=True)
    tests: list[str] = []
    for name, source in hidden_tests.items():
        target = (folder / name).resolve()
        if not target.is_relative_to(tests_root) or target.suffix != ".py":
            raise ValueError(f"hidden test path {name!r}: a .py file inside the tests' folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(source, encoding="utf-8")
        tests += expected_tests(name, source)
    (folder / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")  # no setting of any folder above applies
    results = folder / _RESULTS
    results.unlink(missing_ok=True)
    values = {"tests": str(tests_root), "files": sorted(hidden_tests), "results": str(results.resolve()), "seconds": test_seconds}
    execution = await run_python(project, _SCRIPT % values, limits)
    records = []
    for line in results.read_text(encoding="utf-8").splitlines() if results.exists() else []:
        with contextlib.suppress(json.JSONDecodeError):  # a line cut short by the kill at the time limit
            records.append(json.loads(line))
    return tally(records, tests, timed_out=execution.timed_out)
