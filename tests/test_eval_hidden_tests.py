"""The hidden-test runner the evaluations share (L2MAC's programs, ExpeRepair's patches): what it expects of a test
file, how it turns pytest's reports into one verdict per test, and that nothing the tested project holds (its
configuration, a conftest, a module named like a hidden test file, a ``tests`` package, a ``pytest.py``) changes the
run. ExpeRepair's own guards (a patch adding such files) are in tests/test_eval_experepair.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from mnemoflow.evaluation.hidden_tests import Acceptance, expected_tests, run_acceptance, tally
from mnemoflow.nodes.sandbox import Limits


def test_expected_tests_are_what_pytest_collects() -> None:
    source = (
        "def helper():\n    pass\n\n\ndef test_one():\n    pass\n\n\nasync def test_two():\n    pass\n\n\n"
        "class TestGroup:\n    def test_three(self):\n        pass\n\n    def helper(self):\n        pass\n\n\n"
        "class Other:\n    def test_ignored(self):\n        pass\n"
    )
    assert expected_tests("test_a.py", source) == [
        "test_a.py::test_one",
        "test_a.py::test_two",
        "test_a.py::TestGroup::test_three",
    ]
    with pytest.raises(SyntaxError):
        expected_tests("test_a.py", "def test(:\n")


def test_tally_passes_a_test_only_when_every_report_of_it_passed() -> None:
    tests = ["t.py::test_ok", "t.py::test_param", "t.py::test_teardown", "t.py::test_missing", "u.py::test_u"]
    records = [
        {"test": "t.py::test_ok", "outcome": "passed", "why": ""},
        {"test": "t.py::test_param[1]", "outcome": "passed", "why": ""},
        {"test": "t.py::test_param[2]", "outcome": "failed", "why": "assert 2 == 3"},
        {"test": "t.py::test_teardown", "outcome": "passed", "why": ""},
        {"test": "t.py::test_teardown", "outcome": "failed", "why": "teardown broke"},
        {"test": "u.py", "outcome": "error", "why": "ModuleNotFoundError: No module named 'todo'"},
    ]
    result = tally(records, tests)
    assert result.passed == ("t.py::test_ok",) and result.pass_rate == pytest.approx(1 / 5)
    assert result.failed == {
        "t.py::test_param": "failed: assert 2 == 3",
        "t.py::test_teardown": "failed: teardown broke",
        "t.py::test_missing": "did not run",
        "u.py::test_u": "not collected: ModuleNotFoundError: No module named 'todo'",
    }
    assert "time limit" in tally([], ["t.py::test_ok"], timed_out=True).failed["t.py::test_ok"]
    assert Acceptance((), {}).pass_rate == 0.0


async def test_acceptance_runs_outside_the_project_with_a_time_limit_per_test_and_in_all(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "lib").mkdir(parents=True)
    (project / "lib" / "__init__.py").write_text(
        "import signal, time\n\n\ndef double(x):\n    return 2 * x\n\n\ndef hang():\n    while True:\n        pass\n\n\n"
        "def hang_deaf():\n    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})\n    time.sleep(60)\n"
    )
    (project / "conftest.py").write_text("raise RuntimeError('the project conftest must not load')\n")
    (project / "pytest.ini").write_text("[pytest]\naddopts = --this-option-does-not-exist\n")
    hidden = {
        "test_hidden.py": (
            "import pytest\nfrom lib import double, hang, hang_deaf\n\n\ndef test_double():\n    assert double(2) == 4\n\n\n"
            "def test_hangs():\n    hang()\n\n\ndef test_skipped():\n    pytest.skip('not a pass')\n\n\n"
            "@pytest.mark.parametrize('x', [1, 2])\ndef test_param(x):\n    assert double(x) == 2\n\n\n"
            "def test_z_outlives_the_run():\n    hang_deaf()\n"
        )
    }
    result = await run_acceptance(project, hidden, tmp_path / "acceptance", limits=Limits(timeout_s=3.0), test_seconds=0.5)
    assert result.passed == ("test_hidden.py::test_double",) and result.timed_out
    assert {test.split("::")[1]: why.split(":")[0] for test, why in result.failed.items()} == {
        "test_hangs": "failed",  # its own time limit, the tests after it still ran
        "test_skipped": "skipped",
        "test_param": "failed",
        "test_z_outlives_the_run": "did not run",  # deaf to its limit, the whole run was killed
    }
    assert "longer than 0.5 s" in result.failed["test_hidden.py::test_hangs"]
    assert "time limit" in result.failed["test_hidden.py::test_z_outlives_the_run"]
    assert not (project / "test_hidden.py").exists()


async def test_a_module_of_the_project_named_like_a_hidden_test_file_cannot_stand_in_for_it(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "tests").mkdir(parents=True)
    (project / "lib.py").write_text("import test_b\nimport tests.test_c\n\n\ndef value():\n    return 1\n")
    passing = "def test_{name}_checks():\n    pass\n"
    (project / "test_b.py").write_text(passing.format(name="b"))
    (project / "tests" / "__init__.py").write_text("")
    (project / "tests" / "test_c.py").write_text(passing.format(name="c"))
    (project / "pytest.py").write_text("raise RuntimeError('the project pytest.py must not load')\n")
    failing = "def test_{name}_checks():\n    assert False, 'the hidden test ran'\n"
    hidden = {
        "test_a.py": "import pytest\nfrom lib import value\n\n\ndef test_a():\n    assert value() == 1\n",
        "test_b.py": failing.format(name="b"),
        "tests/test_c.py": failing.format(name="c"),
        "tests/test_d.py": "from lib import value\n\n\ndef test_d():\n    assert value() == 1\n",
    }
    result = await run_acceptance(project, hidden, tmp_path / "hidden", limits=Limits(timeout_s=60.0))
    assert result.passed == ("test_a.py::test_a", "tests/test_d.py::test_d"), result
    assert set(result.failed) == {"test_b.py::test_b_checks", "tests/test_c.py::test_c_checks"}
    assert all(why.startswith("error: shadowed") for why in result.failed.values()), result.failed
    with pytest.raises(ValueError, match="inside the project"):
        await run_acceptance(project, hidden, project / "hidden")
