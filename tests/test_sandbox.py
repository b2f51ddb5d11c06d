"""The sandbox: throwaway worktrees of a fixture repo, and bounded script runs."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from mnemoflow.errors import ConfigError
from mnemoflow.nodes.sandbox import NETWORK_ISOLATION, Limits, Worktree, run_python

pytestmark = pytest.mark.subprocess

FAST = Limits(timeout_s=2, memory_mb=512, output_bytes=20_000)


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-C", str(repo), *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "clone"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-qm", "init")
    return root


GOOD_DIFF = """\
--- a/pkg/calc.py
+++ b/pkg/calc.py
@@ -1,2 +1,2 @@
 def add(a, b):
-    return a - b
+    return a + b
"""


def alive(pid: int) -> bool:
    """True when ``pid`` runs (a zombie waiting for its reaper counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def test_worktree_created_and_removed(repo: Path) -> None:
    async with Worktree(repo) as tree:
        assert (tree.path / "pkg" / "calc.py").is_file()
        assert str(tree.path) in git(repo, "worktree", "list")
        path = tree.path
    assert not path.exists()
    assert str(path) not in git(repo, "worktree", "list")
    assert len(git(repo, "worktree", "list").splitlines()) == 1


async def test_worktree_removed_on_error(repo: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        async with Worktree(repo) as tree:
            path = tree.path
            raise RuntimeError("boom")
    assert not path.exists()
    assert len(git(repo, "worktree", "list").splitlines()) == 1


async def test_bad_repo_or_commit_is_a_config_error(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nosuchcommit"):
        async with Worktree(repo, "nosuchcommit"):
            pass
    with pytest.raises(ConfigError, match="missing"):
        async with Worktree(tmp_path / "missing"):
            pass
    (tmp_path / "plain").mkdir()
    with pytest.raises(ConfigError, match="plain"):
        async with Worktree(tmp_path / "plain"):
            pass


async def test_apply_changes_the_worktree_only(repo: Path) -> None:
    async with Worktree(repo) as tree:
        result = await tree.apply(GOOD_DIFF)
        assert result.applied, result.error
        assert "a + b" in (tree.path / "pkg" / "calc.py").read_text()
        diff = await tree.diff()
        assert "+    return a + b" in diff
    assert "a - b" in (repo / "pkg" / "calc.py").read_text()
    assert git(repo, "status", "--porcelain") == ""


async def test_diff_is_empty_then_includes_new_files(repo: Path) -> None:
    async with Worktree(repo) as tree:
        assert await tree.diff() == ""
        await run_python(tree, "print('hi')", FAST)
        assert await tree.diff() == "", "the sandbox's own scripts are not part of the diff"
        tree.write("pkg/new.py", "X = 1\n")
        diff = await tree.diff()
        assert "pkg/new.py" in diff and "+X = 1" in diff


async def test_diff_that_does_not_apply(repo: Path) -> None:
    async with Worktree(repo) as tree:
        result = await tree.apply(GOOD_DIFF.replace("a - b", "a * b"))
        assert not result.applied
        assert "calc.py" in result.error
        garbage = await tree.apply("not a diff at all")
        assert not garbage.applied and garbage.error
        assert "a - b" in (tree.path / "pkg" / "calc.py").read_text()


@pytest.mark.parametrize("path", ["../outside.py", "/etc/passwd", "pkg/../../outside.py"])
async def test_diff_outside_the_worktree_is_refused(repo: Path, path: str) -> None:
    diff = f"--- /dev/null\n+++ {path}\n@@ -0,0 +1 @@\n+x = 1\n"
    async with Worktree(repo) as tree:
        result = await tree.apply(diff)
        assert not result.applied
        assert "refused" in result.error and path in result.error
    assert not (repo.parent / "outside.py").exists()


async def test_write_outside_is_refused(repo: Path) -> None:
    async with Worktree(repo) as tree:
        assert tree.write("pkg/ok.py", "y = 2\n") == tree.path / "pkg" / "ok.py"
        for bad in ["../escape.py", "/tmp/escape.py", "pkg/../../escape.py"]:
            with pytest.raises(ValueError, match="escape.py"):
                tree.write(bad, "x")
    assert not (repo.parent / "escape.py").exists()


async def test_passing_and_failing_scripts(repo: Path) -> None:
    async with Worktree(repo) as tree:
        await tree.apply(GOOD_DIFF)
        ok = await run_python(tree, "from pkg.calc import add\nassert add(2, 2) == 4\nprint('sum ok')", FAST)
        assert ok.passed and ok.returncode == 0 and not ok.timed_out and not ok.truncated
        assert ok.stdout.strip() == "sum ok" and ok.output == "sum ok"
        bad = await run_python(tree, "import sys\nprint('to err', file=sys.stderr)\nraise SystemExit(3)", FAST)
        assert not bad.passed and bad.returncode == 3
        assert "to err" in bad.stderr
        boom = await run_python(tree, "raise ValueError('nope')", FAST)
        assert boom.returncode == 1 and "ValueError: nope" in boom.output


async def test_no_secrets_in_the_environment(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    async with Worktree(repo) as tree:
        run = await run_python(tree, "import os\nprint(sorted(os.environ))\nprint(os.getcwd())", FAST)
    assert "OPENAI_API_KEY" not in run.stdout and "HTTPS_PROXY" not in run.stdout
    assert "PYTHONPATH" in run.stdout and str(tree.path) in run.stdout


@pytest.mark.parametrize("hang", ["while True: pass", "import time\ntime.sleep(100)"])
@pytest.mark.slow
async def test_hanging_script_is_killed(repo: Path, tmp_path: Path, hang: str) -> None:
    pids = tmp_path / "pids"
    script = (
        "import os, subprocess, sys\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(100)'])\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
        "print('started', flush=True)\n" + hang + "\n"
    )
    async with Worktree(repo) as tree:
        run = await run_python(tree, script, FAST)
    assert run.timed_out and run.returncode is None and not run.passed
    assert "started" in run.stdout
    for pid in map(int, pids.read_text().split()):
        for _ in range(50):  # SIGKILL is delivered asynchronously; give the kernel a moment
            if not alive(pid):
                break
            await asyncio.sleep(0.1)
        assert not alive(pid), f"process {pid} survived the timeout"


async def test_memory_exhaustion_fails(repo: Path) -> None:
    async with Worktree(repo) as tree:
        run = await run_python(tree, "data = bytearray(2 * 1024**3)\nprint(len(data))", Limits(timeout_s=30, memory_mb=256))
    assert not run.passed and run.returncode not in (0, None)
    assert "MemoryError" in run.output


async def test_huge_output_is_truncated(repo: Path) -> None:
    script = "import sys\nprint('START' + 'x' * 1_000_000 + 'END')\nsys.stderr.write('e' * 10)"
    async with Worktree(repo) as tree:
        run = await run_python(tree, script, Limits(timeout_s=30, output_bytes=1000))
    assert run.passed and run.truncated
    assert run.stdout.startswith("START") and run.stdout.rstrip().endswith("END")
    assert "bytes cut] ..." in run.stdout and len(run.stdout) < 1100
    assert run.stderr == "e" * 10


@pytest.mark.skipif(not NETWORK_ISOLATION, reason="unshare -rn is not available on this platform")
async def test_network_is_blocked(repo: Path) -> None:
    script = (
        "import socket\n"
        "try:\n"
        "    socket.create_connection(('1.1.1.1', 53), timeout=3)\n"
        "except OSError as exc:\n"
        "    print('blocked', exc)\n"
        "else:\n"
        "    print('connected')\n"
    )
    async with Worktree(repo) as tree:
        run = await run_python(tree, script, FAST)
    assert run.passed and run.stdout.startswith("blocked"), run.output


async def test_filesystem_is_not_isolated(repo: Path) -> None:
    """Documented limit: the script runs as the caller on the same filesystem, so it can write to the clone."""
    target = repo / "written_by_sandbox.txt"
    async with Worktree(repo) as tree:
        run = await run_python(tree, f"open({str(target)!r}, 'w').write('escaped')", FAST)
    assert run.passed, run.output
    assert target.read_text() == "escaped"
