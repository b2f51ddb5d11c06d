"""The README's recipes as a reader runs them: its bash blocks found by name, run line by line as printed in one
bash session, with the servers some lines leave running started in the background and waited for.

A recipe is every bash block of README.md whose line before is ``<!-- recipe: NAME -->``; blocks that share a name
run in order, as one. A line that starts a long-running server (``prefect server start``, ``prefect worker start``,
``mnemoflow serve``) is one the README tells the reader to leave running in another shell, or with ``&``:
:meth:`RecipeShell.run` starts it in the background, in the session's directory and with its environment as it is at
that line, and waits until it answers. Every other line runs in the session itself, so ``export``, ``source`` and
variables carry on to the next line, as in a terminal.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from tests.support.prefect_server import REPOSITORY, Worker

__all__ = ["README", "SERVICES", "RecipeShell", "Service", "ports_in_use", "reader_environment", "recipe_lines", "service_of"]

README = REPOSITORY / "README.md"
VENV_BIN = REPOSITORY / ".venv" / "bin"
NO_LOCAL_SERVER = "/nonexistent/mnemoflow-tests/model"
"""A local model server home with no server in it (the recipes run on the offline stand-in)."""

_MARK = re.compile(r"<!--\s*recipe:\s*([a-z0-9-]+)\s*-->")
_ASSIGNMENTS = re.compile(r"(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*")
_BACKGROUND = re.compile(r"\s&\s*(?:#[^'\"]*)?$")


def recipe_lines(name: str, readme: Path = README) -> list[str]:
    """The lines of every bash block marked ``<!-- recipe: NAME -->``, in order: a line continued with ``\\`` is
    one line (its newlines kept, as bash reads it); blank and comment-only lines are left out."""
    lines = readme.read_text(encoding="utf-8").splitlines()
    found: list[str] = []
    for index, line in enumerate(lines):
        mark = _MARK.fullmatch(line.strip())
        if mark is None or mark.group(1) != name:
            continue
        if index + 1 >= len(lines) or lines[index + 1].strip() != "```bash":
            raise ValueError(f"{readme.name}:{index + 1}: <!-- recipe: {name} --> is not followed by a ```bash block")
        end = next((at for at in range(index + 2, len(lines)) if lines[at].strip() == "```"), None)
        if end is None:
            raise ValueError(f"{readme.name}:{index + 2}: the block of recipe {name!r} is not closed")
        found += _logical_lines(lines[index + 2 : end])
    if not found:
        raise ValueError(f"{readme.name} has no bash block marked <!-- recipe: {name} -->")
    return found


def _logical_lines(block: list[str]) -> list[str]:
    logical: list[str] = []
    pending: list[str] = []
    for line in block:
        pending.append(line)
        if line.endswith("\\"):
            continue
        text = "\n".join(pending)
        pending = []
        if text.strip() and not text.lstrip().startswith("#"):
            logical.append(text)
    if pending:
        logical.append("\n".join(pending))
    return logical


@dataclass(frozen=True)
class Service:
    """A long-running server that a recipe line starts, and where it answers once it is ready."""

    name: str
    command: re.Pattern[str]
    """Matches the line's command, after any ``NAME=value`` assignments before it."""
    default_port: int | None
    """The port it serves on without ``--port``; ``None`` for a worker, which serves nothing."""
    ready_path: str | None
    """A path that answers 200 once it has started (mnemoflow serve has no health route: its schema answers)."""


SERVICES = (
    Service("prefect-server", re.compile(r"prefect server start\b"), 4200, "/api/health"),
    Service("prefect-worker", re.compile(r"prefect worker start\b"), None, None),
    Service("mnemoflow-serve", re.compile(r"mnemoflow serve\b"), 8765, "/openapi.json"),
)


def service_of(line: str) -> Service | None:
    """The server ``line`` starts, or ``None`` for a line that runs and ends."""
    assignments = _ASSIGNMENTS.match(line.strip())
    command = line.strip()[assignments.end() if assignments else 0 :]
    return next((service for service in SERVICES if service.command.match(command)), None)


def _port(line: str, service: Service) -> int | None:
    given = re.search(r"--port[= ](\d+)", line)
    return int(given.group(1)) if given else service.default_port


def ports_in_use(lines: list[str]) -> list[str]:
    """Why a recipe's fixed ports cannot be served here: one sentence per port something else holds."""
    busy = []
    for line in lines:
        service = service_of(line)
        port = _port(line, service) if service is not None else None
        if service is None or port is None:
            continue
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is no obstacle
            try:
                probe.bind(("127.0.0.1", port))
            except OSError as exc:
                busy.append(f"port {port} is in use ({exc.strerror}): the README's `{line.split('#')[0].strip()}` serves on it")
    return busy


def reader_environment(home: Path, *, activated: bool) -> dict[str, str]:
    """A new shell's environment for a recipe: none of this process's MNEMOFLOW_, NEO4J_, OPENAI_ or PREFECT_
    variables; the offline stand-in for the model; the store, the reply cache and Prefect's home under ``home``, so
    nothing touches the developer's own; quick worker polls. With ``activated``, ``.venv/bin`` first on PATH, as
    after ``source .venv/bin/activate``; without, no ``.venv/bin`` on it at all."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MNEMOFLOW_", "NEO4J_", "OPENAI_", "PREFECT_")) and key != "VIRTUAL_ENV"
    }
    path = [entry for entry in environment.get("PATH", "/usr/local/bin:/usr/bin:/bin").split(os.pathsep) if Path(entry) != VENV_BIN]
    environment["PATH"] = os.pathsep.join([str(VENV_BIN), *path] if activated else path)
    home.mkdir(parents=True, exist_ok=True)
    environment.update(
        MNEMOFLOW_LLM_OFFLINE="1",
        MNEMOFLOW_STORE_SQLITE_PATH=str(home / "memory.db"),
        MNEMOFLOW_LLM_CACHE_PATH=str(home / "llm-cache.db"),
        MNEMOFLOW_LOCAL_SERVER_HOME=NO_LOCAL_SERVER,
        PREFECT_HOME=str(home / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_WORKER_QUERY_SECONDS="1",
        PREFECT_WORKER_PREFETCH_SECONDS="1",
    )
    return environment


class RecipeShell:
    """``with RecipeShell(cwd, env, logs) as shell:`` one bash session that runs recipe lines as a reader types them
    (:meth:`run`), and the servers they start, stopped in reverse order when the block ends."""

    def __init__(self, cwd: Path, environment: Mapping[str, str], logs: Path) -> None:
        self.logs = logs
        self.services: list[Worker] = []
        """The servers started so far, as :class:`Worker` (name, process, log)."""
        self.transcript: list[str] = []
        """Each line run, with its output, as a terminal would show it."""
        self._bash = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            cwd=cwd,
            env=dict(environment),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._output = bytearray()
        self._ended = False
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, name="recipe-shell", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._bash.stdout is not None
        descriptor = self._bash.stdout.fileno()
        while chunk := os.read(descriptor, 65536):
            with self._changed:
                self._output += chunk
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def run(self, line: str, *, timeout: float = 300.0) -> str:
        """Run one recipe line and return what it printed (stdout and stderr); a server line starts in the
        background and is waited for. Raises ``AssertionError`` with the transcript and the servers' logs when the
        line exits non-zero, or does not end (or answer) within ``timeout`` seconds."""
        service = service_of(line)
        if service is not None:
            self._start(line, service, timeout=min(timeout, 180.0))
            return ""
        status, output = self.execute(line, timeout=timeout)
        if status != 0:
            raise AssertionError(f"the README's line exited with {status}:\n{self.report()}")
        return output

    def execute(self, line: str, *, timeout: float = 60.0, record: bool = True) -> tuple[int, str]:
        """Run ``line`` in the session (standard input from /dev/null); its exit status and output."""
        marker = f"recipe-line-end-{uuid.uuid4().hex}"
        assert self._bash.stdin is not None
        self._bash.stdin.write(f"{{\n{line}\n}} < /dev/null\nprintf '\\n{marker} %s\\n' \"$?\"\n".encode())
        self._bash.stdin.flush()
        end = re.compile(rb"\n" + marker.encode() + rb" (\d+)\n")
        deadline = time.monotonic() + timeout
        with self._changed:
            while (found := end.search(self._output)) is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._ended:
                    self.transcript.append(f"$ {line}\n{self._output.decode(errors='replace')}")
                    self._output.clear()
                    why = "the shell ended" if self._ended else f"it did not end within {timeout:g} s"
                    raise AssertionError(f"the README's line did not finish: {why}\n{self.report()}")
                self._changed.wait(remaining)
            status, output = int(found.group(1)), self._output[: found.start()].decode(errors="replace")
            del self._output[: found.end()]
        if record:
            self.transcript.append(f"$ {line}\n{output}")
        return status, output

    def variable(self, name: str) -> str:
        """The value of ``$NAME`` in the session now."""
        _, output = self.execute(f'printf %s "${name}"', record=False)
        return output

    def environment(self) -> dict[str, str]:
        """The session's exported environment now."""
        _, output = self.execute("env -0", record=False)
        return dict(entry.split("=", 1) for entry in output.split("\0") if "=" in entry)

    def _start(self, line: str, service: Service, *, timeout: float) -> None:
        environment, directory = self.environment(), self.variable("PWD")
        command = _BACKGROUND.sub("", line)  # the `&` is what this does: a trailing one would orphan the server
        log = self.logs / f"{service.name}-{len(self.services)}.log"
        process = subprocess.Popen(
            ["bash", "-c", command],
            cwd=directory,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        started = Worker(service.name, process, log)
        self.services.append(started)
        self.transcript.append(f"$ {line}\n(started in the background: process {process.pid}, log {log})")
        port = _port(line, service)
        deadline = time.monotonic() + timeout
        while not self._ready(line, service, port, environment):
            if process.poll() is not None:
                raise AssertionError(f"the README's server line exited with {process.returncode}:\n{self.report()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the README's server line was not ready within {timeout:g} s:\n{self.report()}")
            time.sleep(0.5)

    @staticmethod
    def _ready(line: str, service: Service, port: int | None, environment: Mapping[str, str]) -> bool:
        if service.ready_path is not None:
            return _answers(f"http://127.0.0.1:{port}{service.ready_path}")
        # a worker serves nothing: it is ready once its pool lists it
        pool = re.search(r"--pool[= ]['\"]?([^\s'\"]+)", line)
        api = environment.get("PREFECT_API_URL")
        if pool is None or not api:
            return True
        request = urllib.request.Request(
            f"{api}/work_pools/{pool.group(1)}/workers/filter", data=b"{}", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return bool(json.load(response))
        except (OSError, ValueError):
            return False

    def report(self) -> str:
        """The transcript so far and the tail of every server's log: what a failure shows."""
        logs = "\n".join(f"--- log of {service.name} ({service.log})\n{service.output()[-4000:]}" for service in self.services)
        return "\n".join(self.transcript) + ("\n" + logs if logs else "")

    def close(self) -> None:
        for service in reversed(self.services):  # the worker before the Prefect server it reports to
            service.stop()
        if self._bash.stdin is not None:
            self._bash.stdin.close()
        try:
            self._bash.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._bash.kill()
            self._bash.wait(timeout=30)
        self._reader.join(timeout=30)

    def __enter__(self) -> RecipeShell:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.close()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status) == 200
    except (OSError, urllib.error.URLError):
        return False
