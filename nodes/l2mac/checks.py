"""The evaluator: syntax checks and the project's tests, run on a scratch copy of the file store in the sandbox.

One sandboxed Python process (:func:`mnemoflow.nodes.sandbox.run_python`: time, memory and output bounds, no network)
compiles every ``.py`` file and then, when tests are on, runs pytest over the copy. A check that runs out of time is
killed and is a failure: the reference code counted it as a pass, which let a hanging test through. No test
collected is a pass: an instruction need not add tests. Files that cannot be copied into the scratch folder (kept
before the file store refused them: a name too long, a file where a folder of that name is) are a failure naming
the file, and nothing runs.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mnemoflow.nodes.l2mac.files import find_clash
from mnemoflow.nodes.sandbox import Limits, run_python
from mnemoflow.nodes.tokens import clip

__all__ = ["CheckResult", "run_checks"]

_MARK = "@@l2mac-checks@@"
_SCRIPT = """\
import json, os, pathlib, sys
os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # only the project's own conftest and plugins
MARK = %(mark)r
syntax = []
for path in sorted(pathlib.Path(".").rglob("*.py")):
    if path.parts[0].startswith(".mnemoflow"):
        continue
    try:
        compile(path.read_text(encoding="utf-8"), str(path), "exec")
    except SyntaxError as error:
        syntax.append(f"{path}:{error.lineno}:{error.offset}: SyntaxError: {error.msg}")
    except (UnicodeDecodeError, ValueError) as error:
        syntax.append(f"{path}: {error}")
counts = {"passed": 0, "failed": 0, "errors": 0}
exit_code = None
if %(tests)r:
    try:
        import pytest
    except ImportError:
        print(MARK + json.dumps({"syntax": syntax, "counts": counts, "exit": -1, "note": "pytest is not installed"}))
        sys.exit(0)

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
print(MARK + json.dumps({"syntax": syntax, "counts": counts, "exit": exit_code}))
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

    @property
    def passed(self) -> bool:
        return not (self.timed_out or self.syntax_errors or self.tests_failed or self.test_errors)

    def report(self, max_chars: int = 4_000) -> str:
        """The result as the model reads it."""
        if self.timed_out:
            head = "FAILED: the checks did not finish within their time limit and were killed (a test may hang or loop)."
        elif self.passed:
            head = f"PASSED: no syntax errors; tests passed: {self.tests_passed}."
        else:
            head = (
                f"FAILED: {len(self.syntax_errors)} syntax error(s); tests passed {self.tests_passed}, "
                f"failed {self.tests_failed}, errors {self.test_errors}."
            )
        parts = [head, *self.syntax_errors[:20]]
        if self.output and not self.passed:
            parts.append(clip(self.output, max_chars))
        return "\n".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}

    @classmethod
    def from_dict(cls, found: dict[str, Any]) -> CheckResult:
        """The result :meth:`as_dict` gave (other keys ignored)."""
        return cls(**{name: found[name] for name in cls.__dataclass_fields__})


async def run_checks(files: dict[str, str], limits: Limits, *, tests: bool = True) -> CheckResult:
    """Copy ``files`` (path -> content) into a scratch folder and check them there, bounded by ``limits``."""
    scratch = Path(tempfile.mkdtemp(prefix="mnemoflow-l2mac-"))
    try:
        uncopied = _copy_files(files, scratch)
        if uncopied:
            return CheckResult([], 0, 0, 1, False, f"{uncopied}; the checks did not run: delete or rename the file")
        execution = await run_python(scratch, _SCRIPT % {"mark": _MARK, "tests": tests}, limits)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if execution.timed_out:
        return CheckResult([], 0, 0, 0, True, execution.output)
    marked = [line for line in execution.stdout.splitlines() if line.startswith(_MARK)]
    report = "\n".join(line for line in execution.stdout.splitlines() if not line.startswith(_MARK)).strip()
    if not marked:
        why = f"the checks stopped before reporting (exit code {execution.returncode})"
        return CheckResult([why], 0, 0, 1, False, (report + "\n" + execution.stderr).strip())
    found = json.loads(marked[-1][len(_MARK) :])
    counts = found["counts"]
    errors = counts["errors"]
    if found.get("note"):
        errors += 1
        report = found["note"]
    elif found["exit"] not in (None, 0, 1, 5) and not (counts["failed"] or errors):
        errors += 1  # pytest itself failed (usage error, internal error, interrupted)
    return CheckResult(found["syntax"], counts["passed"], counts["failed"], errors, False, report)


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
