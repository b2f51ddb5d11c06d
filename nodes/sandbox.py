"""Running untrusted code: throwaway git worktrees and bounded subprocesses (time, memory, output, network).

``Worktree`` checks a commit of a local clone out into a temporary folder (``git worktree add --detach``), lets a
caller apply a diff or write files inside it, reports ``diff()`` of its changes, and removes itself on exit.
``run_python`` runs a script there (or in any folder, such as a scratch copy of a file store) with a minimal
environment and the bounds of a ``Limits``.

What is isolated, and what is not:

- **Time**: the script runs in its own session / process group; at ``timeout_s`` the whole group gets SIGKILL
  (``Execution.timed_out``, ``returncode`` None). RLIMIT_CPU (``ceil(timeout_s) + 1`` s) backs this up. A grandchild
  that calls ``setsid()`` itself leaves the group and escapes the kill.
- **Memory**: RLIMIT_AS = ``memory_mb`` per process (address space, so a large allocation raises ``MemoryError``).
  It is not a cgroup: a script that forks many children may use ``memory_mb`` in each.
- **Output**: stdout and stderr are read concurrently and each kept to ``output_bytes`` (head and tail, with a
  ``... [N bytes cut] ...`` marker; ``Execution.truncated``).
- **Network**: when ``Limits.network`` is False and ``unshare -rn`` works on this platform (probed once at import,
  see ``NETWORK_ISOLATION``), the script runs in a new user + network namespace with no interfaces up: no
  connection at all, not even to loopback. Where ``unshare`` is unavailable the script runs with the network on.
- **Environment**: only PATH, HOME (an empty temporary folder), PYTHONPATH (the worktree), PYTHONDONTWRITEBYTECODE and
  LANG; no proxies, tokens or API keys are inherited.
- **Not isolated: the filesystem.** The script runs as the calling user (mapped to root inside the user namespace)
  on the same filesystem: it can read and write anything that user can, including the original clone. The worktree
  is a convenience against accidents, not a security boundary; run in a container or VM for hostile code.
- **Not isolated: processes and IPC.** There is no PID, mount or IPC namespace; the script can see and signal the
  user's other processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import TracebackType

from mnemoflow.errors import ConfigError, SandboxError, UsageError

__all__ = ["NETWORK_ISOLATION", "Execution", "Limits", "PatchResult", "Worktree", "run_python"]

SANDBOX_DIR = ".mnemoflow_sandbox"
"""Folder inside the worktree holding the scripts ``run_python`` writes; git-ignored by its own ``.gitignore``."""

_KILL_GRACE_S = 2.0
"""How long to wait for the output pipes to close once the process group has been killed."""

_CHUNK = 65_536


@dataclass(frozen=True)
class Limits:
    """Bounds of one ``run_python`` call."""

    timeout_s: float = 60.0
    """Wall-clock limit; the process group is killed after it."""
    memory_mb: int = 512
    """Address-space limit (RLIMIT_AS) of the script's process."""
    output_bytes: int = 20_000
    """Bytes kept of stdout and of stderr each (head and tail)."""
    network: bool = False
    """False: run in a network namespace with no interfaces (when ``NETWORK_ISOLATION``)."""


@dataclass(frozen=True)
class Execution:
    returncode: int | None
    """None when the process was killed (timeout)."""
    stdout: str
    stderr: str
    timed_out: bool
    truncated: bool
    duration_s: float

    @property
    def passed(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    @property
    def output(self) -> str:
        """stdout and stderr as one text, as the judge and retrieval see it."""
        return (self.stdout + "\n" + self.stderr).strip()


@dataclass(frozen=True)
class PatchResult:
    applied: bool
    error: str = ""


def _probe_network_isolation() -> bool:
    """True when ``unshare -rn`` (new user + network namespace) can run a command here."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    try:
        done = subprocess.run([unshare, "-rn", "true"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


NETWORK_ISOLATION: bool = _probe_network_isolation()
"""Whether ``run_python`` can cut the network off (``unshare -rn`` works on this platform); probed once at import."""


async def _run(
    *argv: str, cwd: Path | None = None, stdin: bytes | None = None, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Run a short trusted command (git) and return (returncode, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(stdin)
    assert proc.returncode is not None
    return proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def _git_env() -> dict[str, str]:
    return {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}


def _unsafe_path(path: str) -> bool:
    """True for a patch path that is absolute or climbs out with ``..``."""
    if path.startswith('"') and path.endswith('"') and len(path) >= 2:
        path = path[1:-1]
    pure = PurePosixPath(path.replace("\\", "/"))
    return pure.is_absolute() or ".." in pure.parts or (len(path) > 1 and path[1] == ":")


def _diff_paths(diff: str) -> list[str]:
    """Every path a unified / git diff names (headers, renames, copies), ``a/``/``b/`` prefixes removed."""
    paths: list[str] = []
    for line in diff.splitlines():
        if line.startswith(("--- ", "+++ ")):
            name = line[4:].split("\t", 1)[0].strip()
            if name == "/dev/null":
                continue
            if name.startswith(("a/", "b/")):
                name = name[2:]
            paths.append(name)
        elif line.startswith("diff --git "):
            for name in line[len("diff --git ") :].split(" "):
                if name:
                    paths.append(name[2:] if name.startswith(("a/", "b/")) else name)
        elif line.startswith(("rename from ", "rename to ", "copy from ", "copy to ")):
            paths.append(line.split(" ", 2)[2])
    return paths


class Worktree:
    """``async with Worktree(repo, commit="HEAD") as tree:`` a detached git worktree in a temporary folder,
    removed on exit; ``tree.path``; ``await tree.apply(diff)``; ``tree.write(relative_path, text)`` (inside only);
    ``tree.diff()`` the unified diff of its changes against the commit."""

    path: Path
    """The worktree's root folder (set on ``__aenter__``)."""

    def __init__(self, repo: Path, commit: str = "HEAD") -> None:
        self.repo = Path(repo)
        """The local clone the worktree is made from."""
        self.commit = commit
        """The commit (any revision git accepts) checked out, detached."""
        self._tmp: Path | None = None

    async def __aenter__(self) -> Worktree:
        if not self.repo.is_dir():
            raise ConfigError(f"Worktree: repository {str(self.repo)!r} is not a folder")
        code, out, err = await _run(
            "git", "-C", str(self.repo), "rev-parse", "--verify", "--quiet", f"{self.commit}^{{commit}}", env=_git_env()
        )
        if code != 0:
            detail = err.strip() or "no such commit"
            raise ConfigError(f"Worktree: commit {self.commit!r} not found in repository {str(self.repo)!r}: {detail}")
        sha = out.strip()
        self._tmp = Path(tempfile.mkdtemp(prefix="mnemoflow-worktree-"))
        path = self._tmp / "tree"
        code, _, err = await _run("git", "-C", str(self.repo), "worktree", "add", "--detach", str(path), sha, env=_git_env())
        if code != 0:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
            raise ConfigError(f"Worktree: git worktree add of {self.commit!r} from {str(self.repo)!r} failed: {err.strip()}")
        self.path = path.resolve()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        tmp, self._tmp = self._tmp, None
        if tmp is None:
            return
        try:
            await _run("git", "-C", str(self.repo), "worktree", "remove", "--force", "--force", str(tmp / "tree"), env=_git_env())
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            await _run("git", "-C", str(self.repo), "worktree", "prune", env=_git_env())

    def _root(self) -> Path:
        if self._tmp is None:
            raise UsageError("Worktree is not open: use it inside `async with Worktree(...) as tree:`")
        return self.path

    async def apply(self, diff: str) -> PatchResult:
        """Apply a unified diff to the worktree (``git apply --check``, then ``git apply``).

        Never raises for a bad diff: returns ``PatchResult(False, message)`` with git's message, or with the refused
        path when the diff names an absolute path or one containing ``..``.
        """
        root = self._root()
        bad = [p for p in _diff_paths(diff) if _unsafe_path(p)]
        if bad:
            return PatchResult(False, f"refused: the diff touches paths outside the worktree: {', '.join(sorted(set(bad)))}")
        data = (diff if diff.endswith("\n") else diff + "\n").encode()
        for argv in (("git", "apply", "--check", "-"), ("git", "apply", "-")):
            code, out, err = await _run(*argv, cwd=root, stdin=data, env=_git_env())
            if code != 0:
                return PatchResult(False, (err.strip() or out.strip() or f"git apply exited with {code}"))
        return PatchResult(True)

    def write(self, relative: str, text: str) -> Path:
        """Write ``text`` to ``relative`` inside the worktree (folders created); ``UsageError`` for a path escaping it."""
        root = self._root()
        if Path(relative).is_absolute():
            raise UsageError(f"Worktree.write: {relative!r} is absolute; give a path relative to the worktree")
        target = (root / relative).resolve()
        if target == root or not target.is_relative_to(root):
            raise UsageError(f"Worktree.write: {relative!r} is outside the worktree {str(root)!r}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        return target

    async def diff(self) -> str:
        """The unified diff of the worktree's changes against its commit (new files included); "" when none."""
        root = self._root()
        env = _git_env()
        code, _, err = await _run("git", "add", "--intent-to-add", ".", cwd=root, env=env)
        if code != 0:
            raise SandboxError(f"Worktree.diff: git add --intent-to-add failed: {err.strip()}")
        code, out, err = await _run("git", "diff", "--no-color", "--no-ext-diff", cwd=root, env=env)
        if code != 0:
            raise SandboxError(f"Worktree.diff: git diff failed: {err.strip()}")
        return out


class _Capture:
    """Keeps the first and last bytes of a stream, at most ``limit`` in all, and counts the rest."""

    def __init__(self, limit: int) -> None:
        self.head_limit = limit // 2
        self.tail_limit = limit - self.head_limit
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            if len(self.tail) > self.tail_limit:
                del self.tail[: len(self.tail) - self.tail_limit]

    @property
    def truncated(self) -> bool:
        return self.total > len(self.head) + len(self.tail)

    def text(self) -> str:
        if not self.truncated:
            return (bytes(self.head) + bytes(self.tail)).decode("utf-8", "replace")
        head = self.head.decode("utf-8", "replace")
        tail = self.tail.decode("utf-8", "replace")
        cut = self.total - len(self.head) - len(self.tail)
        return f"{head}\n... [{cut} bytes cut] ...\n{tail}"


async def _drain(stream: asyncio.StreamReader | None, capture: _Capture) -> None:
    if stream is None:
        return
    while chunk := await stream.read(_CHUNK):
        capture.feed(chunk)


_LIMITS_WRAPPER = """\
import os, resource, sys
def cap(kind, soft, hard):
    _, current = resource.getrlimit(kind)
    if current != resource.RLIM_INFINITY:
        soft, hard = min(soft, current), min(hard, current)
    resource.setrlimit(kind, (soft, hard))
cap(resource.RLIMIT_AS, int(sys.argv[1]), int(sys.argv[1]))
cap(resource.RLIMIT_CPU, int(sys.argv[2]), int(sys.argv[2]) + 1)
os.execv(sys.executable, [sys.executable, sys.argv[3]])
"""
"""Sets the rlimits and execs the script: a separate process rather than ``preexec_fn`` (not fork-safe with threads)."""


def _killpg(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


async def run_python(where: Worktree | Path, script: str, limits: Limits) -> Execution:
    """Write ``script`` to a file in ``where`` (a worktree or a folder) and run it there, with that folder on sys.path,
    bounded by ``limits``."""
    root = where._root() if isinstance(where, Worktree) else Path(where).resolve()
    sandbox = root / SANDBOX_DIR
    sandbox.mkdir(exist_ok=True)
    (sandbox / ".gitignore").write_text("*\n", encoding="utf-8")
    script_path = sandbox / f"{uuid.uuid4().hex}.py"
    script_path.write_text(script, encoding="utf-8")
    home = Path(tempfile.mkdtemp(prefix="mnemoflow-home-"))
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),
        "PYTHONPATH": str(root),
        "PYTHONDONTWRITEBYTECODE": "1",
        "LANG": "C.UTF-8",
    }
    argv = [
        sys.executable,
        "-c",
        _LIMITS_WRAPPER,
        str(limits.memory_mb * 1024 * 1024),
        str(math.ceil(limits.timeout_s) + 1),
        str(script_path),
    ]
    if not limits.network and NETWORK_ISOLATION:
        argv = ["unshare", "-rn", *argv]
    out, err = _Capture(limits.output_bytes), _Capture(limits.output_bytes)
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=root,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        readers = [asyncio.create_task(_drain(proc.stdout, out)), asyncio.create_task(_drain(proc.stderr, err))]
        timed_out = False
        try:
            await asyncio.wait_for(proc.wait(), limits.timeout_s)
        except TimeoutError:
            timed_out = True
        finally:
            _killpg(proc.pid)  # the timed-out script, or children the finished one left behind
            await proc.wait()
            _, pending = await asyncio.wait(readers, timeout=_KILL_GRACE_S)
            for task in pending:
                task.cancel()
        duration = time.monotonic() - started
    finally:
        script_path.unlink(missing_ok=True)
        shutil.rmtree(home, ignore_errors=True)
    return Execution(
        returncode=None if timed_out else proc.returncode,
        stdout=out.text(),
        stderr=err.text(),
        timed_out=timed_out,
        truncated=out.truncated or err.truncated,
        duration_s=duration,
    )
