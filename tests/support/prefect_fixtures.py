"""Fixtures and helpers shared by the tests that need a real Prefect server, its deployments and workers.

Registered as a pytest plugin by tests/conftest.py. One server serves the whole session, set up and deployed to
once (a start and ``prefect deploy --all`` took 15 s, paid by every module that had a server of its own); each
module leaves it with no unfinished flow run, so no later module's worker picks one up.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_LOGGING_TO_API_ENABLED,
    PREFECT_RESULTS_LOCAL_STORAGE_PATH,
    temporary_settings,
)

from mnemoflow.flows.setup import ensure_model_limit, setup_prefect
from mnemoflow.memory.protocol import GraphStore
from tests.conftest import neo4j_auth, new_store
from tests.support.openai_server import ScriptedOpenAIServer
from tests.support.prefect_server import PrefectServer, Worker

RUN_TIMEOUT = 300.0
MODEL_LIMIT = "model-budget"
HEARTBEAT_SECONDS = 30
"""The workers' runs send a heartbeat this often (Prefect's minimum)."""
SILENCE_SECONDS = 45
"""The automation reschedules a run silent this long (checked every second, see :class:`PrefectServer`): a heartbeat
may come 15 s late on a loaded machine before a live run is taken for dead."""


@pytest.fixture(scope="session")
def shared_prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """The session's server; modules use it through :func:`prefect_server`."""
    with PrefectServer(tmp_path_factory.mktemp("prefect")) as server:
        yield server


@pytest.fixture(scope="module")
def prefect_server(shared_prefect_server: PrefectServer) -> Iterator[PrefectServer]:
    """The session's server, left with no unfinished flow run when the module ends: a run a test scheduled and no
    worker ran (or one the automation reschedules) would otherwise go to the next module's workers."""
    yield shared_prefect_server
    delete_unfinished_runs(shared_prefect_server)


UNFINISHED = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[
    StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.PAUSED, StateType.CANCELLING
])))  # fmt: skip


def delete_unfinished_runs(server: PrefectServer) -> None:
    """Delete every flow run on ``server`` that has not ended (Prefect's client retries a busy server's 503s)."""

    async def delete() -> None:
        async with get_client() as client:
            while runs := await client.read_flow_runs(flow_run_filter=UNFINISHED, limit=200):
                for run in runs:
                    await client.delete_flow_run(run.id)

    with temporary_settings({PREFECT_API_URL: server.api_url}):
        asyncio.run(delete())


@pytest.fixture(scope="module")
def model() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer() as server:
        yield server


@pytest.fixture
async def prefect_api(prefect_server: PrefectServer) -> AsyncIterator[PrefectServer]:
    """This process's Prefect client points at the test server (logs stay local: the server stops first)."""
    settings = {
        PREFECT_API_URL: prefect_server.api_url,
        PREFECT_LOGGING_TO_API_ENABLED: False,
        PREFECT_RESULTS_LOCAL_STORAGE_PATH: prefect_server.home / "results",  # flows keep their results: not in ~/.prefect
    }
    with temporary_settings(settings):
        yield prefect_server


@pytest.fixture(scope="session")
def shared_deployment(shared_prefect_server: PrefectServer) -> Any:
    """``mnemoflow prefect setup`` then ``prefect deploy --all`` from the repository's prefect.yaml, once a session;
    modules use it through :func:`deployed`."""
    with temporary_settings({PREFECT_API_URL: shared_prefect_server.api_url}):
        asyncio.run(setup_prefect(silence=timedelta(seconds=SILENCE_SECONDS)))
        asyncio.run(ensure_model_limit(MODEL_LIMIT, 2))
    return shared_prefect_server.cli("deploy", "--all")


@pytest.fixture(scope="module")
def deployed(prefect_server: PrefectServer, shared_deployment: Any) -> Any:
    """The completed ``prefect deploy --all`` of the module's server (the session's, set up once)."""
    return shared_deployment


@pytest.fixture
async def neo4j(empty_neo4j: str) -> AsyncIterator[GraphStore]:
    store = new_store("neo4j", neo4j_uri=empty_neo4j)
    await store.setup()
    try:
        yield store
    finally:
        await store.close()


def run_env(neo4j_uri: str, model: ScriptedOpenAIServer, namespace: str) -> dict[str, str]:
    """What a worker (or this process, for a flow called in it) needs: the test Neo4j, the scripted model."""
    env = {
        "MNEMOFLOW_STORE_BACKEND": "neo4j",
        "MNEMOFLOW_NAMESPACE": namespace,
        "MNEMOFLOW_NODE_MODULES": "tests.support.testing_nodes",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),  # where tests.support imports from
        "MNEMOFLOW_LLM_CACHE": "false",
        "MNEMOFLOW_LLM_INITIAL_BACKOFF": "0.05",
        "MNEMOFLOW_LOG_LEVEL": "warning",
        "NEO4J_URI": neo4j_uri,
        "OPENAI_BASE_URL": model.base_url,
        "OPENAI_API_KEY": "test",
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS),
    }
    auth = neo4j_auth()
    if auth:
        env["NEO4J_USER"], env["NEO4J_PASSWORD"] = auth
    return env


@pytest.fixture
def workers(prefect_server: PrefectServer) -> Iterator[Callable[..., Worker]]:
    """Start workers with ``workers(name, env=..., limit=...)``; they stop when the test ends."""
    started: list[Worker] = []

    def start(name: str, *, env: dict[str, str], limit: int | None = None) -> Worker:
        worker = prefect_server.start_worker(f"{name}-{uuid.uuid4().hex[:6]}", env=env, limit=limit)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def logs(workers: list[Worker]) -> str:
    return "\n".join(f"--- {worker.name}\n{worker.output()[-4000:]}" for worker in workers)


async def wait_final(flow_run_id: uuid.UUID, workers: list[Worker], timeout: float = RUN_TIMEOUT) -> FlowRun:
    deadline = time.monotonic() + timeout
    async with get_client() as client:
        while time.monotonic() < deadline:
            run = await client.read_flow_run(flow_run_id)
            if run.state is not None and run.state.is_final():
                return run
            await asyncio.sleep(0.5)
    raise AssertionError(f"flow run {flow_run_id} did not finish in {timeout} s (state {run.state}):\n{logs(workers)}")
