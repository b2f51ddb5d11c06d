"""The ``mnemoflow`` command, run as a user would: a real process, the real console script."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import typer

from mnemoflow.cli import app

pytestmark = pytest.mark.subprocess

MNEMOFLOW = str(Path(sys.executable).with_name("mnemoflow"))


def run(*arguments: str, cwd: Path, **environment: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MNEMOFLOW_", "NEO4J_"))}
    env.update(environment)
    return subprocess.run([MNEMOFLOW, *arguments], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_demo_answers_three_questions_on_the_embedded_store(tmp_path: Path) -> None:
    first = run("demo", "--offline", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "Indexed 'The Salt Road' in the sqlite store (namespace 'demo') with the offline stand-in (not a model)" in first.stdout
    assert first.stdout.count("   answer: ") == 3 and first.stdout.count(" LLM calls, ") == 3
    # results on stdout; no log lines unless asked for, only the note that a store was made
    assert first.stderr == f"note: created a new, empty store at {tmp_path.resolve() / '.mnemoflow' / 'memory.db'}\n"
    show = [line.strip() for line in first.stdout.splitlines() if line.strip().startswith("workspace: ")]
    assert len(show) == 3
    workspace = run(*show[0].removeprefix("workspace: mnemoflow ").split(), cwd=tmp_path)
    assert workspace.returncode == 0, workspace.stderr
    assert workspace.stdout.startswith("What was Anselm Roe's trade?") and "cycle 0: prediction" in workspace.stdout
    before = run("store", "info", "--namespace", "demo", cwd=tmp_path).stdout
    second = run("-v", "demo", cwd=tmp_path, MNEMOFLOW_LOG_FORMAT="json", MNEMOFLOW_LLM_OFFLINE="1")
    assert second.returncode == 0
    assert '"event": "run.end"' in second.stderr and '"run_id"' in second.stderr
    after = run("store", "info", "--namespace", "demo", cwd=tmp_path).stdout
    index_line = [line for line in first.stdout.splitlines() if " chunks, " in line]
    assert index_line == [line for line in second.stdout.splitlines() if " chunks, " in line]  # the index is unchanged
    assert before != after  # but the second run added its own three workspaces
    assert (tmp_path / ".mnemoflow" / "memory.db").exists()


@pytest.mark.neo4j
@pytest.mark.slow
def test_demo_on_neo4j(tmp_path: Path, empty_neo4j: str) -> None:
    result = run("demo", "--offline", "--store", "neo4j", "--namespace", "cli", cwd=tmp_path, NEO4J_URI=empty_neo4j)
    assert result.returncode == 0, result.stderr
    assert "Indexed 'The Salt Road' in the neo4j store" in result.stdout and result.stdout.count("   answer: ") == 3


def test_bad_configuration_is_a_clear_error(tmp_path: Path) -> None:
    result = run("demo", cwd=tmp_path, MNEMOFLOW_STORE_BACKEND="postgres")
    assert result.returncode == 2
    assert "invalid configuration" in result.stderr and "backend" in result.stderr
    unreachable = run("store", "setup", "--store", "neo4j", cwd=tmp_path, NEO4J_URI="bolt://127.0.0.1:9", NEO4J_CONNECTION_TIMEOUT="2")
    assert unreachable.returncode == 2
    assert "NEO4J_URI" in unreachable.stderr and "127.0.0.1:9" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr


def test_help_is_fast_and_lazy(tmp_path: Path) -> None:
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, mnemoflow.cli; print(sorted(m for m in ('neo4j', 'numpy', 'openai', 'mnemoflow.memory') if m in sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "[]"
    assert run("--help", cwd=tmp_path).returncode == 0


def test_node_modules_register_a_projects_own_nodes(tmp_path: Path) -> None:
    graph = tmp_path / "own-nodes.yaml"
    graph.write_text("name: own-nodes\nstate: text.TextState\nnodes: {idle: {use: testing.noop}}\nedges: [{from: START, to: idle}, {from: idle, to: END}]\n")
    unknown = run("graphs", "validate", str(graph), cwd=tmp_path)
    assert unknown.returncode == 1 and "testing.noop" in unknown.stderr
    project = str(Path(__file__).resolve().parents[1])  # tests.support is importable from the repository's root
    known = run("graphs", "validate", str(graph), cwd=tmp_path, MNEMOFLOW_NODE_MODULES="tests.support.testing_nodes", PYTHONPATH=project)
    assert known.returncode == 0 and "ok (own-nodes v1, 1 nodes)" in known.stdout
    missing = run(
        "graphs", "validate", str(graph), cwd=tmp_path, MNEMOFLOW_NODE_MODULES="tests.support.testing_nodes, no_such_nodes", PYTHONPATH=project
    )
    assert missing.returncode == 2 and "cannot import node module 'no_such_nodes' (MNEMOFLOW_NODE_MODULES)" in missing.stderr


@pytest.mark.slow
def test_a_terminal_sees_one_progress_bar_and_no_log_lines(tmp_path: Path) -> None:
    terminal, stderr = pty.openpty()
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("MNEMOFLOW_", "NEO4J_", "OPENAI_"))}
    process = subprocess.Popen(
        [MNEMOFLOW, "demo", "--offline"], cwd=tmp_path, env={**environment, "TERM": "xterm"}, stdout=subprocess.PIPE, stderr=stderr, text=True
    )
    os.close(stderr)
    shown = b""
    while True:
        try:
            chunk = os.read(terminal, 65536)
        except OSError:  # the process closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    stdout, _ = process.communicate(timeout=120)
    os.close(terminal)
    assert process.returncode == 0
    screen = shown.decode("utf-8", "replace")
    assert "extracting entities and facts" in screen and "answering question 3 of 3" in screen
    assert "comorag.progress" not in screen and "run.end" not in screen
    assert stdout.count("   answer: ") == 3


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, list[str]]]:
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))
    if not getattr(command, "commands", None):
        yield " ".join(path), [option for parameter in command.params for option in getattr(parameter, "opts", [])]


def test_one_flag_name_per_idea() -> None:
    commands = dict(_commands(typer.main.get_command(app)))
    memory_commands = {"demo", "run", "store setup", "store info", "ingest comorag", "comorag show", "l2mac export", "chat tme"}
    assert memory_commands <= set(commands)
    assert {name for name, options in commands.items() if "--store" in options} == memory_commands
    assert not [name for name, options in commands.items() if "--backend" in options]
    assert {name for name, options in commands.items() if "--namespace" in options} == memory_commands - {"store setup"}


def test_version_is_the_installed_distributions(tmp_path: Path) -> None:
    result = run("--version", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == f"mnemoflow {version('mnemoflow')}"
    assert run("store", "setup", "--backend", "sqlite", cwd=tmp_path).returncode == 2


def test_model_commands_say_what_is_running_and_what_is_wrong(tmp_path: Path) -> None:
    status = run("model", "status", cwd=tmp_path, MNEMOFLOW_LOCAL_SERVER_HOME=str(tmp_path / "model"))
    assert status.returncode == 3
    assert "commands use: the offline stand-in (not a model)" in status.stdout and "local server: not running" in status.stdout
    missing = run("model", "start", cwd=tmp_path, MNEMOFLOW_LOCAL_MODEL=str(tmp_path / "no.gguf"))
    assert missing.returncode == 2 and "MNEMOFLOW_LOCAL_MODEL names" in missing.stderr and "no.gguf" in missing.stderr
    assert not (tmp_path / ".mnemoflow" / "model" / "server.json").exists()
    stopped = run("model", "stop", cwd=tmp_path)
    assert stopped.returncode == 0 and "no local model server was running" in stopped.stdout


def test_urls_are_shown_without_their_credentials(tmp_path: Path) -> None:
    secret = "hunter2secret"
    credentials = {
        "NEO4J_URI": f"bolt://neo4j:{secret}@127.0.0.1:7687",
        "OPENAI_BASE_URL": f"http://user:{secret}@127.0.0.1:9/v1",
        "PREFECT_API_URL": f"http://admin:{secret}@127.0.0.1:4200/api",
    }
    shown = run("settings", cwd=tmp_path, **credentials)
    assert shown.returncode == 0, shown.stderr
    assert '"uri": "bolt://***@127.0.0.1:7687"' in shown.stdout and '"base_url": "http://***@127.0.0.1:9/v1"' in shown.stdout
    status = run("model", "status", cwd=tmp_path, **credentials)
    assert "commands use: gpt-4o-mini on an OpenAI-compatible server at http://***@127.0.0.1:9/v1" in status.stdout
    with_port_1 = {**credentials, "NEO4J_URI": f"bolt://neo4j:{secret}@127.0.0.1:1"}
    setup = run("store", "setup", "--store", "neo4j", cwd=tmp_path, **with_port_1)
    assert setup.returncode == 2 and "NEO4J_URI" in setup.stderr and "Traceback" not in setup.stderr
    for result in (shown, status, setup):
        assert secret not in result.stdout + result.stderr
