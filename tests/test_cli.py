"""The ``mnemoflow`` command, run as a user would: a real process, the real console script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

MNEMOFLOW = str(Path(sys.executable).with_name("mnemoflow"))


def run(*arguments: str, cwd: Path, **environment: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MNEMOFLOW_", "NEO4J_"))}
    env.update(environment)
    return subprocess.run([MNEMOFLOW, *arguments], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_demo_on_the_embedded_store_is_idempotent(tmp_path: Path) -> None:
    first = run("demo", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "Stored 9 passages in the sqlite store" in first.stdout
    keyword_section = first.stdout.split("Keyword search")[1].split("Vector search")[0]
    assert "1. [" in keyword_section and "storm" in keyword_section.split("2. [")[0]
    assert '"event": "demo.start"' in first.stderr and '"run_id"' in first.stderr
    second = run("demo", cwd=tmp_path)
    assert second.returncode == 0
    info = run("store", "info", "--namespace", "demo", cwd=tmp_path)
    assert "namespace 'demo': 10 nodes, 17 relationships" in info.stdout
    assert (tmp_path / ".mnemoflow" / "memory.db").exists()


@pytest.mark.neo4j
def test_demo_on_neo4j(tmp_path: Path, empty_neo4j: str) -> None:
    result = run("demo", "--backend", "neo4j", "--namespace", "cli", cwd=tmp_path, NEO4J_URI=empty_neo4j)
    assert result.returncode == 0, result.stderr
    assert "Stored 9 passages in the neo4j store" in result.stdout
    info = run("store", "info", "--backend", "neo4j", "--namespace", "cli", cwd=tmp_path, NEO4J_URI=empty_neo4j)
    assert "namespace 'cli': 10 nodes, 17 relationships" in info.stdout


def test_bad_configuration_is_a_clear_error(tmp_path: Path) -> None:
    result = run("demo", cwd=tmp_path, MNEMOFLOW_STORE_BACKEND="postgres")
    assert result.returncode == 2
    assert "invalid configuration" in result.stderr and "backend" in result.stderr
    unreachable = run("store", "setup", "--backend", "neo4j", cwd=tmp_path, NEO4J_URI="bolt://127.0.0.1:9", NEO4J_CONNECTION_TIMEOUT="2")
    assert unreachable.returncode == 2
    assert "NEO4J_URI" in unreachable.stderr and "127.0.0.1:9" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr


def test_help_is_fast_and_lazy(tmp_path: Path) -> None:
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, mnemoflow.cli; print(sorted(m for m in ('neo4j', 'numpy', 'openai', 'memory') if m in sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "[]"
    assert run("--help", cwd=tmp_path).returncode == 0
