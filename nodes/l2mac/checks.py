"""The evaluator: syntax and static error checks and the project's tests, on a scratch copy of the file store.

One sandboxed Python process (:func:`mnemoflow.nodes.sandbox.run_python`: time, memory and output bounds, no network)
compiles every ``.py`` file; with the ``pylint`` checker (the default, as the paper) it then runs pylint for errors
only over the files that compiled (``--disable=all --enable=E --disable=E0401``, the modules the project imports but
does not hold passed as ``--ignored-modules``, any pylint configuration the project holds ignored); then, when tests
are on, pytest over the copy. A static error is a pylint line ``path:line:col: E####: ...``, counted as the
reference counts them. The ``compile`` checker skips pylint: what runs where pylint is not installed. A check that
runs out of time is killed and is a failure: the reference code counted it as a pass, which let a hanging test
through. No test collected is a pass: an instruction need not add tests. Files that cannot be copied into the
scratch folder (kept before the file store refused them: a name too long, a file where a folder of that name is)
are a failure naming the file, and nothing runs.

The same scratch copy serves the model's own runs (:func:`run_file`, :func:`run_tests`): a Python file with
arguments, or pytest on chosen files, bounded the same way.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from mnemoflow.errors import ConfigError
from mnemoflow.nodes.l2mac.files import find_clash
from mnemoflow.nodes.sandbox import SANDBOX_DIR, Execution, Limits, run_python
from mnemoflow.nodes.tokens import clip

__all__ = ["PYLINT_ARGS", "TEST_HINT", "CheckResult", "Checker", "pylint_installed", "run_checks", "run_file", "run_tests"]

Checker = Literal["pylint", "compile"]
"""The static check: pylint's error codes (the paper's), or compiling only (nothing to install)."""

PYLINT_ARGS = ("--disable=all", "--enable=E", "--disable=E0401", "--score=n", "--persistent=n")
"""Errors only, unresolved imports aside (a package the sandbox lacks is not the code's error), as the reference."""
TEST_HINT = (
    "If a test fails, the code or the test may be wrong: fix the code, or change a test that is incorrect, so that "
    "all tests pass."
)
"""Said with every result of the model's own pytest runs, as the reference says it."""

_MARK = "@@l2mac-checks@@"
_SCRIPT = """\
import io, json, os, pathlib, re, sys
os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # only the project's own conftest and plugins
MARK = %(mark)r
sources = [path for path in sorted(pathlib.Path(".").rglob("*.py")) if not path.parts[0].startswith(".mnemoflow")]
syntax, compiled = [], []
for path in sources:
    try:
        compile(path.read_text(encoding="utf-8"), str(path), "exec")
    except SyntaxError as error:
        syntax.append(f"{path}:{error.lineno}:{error.offset}: SyntaxError: {error.msg}")
    except (UnicodeDecodeError, ValueError) as error:
        syntax.append(f"{path}: {error}")
    else:
        compiled.append(path)
static, note = [], ""
if %(checker)r == "pylint" and compiled:
    try:
        from pylint.lint import Run
        from pylint.reporters.text import TextReporter
    except ImportError:
        note = "pylint is not installed in the interpreter the checks run with"
    else:
        local = {path.parts[0].removesuffix(".py") for path in sources}
        imported = set()
        for path in compiled:
            for line in path.read_text(encoding="utf-8").splitlines():
                found = re.match(r"(?:from|import) +([A-Za-z_][A-Za-z0-9_]*)", line)
                if found and found.group(1) not in local:
                    imported.add(found.group(1))
        rcfile = pathlib.Path(%(sandbox)r) / "empty-pylintrc"
        rcfile.write_text("", encoding="utf-8")  # the project's own pylint configuration is not read
        report = io.StringIO()
        arguments = [f"--rcfile={rcfile}", *%(pylint)r, "--msg-template={path}:{line}:{column}: {msg_id}: {msg} ({symbol})"]
        if imported:
            arguments.append("--ignored-modules=" + ",".join(sorted(imported)))
        Run([*arguments, *map(str, compiled)], reporter=TextReporter(report), exit=False)
        static = [line for line in report.getvalue().splitlines() if re.match(r".+:[0-9]+:[0-9]+: E[0-9]+: ", line)]
counts = {"passed": 0, "failed": 0, "errors": 0}
exit_code = None
if %(tests)r and not note:
    try:
        import pytest
    except ImportError:
        note = "pytest is not installed"
    else:

        class Count:
            def pytest_runtest_logreport(self, report):
                if report.when == "call":
                    counts["passed" if report.passed else "failed"] += not report.skipped
                elif report.failed:
                    counts["errors"] += 1

            def pytest_collectreport(self, report):
                if report.failed:
                    counts["errors"] += 1

        sys.stdout.flush()
        exit_code = int(pytest.main(["-q", "-p", "no:cacheprovider", "--color=no", "--rootdir", ".", "."], plugins=[Count()]))
print(MARK + json.dumps({"syntax": syntax, "static": static, "counts": counts, "exit": exit_code, "note": note}))
"""
_RUN_FILE = """\
import os, runpy, sys
path = %(path)r
sys.argv = [path, *%(arguments)r]
sys.path[0] = os.path.dirname(os.path.abspath(path))  # as `python path` puts the file's folder first
runpy.run_path(path, run_name="__main__")
"""
_RUN_TESTS = """\
import os, sys
os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
import pytest
sys.exit(int(pytest.main(["-q", "-p", "no:cacheprovider", "--color=no", "--rootdir", ".", *%(paths)r])))
"""


@dataclass(frozen=True)
class CheckResult:
    """What one run of the checks found."""

    syntax_errors: list[str]
    tests_passed: int
    tests_failed: int
    test_errors: int
    """Collection errors and errors in set-up or tear-down."""
    timed_out: bool
    output: str
    """pytest's report (head and tail), or why the checks could not run."""
    static_errors: list[str] = field(default_factory=list)
    """pylint's error lines, ``path:line:col: E####: message (symbol)``."""
    checker: Checker = "compile"

    @property
    def passed(self) -> bool:
        return not (self.timed_out or self.syntax_errors or self.static_errors or self.tests_failed or self.test_errors)

    def report(self, max_chars: int = 4_000) -> str:
        """The result as the model reads it: the errors and the test results together."""
        static = self.checker == "pylint"
        if self.timed_out:
            head = "FAILED: the checks did not finish within their time limit and were killed (a test may hang or loop)."
        elif self.passed:
            head = f"PASSED: no syntax{' or pylint' if static else ''} errors; tests passed: {self.tests_passed}."
        else:
            errors = f"{len(self.syntax_errors)} syntax error(s)"
            if static:
                errors += f", {len(self.static_errors)} pylint error(s)"
            head = f"FAILED: {errors}; tests passed {self.tests_passed}, failed {self.tests_failed}, errors {self.test_errors}."
        parts = [head, *self.syntax_errors[:20], *self.static_errors[:20]]
        if self.output and not self.passed:
            parts.append(clip(self.output, max_chars))
        return "\n".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}

    @classmethod
    def from_dict(cls, found: dict[str, Any]) -> CheckResult:
        """The result :meth:`as_dict` gave (other keys ignored; one recorded before static checks had none)."""
        return cls(**{name: found[name] for name in cls.__dataclass_fields__ if name in found})


def pylint_installed() -> bool:
    """Whether the checks' interpreter (this one: the sandbox runs ``sys.executable``) can import pylint."""
    return importlib.util.find_spec("pylint") is not None


async def run_checks(files: dict[str, str], limits: Limits, *, tests: bool = True, checker: Checker = "pylint") -> CheckResult:
    """Copy ``files`` (path -> content) into a scratch folder and check them there, bounded by ``limits``.

    Raises:
        ConfigError: ``checker`` is ``pylint`` and pylint is not installed.
    """
    if checker == "pylint" and not pylint_installed():
        raise ConfigError(
            "l2mac: the checker is pylint but pylint is not installed: install it (pip install 'pylint>=4.1') or set "
            "`checker: compile` on the run_tools node"
        )
    script = _SCRIPT % {"mark": _MARK, "tests": tests, "checker": checker, "pylint": PYLINT_ARGS, "sandbox": SANDBOX_DIR}
    execution = await _run_in_copy(files, script, limits)
    if isinstance(execution, str):
        return CheckResult([], 0, 0, 1, False, f"{execution}; the checks did not run: delete or rename the file", [], checker)
    if execution.timed_out:
        return CheckResult([], 0, 0, 0, True, execution.output, [], checker)
    marked = [line for line in execution.stdout.splitlines() if line.startswith(_MARK)]
    report = "\n".join(line for line in execution.stdout.splitlines() if not line.startswith(_MARK)).strip()
    if not marked:
        why = f"the checks stopped before reporting (exit code {execution.returncode})"
        return CheckResult([why], 0, 0, 1, False, (report + "\n" + execution.stderr).strip(), [], checker)
    found = json.loads(marked[-1][len(_MARK) :])
    counts = found["counts"]
    errors = counts["errors"]
    if found["note"]:
        errors += 1
        report = found["note"]
    elif found["exit"] not in (None, 0, 1, 5) and not (counts["failed"] or errors):
        errors += 1  # pytest itself failed (usage error, internal error, interrupted)
    return CheckResult(found["syntax"], counts["passed"], counts["failed"], errors, False, report, found["static"], checker)


async def run_file(files: dict[str, str], path: str, arguments: list[str], limits: Limits) -> str:
    """``python path arguments`` on a scratch copy of ``files``: its output (stdout; stderr when it fails)."""
    execution = await _run_in_copy(files, _RUN_FILE % {"path": path, "arguments": arguments}, limits)
    if isinstance(execution, str):
        return f"{execution}; nothing ran: delete or rename the file"
    if execution.timed_out:
        return f"{path} did not finish within {limits.timeout_s:g} s and was killed.\n{execution.output}".strip()
    if execution.returncode != 0:
        return f"{path} exited with code {execution.returncode}:\n{execution.stderr.strip()}"
    return execution.stdout.strip() or f"{path} ran and printed nothing."


async def run_tests(files: dict[str, str], paths: list[str], limits: Limits) -> str:
    """pytest on ``paths`` (all tests when empty) in a scratch copy of ``files``: its report, and :data:`TEST_HINT`."""
    execution = await _run_in_copy(files, _RUN_TESTS % {"paths": paths}, limits)
    if isinstance(execution, str):
        return f"{execution}; nothing ran: delete or rename the file"
    if execution.timed_out:
        output = f"The tests did not finish within {limits.timeout_s:g} s and were killed.\n{execution.output}".strip()
    else:
        output = execution.output
    return f"{output}\n{TEST_HINT}"


async def _run_in_copy(files: dict[str, str], script: str, limits: Limits) -> Execution | str:
    """Run ``script`` in a scratch folder holding ``files``; or why a file could not be copied there."""
    scratch = Path(tempfile.mkdtemp(prefix="mnemoflow-l2mac-"))
    try:
        uncopied = _copy_files(files, scratch)
        if uncopied:
            return uncopied
        return await run_python(scratch, script, limits)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _copy_files(files: dict[str, str], scratch: Path) -> str | None:
    """Write ``files`` under ``scratch``; None, or why a file could not be written (the files after it are not)."""
    for path, content in files.items():
        target = scratch / path
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content, encoding="utf-8")
        except (OSError, UnicodeError) as error:
            why = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
            return find_clash(path, files.keys()) or f"{path}: could not be copied for the checks ({why})"
    return None
