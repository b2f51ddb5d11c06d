"""A real ``prefect server start`` on a free loopback port with its own home and SQLite database, and real
``prefect worker start`` processes against it, for the tests and the Prefect benchmark."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PrefectServer", "PrefectStartError", "Worker"]

PREFECT = str(Path(sys.executable).with_name("prefect"))
REPOSITORY = Path(__file__).resolve().parents[2]


class PrefectStartError(RuntimeError):
    """The server did not answer its health check in time."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _kill_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


@dataclass
class Worker:
    """A ``prefect worker start`` process in its own process group."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def kill(self) -> None:
        """SIGKILL the worker and every process of its group, as a machine dying would."""
        _kill_group(self.process, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            _kill_group(self.process, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


class PrefectServer:
    """``with PrefectServer(home) as server:`` runs a server; ``server.env`` points Prefect clients at it."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = _free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.workers: list[Worker] = []
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        """The environment of a Prefect client or worker of this server, quiet and quick to poll."""
        return {
            "PREFECT_HOME": str(self.home),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_WORKER_PREFETCH_SECONDS": "1",
            "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.5",
        }

    def start(self, timeout: float = 120.0) -> PrefectServer:
        self.home.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            **self.env,
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{self.home / 'prefect.db'}",
            "PREFECT_SERVER_UI_ENABLED": "false",
            # automations waiting for a silence (the reschedule of a run whose worker died) are checked every second,
            # not every 5 s: a test waiting for one waits for the silence, not for the next check
            "PREFECT_SERVER_EVENTS_PROACTIVE_GRANULARITY": "PT1S",
        }
        env.pop("PREFECT_API_URL")  # the server is not a client of itself
        log = (self.home / "server.log").open("wb")
        command = [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(self.port)]
        self._process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise PrefectStartError(f"prefect server exited with {self._process.returncode}: {self.server_log()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise PrefectStartError(f"prefect server did not answer on {self.api_url} within {timeout} s: {self.server_log()[-2000:]}")

    def server_log(self) -> str:
        path = self.home / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def cli(self, *args: str, env: Mapping[str, str] | None = None, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
        """Run ``prefect ARGS`` from the repository root against this server."""
        return subprocess.run(
            [PREFECT, "--no-prompt", *args],
            cwd=REPOSITORY,
            env={**os.environ, **self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start_worker(self, name: str, *, pool: str = "mnemoflow", limit: int | None = None, env: Mapping[str, str] | None = None) -> Worker:
        """A ``prefect worker start`` from the repository root with ``env`` added to its environment."""
        command = [PREFECT, "worker", "start", "--pool", pool, "--name", name, "--type", "process"]
        if limit is not None:
            command += ["--limit", str(limit)]
        log = self.home / f"worker-{name}.log"
        process = subprocess.Popen(
            command,
            cwd=REPOSITORY,
            env={**os.environ, **self.env, **(env or {})},
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        worker = Worker(name, process, log)
        self.workers.append(worker)
        return worker

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        if self._process is not None and self._process.poll() is None:
            _kill_group(self._process, signal.SIGTERM)
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                _kill_group(self._process, signal.SIGKILL)
                self._process.wait(timeout=30)

    def __enter__(self) -> PrefectServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
