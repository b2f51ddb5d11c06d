"""``mnemoflow store`` and the settings errors, run as a user would: which store a command opened, whether it made
a new one, what ``store info`` lists, and errors that name the variable, the flag and the allowed values."""

from __future__ import annotations

from pathlib import Path

import pytest

from mnemoflow.cli.common import store_location
from mnemoflow.errors import ConfigError
from mnemoflow.memory import NodeRecord
from mnemoflow.settings import Neo4jSettings, Settings, StoreSettings
from tests.conformance.helpers import chunk, link
from tests.conftest import new_store
from tests.test_cli import run

pytestmark = pytest.mark.subprocess



async def fill(backend: str, *, sqlite_path: Path | None = None, neo4j_uri: str | None = None) -> None:
    """Two namespaces: ``books`` with three chunks, a document and two links; ``runs`` with one chunk."""
    store = new_store(backend, sqlite_path=sqlite_path, neo4j_uri=neo4j_uri)
    await store.setup()
    try:
        await store.upsert_nodes([chunk("books", name) for name in "abc"] + [NodeRecord(id="d", namespace="books", kind="Document")])
        await store.upsert_relationships([link("books", "a", "b"), link("books", "b", "c")])
        await store.upsert_nodes([chunk("runs", "x")])
    finally:
        await store.close()


EVERY_NAMESPACE = [
    "namespace 'books': 4 nodes, 2 relationships",
    "  Chunk: 3",
    "  Document: 1",
    "namespace 'runs': 1 nodes, 0 relationships",
    "  Chunk: 1",
]


def test_reading_commands_create_no_store_and_name_the_missing_file(tmp_path: Path) -> None:
    work = tmp_path.resolve() / "elsewhere"  # the path as the command sees it (no symbolic links)
    work.mkdir()
    missing = run("store", "info", cwd=work)
    assert missing.returncode == 2 and missing.stdout == ""
    expected = work / ".mnemoflow" / "memory.db"
    assert f"error: no store at {expected} (MNEMOFLOW_STORE_SQLITE_PATH sets where" in missing.stderr
    assert "mnemoflow store setup" in missing.stderr and "Traceback" not in missing.stderr
    relative = run("store", "info", "--namespace", "demo", cwd=work, MNEMOFLOW_STORE_SQLITE_PATH="data/m.db")
    assert relative.returncode == 2 and f"no store at {work / 'data' / 'm.db'} " in relative.stderr
    assert list(work.iterdir()) == []  # nothing created, not even the folder


def test_a_writing_command_says_once_that_it_created_the_store(tmp_path: Path) -> None:
    first = run("store", "setup", cwd=tmp_path)
    path = tmp_path.resolve() / ".mnemoflow" / "memory.db"
    assert first.returncode == 0, first.stderr
    assert first.stderr == f"note: created a new, empty store at {path}\n"
    assert first.stdout == f"store ready at schema version 1: sqlite at {path}\n"
    again = run("store", "setup", cwd=tmp_path)
    assert again.returncode == 0 and again.stderr == ""  # the store exists now: nothing to note

    info = run("store", "info", cwd=tmp_path)
    assert info.returncode == 0 and info.stderr == ""
    assert info.stdout.splitlines() == [f"store: sqlite at {path}", "schema version: 1", "no namespace holds records yet"]


async def test_info_lists_every_namespace_by_kind_unless_one_is_given(tmp_path: Path) -> None:
    path = tmp_path.resolve() / "memory.db"
    await fill("sqlite", sqlite_path=path)

    listed = run("store", "info", cwd=tmp_path, MNEMOFLOW_STORE_SQLITE_PATH=str(path))
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == [f"store: sqlite at {path}", "schema version: 1", *EVERY_NAMESPACE]

    by_flag = run("store", "info", "--namespace", "runs", cwd=tmp_path, MNEMOFLOW_STORE_SQLITE_PATH=str(path))
    assert by_flag.stdout.splitlines()[2:] == EVERY_NAMESPACE[3:]
    by_variable = run("store", "info", cwd=tmp_path, MNEMOFLOW_STORE_SQLITE_PATH=str(path), MNEMOFLOW_NAMESPACE="books")
    assert by_variable.stdout.splitlines()[2:] == EVERY_NAMESPACE[:3]
    # the default namespace, named: empty, and said so rather than left out
    named_default = run("store", "info", "--namespace", "default", cwd=tmp_path, MNEMOFLOW_STORE_SQLITE_PATH=str(path))
    assert named_default.stdout.splitlines()[2:] == ["namespace 'default': 0 nodes, 0 relationships"]


@pytest.mark.neo4j
async def test_info_on_neo4j_names_the_server(tmp_path: Path, empty_neo4j: str) -> None:
    await fill("neo4j", neo4j_uri=empty_neo4j)
    listed = run("store", "info", "--store", "neo4j", cwd=tmp_path, NEO4J_URI=empty_neo4j)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == [f"store: neo4j at {empty_neo4j}, database neo4j", "schema version: 1", *EVERY_NAMESPACE]
    assert not (tmp_path / ".mnemoflow").exists()  # no SQLite file made on the side


def test_settings_errors_name_the_variable_the_flag_and_the_allowed_values(tmp_path: Path) -> None:
    from_variables = run("store", "info", cwd=tmp_path, MNEMOFLOW_STORE_BACKEND="foo", MNEMOFLOW_STORE_WRITE_CHUNK_ROWS="0")
    assert from_variables.returncode == 2 and "Traceback" not in from_variables.stderr
    assert from_variables.stderr.splitlines() == [
        "error: invalid configuration:",
        "  MNEMOFLOW_STORE_BACKEND (or --store) (store.backend): Input should be 'sqlite' or 'neo4j' (got 'foo')",
        "  MNEMOFLOW_STORE_WRITE_CHUNK_ROWS (store.write_chunk_rows): Input should be greater than or equal to 1 (got '0')",
    ]
    from_flag = run("store", "info", "--namespace", "", cwd=tmp_path)
    assert from_flag.returncode == 2
    assert "  --namespace (or MNEMOFLOW_NAMESPACE) (namespace): String should have at least 1 character (got '')" in from_flag.stderr
    no_such_flag = run("settings", cwd=tmp_path, MNEMOFLOW_STORE_BACKEND="foo")  # `settings` has no --store
    assert no_such_flag.returncode == 2
    assert "  MNEMOFLOW_STORE_BACKEND (store.backend): Input should be 'sqlite' or 'neo4j' (got 'foo')" in no_such_flag.stderr
    assert not (tmp_path / ".mnemoflow").exists()


def test_a_bad_log_level_is_named_before_any_command_runs(tmp_path: Path) -> None:
    result = run("store", "setup", cwd=tmp_path, MNEMOFLOW_LOG_LEVEL="loud")
    assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "error: invalid configuration:",
        "  MNEMOFLOW_LOG_LEVEL (log.level): Input should be 'debug', 'info', 'warning' or 'error' (got 'loud')",
    ]
    assert not (tmp_path / ".mnemoflow").exists()


def test_a_value_passed_in_code_is_told_from_one_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MNEMOFLOW_NAMESPACE", "fine")
    with pytest.raises(ConfigError) as given:
        Settings.load(namespace="")  # a flow run's parameter: no flag to name
    assert "  the value given (or MNEMOFLOW_NAMESPACE) (namespace): String should have" in str(given.value)
    monkeypatch.setenv("MNEMOFLOW_NAMESPACE", "")
    with pytest.raises(ConfigError) as from_environment:
        Settings.load(flags={"namespace": "--namespace"})
    assert "  MNEMOFLOW_NAMESPACE (or --namespace) (namespace): String should have" in str(from_environment.value)


def test_the_store_is_named_by_absolute_path_or_by_uri_without_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = Settings(store=StoreSettings(backend="sqlite", sqlite_path=Path("data/../m.db")))
    assert store_location(relative) == f"sqlite at {tmp_path.resolve() / 'm.db'}"
    server = Settings(store=StoreSettings(backend="neo4j"), neo4j=Neo4jSettings(uri="bolt://me:secret@db:7687", database="books"))
    assert store_location(server) == "neo4j at bolt://***@db:7687, database books"
