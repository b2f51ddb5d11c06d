"""Serve an ASGI app over real HTTP on a free loopback port, in a thread of the test process."""

from __future__ import annotations

import contextvars
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def serve(app: Any, *, startup_timeout: float = 30.0) -> Iterator[str]:
    """Run ``app`` under uvicorn until the block ends; yields its base URL (``http://127.0.0.1:PORT``).

    The server thread runs in a copy of the caller's context, so settings the test made with context
    variables (Prefect's ``temporary_settings``) hold in the app too.
    """
    port = free_port()
    # proxy headers off, as `mnemoflow serve` runs: the app decides which proxies it believes
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", proxy_headers=False)
    server = uvicorn.Server(config)
    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(server.run,), name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the app failed to start; see the log above")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the app did not start within {startup_timeout} s")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def wait_until_serving(url: str, process: subprocess.Popen[Any], describe: Callable[[], object], timeout: float = 60.0) -> None:
    """Wait until the ``mnemoflow serve`` child ``process`` answers at ``url``; fail with ``describe()`` (its output)
    when it exits or does not answer within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/openapi.json").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, describe()
        time.sleep(0.2)


@contextmanager
def serve_processes(count: int, env: dict[str, str], folder: Path) -> Iterator[list[tuple[str, subprocess.Popen[bytes]]]]:
    """``count`` ``mnemoflow serve`` child processes with ``env`` (each in a session of its own, its output in
    ``folder/serve-N.log``), waited for until they answer; yields (base URL, process) each, and stops those still
    running when the block ends."""
    started: list[tuple[str, subprocess.Popen[bytes], Path]] = []
    try:
        for index in range(count):
            port, log = free_port(), folder / f"serve-{index}.log"
            with log.open("wb") as output:
                process = subprocess.Popen(
                    [str(Path(sys.executable).with_name("mnemoflow")), "serve", "--port", str(port)],
                    env=env,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            started.append((f"http://127.0.0.1:{port}", process, log))
        for url, process, log in started:
            wait_until_serving(url, process, log.read_text)
        yield [(url, process) for url, process, _ in started]
    finally:
        for _, process, _ in started:
            if process.poll() is None:
                process.terminate()
        for _, process, _ in started:
            process.wait(timeout=30)
