"""Shared fixtures: a real Neo4j server once per session, and a store per backend for each test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from neo4j import GraphDatabase
from pydantic import SecretStr

from mnemoflow.llm import LLM, OfflineBackend
from mnemoflow.llm.endpoint import forget_capabilities
from mnemoflow.memory import HashingEmbedder, Neo4jStore, SQLiteStore
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.nodes import load_builtin_nodes
from mnemoflow.settings import LLMSettings, Neo4jSettings, Settings, StoreSettings
from tests.support.neo4j_server import Neo4jServer, Neo4jStartError

pytest_plugins = ["tests.support.prefect_fixtures"]

load_builtin_nodes()  # the tests use the mechanisms' nodes, records and offline answers without loading a graph first

EMBEDDER = HashingEmbedder(384)
NO_LOCAL_SERVER = "/nonexistent/mnemoflow-tests/model"
"""A local model server home no test finds a server in: a developer's running server is never used by accident."""
os.environ["MNEMOFLOW_LOCAL_SERVER_HOME"] = NO_LOCAL_SERVER


@pytest.fixture(autouse=True)
def _fresh_capabilities() -> None:
    """Each test learns its servers' capabilities anew (a later server may reuse an earlier one's port)."""
    forget_capabilities()


def offline_llm() -> LLM:
    """The deterministic offline model, no cache: for graphs whose nodes do not need a real model."""
    return LLM(OfflineBackend(), LLMSettings(cache=False))


def required(service: str) -> bool:
    """CI sets MNEMOFLOW_REQUIRE_NEO4J=1, MNEMOFLOW_REQUIRE_MODEL=1...: there a missing service fails the run."""
    return os.environ.get(f"MNEMOFLOW_REQUIRE_{service.upper()}", "").lower() in ("1", "true", "yes")


def neo4j_required() -> bool:
    return required("neo4j")


@dataclass(frozen=True)
class RealModel:
    """The local model server ``infra/with-model.sh`` started for the session."""

    home: Path
    """Its home: settings with ``local_server.home`` here find it as the embedded default."""
    base_url: str


@pytest.fixture(scope="session")
def real_model() -> RealModel:
    """The session's local model server; skips without one (fails under MNEMOFLOW_REQUIRE_MODEL=1)."""
    home, url = os.environ.get("MNEMOFLOW_TEST_MODEL_HOME"), os.environ.get("MNEMOFLOW_TEST_MODEL_URL")
    if not home or not url:
        message = "no local model server: run the tests with `make test` (infra/with-model.sh starts one)"
        if required("model"):
            pytest.fail(f"{message}; MNEMOFLOW_REQUIRE_MODEL is set", pytrace=False)
        pytest.skip(message)
    return RealModel(Path(home), url)


@pytest.fixture(scope="session")
def neo4j_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``NEO4J_URI`` when set; otherwise a server started through ``infra/neo4j`` for the whole session."""
    if os.environ.get("NEO4J_URI"):
        uri = os.environ["NEO4J_URI"]
        claim_for_tests(uri)
        yield uri
        return
    server = Neo4jServer(tmp_path_factory.mktemp("neo4j-home"))
    try:
        uri = server.start()
    except (Neo4jStartError, OSError) as exc:
        if neo4j_required():
            pytest.fail(f"MNEMOFLOW_REQUIRE_NEO4J is set but Neo4j could not start: {exc}", pytrace=False)
        pytest.skip(f"no Neo4j: {exc}")
    try:
        yield uri
    finally:
        server.stop()


def neo4j_auth() -> tuple[str, str] | None:
    password = os.environ.get("NEO4J_PASSWORD") if os.environ.get("NEO4J_URI") else None
    return (os.environ.get("NEO4J_USER", "neo4j"), password) if password else None


def claim_for_tests(uri: str) -> None:
    """Refuse to wipe a database that holds data the tests did not write; mark it as a test database."""
    with GraphDatabase.driver(uri, auth=neo4j_auth()) as driver:
        records, _, _ = driver.execute_query(
            "MATCH (n) RETURN count(n) AS total, count(CASE WHEN n:MfTestMarker THEN 1 END) AS markers"
        )
        if records[0]["total"] and not records[0]["markers"]:
            pytest.fail(
                f"NEO4J_URI={uri} holds {records[0]['total']} nodes the tests did not write, and the Neo4j tests "
                "delete everything between tests. Point NEO4J_URI at a throwaway database, or unset it and let "
                "the tests start one through infra/neo4j.",
                pytrace=False,
            )
        driver.execute_query("MERGE (:MfTestMarker {key: 'mnemoflow-tests'})")


def wipe_neo4j(uri: str) -> None:
    """Remove every node but the test marker; indexes and constraints stay (they are idempotent to recreate)."""
    with GraphDatabase.driver(uri, auth=neo4j_auth()) as driver:
        driver.execute_query("MATCH (n) WHERE NOT n:MfTestMarker DETACH DELETE n")


def new_store(backend: str, *, neo4j_uri: str | None = None, sqlite_path: Path | None = None, **options: object) -> GraphStore:
    """A store of either backend with the test embedder's model and dimension unless overridden."""
    embedding = {"embedding_model": EMBEDDER.model, "embedding_dimension": EMBEDDER.dimension}
    embedding.update(options)  # type: ignore[arg-type]
    if backend == "neo4j":
        assert neo4j_uri is not None
        return Neo4jStore(neo4j_uri, auth=neo4j_auth(), **embedding)  # type: ignore[arg-type]
    assert sqlite_path is not None
    return SQLiteStore(sqlite_path, **embedding)  # type: ignore[arg-type]


def cli_environment(
    backend: str, tmp_path: Path, *, namespace: str, neo4j_uri: str | None = None, model_url: str | None = None, **extra: str
) -> dict[str, str]:
    """The environment of a ``mnemoflow`` process on a test store: this process's MNEMOFLOW_, NEO4J_ and OPENAI_
    variables dropped; the backend (``memory.db`` in ``tmp_path``, or the Neo4j at ``neo4j_uri``), the namespace and,
    with ``model_url``, the scripted model server (response cache off) set; ``extra`` on top."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("MNEMOFLOW_", "NEO4J_", "OPENAI_"))}
    environment.update(
        MNEMOFLOW_STORE_BACKEND=backend,
        MNEMOFLOW_STORE_SQLITE_PATH=str(tmp_path / "memory.db"),
        MNEMOFLOW_NAMESPACE=namespace,
        MNEMOFLOW_LOCAL_SERVER_HOME=NO_LOCAL_SERVER,
    )
    if neo4j_uri is not None:
        environment["NEO4J_URI"] = neo4j_uri
    if model_url is not None:
        environment.update(OPENAI_BASE_URL=model_url, OPENAI_API_KEY="test", MNEMOFLOW_LLM_CACHE="false")
    environment.update(extra)
    return environment


def settings_for(backend: str, *, neo4j_uri: str | None = None, sqlite_path: Path | None = None) -> Settings:
    """Settings for a run on either backend: the test Neo4j (with its credentials) or a SQLite file."""
    auth = neo4j_auth()
    return Settings(
        store=StoreSettings(backend=backend, sqlite_path=sqlite_path or Path("unused/memory.db")),
        neo4j=Neo4jSettings(
            uri=neo4j_uri or "bolt://127.0.0.1:7687",
            user=auth[0] if auth else "neo4j",
            password=SecretStr(auth[1]) if auth else None,
        ),
    )


def settings_of(store: GraphStore, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """Settings matching a ``store`` fixture's backend: its Neo4j, or ``memory.db`` in ``tmp_path``."""
    uri = request.getfixturevalue("empty_neo4j") if store.backend == "neo4j" else None
    return settings_for(store.backend, neo4j_uri=uri, sqlite_path=tmp_path / "memory.db")


@pytest.fixture(params=["sqlite", pytest.param("neo4j", marks=pytest.mark.neo4j)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def empty_neo4j(neo4j_uri: str) -> str:
    """The session's Neo4j, emptied for this test."""
    wipe_neo4j(neo4j_uri)
    return neo4j_uri


@pytest.fixture
async def store(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[GraphStore]:
    """A freshly set-up, empty store of the parametrized backend."""
    uri = request.getfixturevalue("empty_neo4j") if backend == "neo4j" else None
    created = new_store(backend, neo4j_uri=uri, sqlite_path=tmp_path / "memory.db")
    await created.setup()
    try:
        yield created
    finally:
        await created.close()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[GraphStore]:
    """A freshly set-up, empty SQLite store, for tests that need no second backend."""
    created = new_store("sqlite", sqlite_path=tmp_path / "memory.db")
    await created.setup()
    try:
        yield created
    finally:
        await created.close()


@pytest.fixture
def namespace() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


# -- markers that follow from the fixtures a test uses ------------------------------------------------------

_MARKED_BY_FIXTURE = {"neo4j_uri": "neo4j", "prefect_server": "prefect", "browser": "browser", "real_model": "model"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark a test that needs Neo4j, Prefect, a browser or the real model through its fixtures; all but Neo4j's are
    slow."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        for fixture, marker in _MARKED_BY_FIXTURE.items():
            if fixture in fixtures:
                item.add_marker(marker)
                if marker != "neo4j":
                    item.add_marker("slow")


# -- in CI a skipped Neo4j or real-model test is a failure ------------------------------------------------

_COUNTED = {"neo4j": "Neo4j", "model": "Real-model"}
_skipped: dict[str, list[str]] = {marker: [] for marker in _COUNTED}
_passed: dict[str, list[str]] = {marker: [] for marker in _COUNTED}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for marker in _COUNTED:
        if marker not in report.keywords:
            continue
        if report.skipped and not hasattr(report, "wasxfail"):  # an expected failure is not a skip
            _skipped[marker].append(report.nodeid)
        elif report.when == "call" and report.passed:
            _passed[marker].append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if any(_skipped[marker] and required(marker) for marker in _COUNTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for marker, name in _COUNTED.items():
        terminalreporter.write_line(f"{name} tests: {len(_passed[marker])} passed, {len(_skipped[marker])} skipped")
        if _skipped[marker] and required(marker):
            terminalreporter.write_line(
                f"MNEMOFLOW_REQUIRE_{marker.upper()} is set but {len(_skipped[marker])} {name} tests were skipped: "
                "failing the run",
                red=True,
            )
