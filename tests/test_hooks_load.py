"""Two ``mnemoflow serve`` processes on one store, each delivery sent to both at once: still exactly one run.

The receiver's per-delivery lock lives in one process; across processes only the store's records and Prefect's
idempotency key stand between a delivery and a second run. Prefect here is the stand-in API
(:mod:`tests.support.prefect_standin`), which counts the runs created per idempotency key.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from mnemoflow.flows.server.hooks.deliveries import DELIVERY_KIND
from mnemoflow.flows.server.hooks.providers import sign_generic
from tests.conftest import cli_environment, new_store
from tests.support.prefect_standin import PrefectStandIn, prefect_standin
from tests.support.web_server import serve_processes

pytestmark = [pytest.mark.slow, pytest.mark.subprocess, pytest.mark.timeout(300)]

SECRET = "load-secret"
HOOKS_YAML = """
hooks:
  - name: load
    provider: generic
    secret_env: TEST_LOAD_SECRET
    deployment: run_graph/text-stats
    parameters:
      input: "{text: text}"
"""
DELIVERIES = 30


@pytest.fixture(scope="module")
def standin() -> Iterator[PrefectStandIn]:
    with prefect_standin() as started:
        yield started


@pytest.fixture
async def two_servers(
    backend: str, standin: PrefectStandIn, request: pytest.FixtureRequest, tmp_path: Path, namespace: str
) -> AsyncIterator[list[str]]:
    """Two ``mnemoflow serve`` processes on one store of ``backend``; their base URLs."""
    standin.reset()
    (tmp_path / "hooks.yaml").write_text(HOOKS_YAML)
    uri = request.getfixturevalue("empty_neo4j") if backend == "neo4j" else None
    env = cli_environment(
        backend,
        tmp_path,
        namespace=namespace,
        neo4j_uri=uri,
        MNEMOFLOW_HOOKS_FILE=str(tmp_path / "hooks.yaml"),
        MNEMOFLOW_HOOKS_NAMESPACE=f"{namespace}-hooks",
        TEST_LOAD_SECRET=SECRET,
        PREFECT_API_URL=standin.api_url,
    )
    with serve_processes(2, env, tmp_path) as started:
        yield [url for url, _ in started]


async def post(client: httpx.AsyncClient, url: str, delivery: str) -> tuple[int, str | None]:
    """Send ``delivery`` (signed now) to ``url``; its status and the run id answered."""
    body = json.dumps({"text": f"delivery {delivery}"}).encode()
    reply = await client.post(
        f"{url}/hooks/load", content=body, headers=sign_generic(SECRET.encode(), body, int(time.time()), delivery=delivery)
    )
    return reply.status_code, reply.json().get("flow_run_id")


async def to_both(client: httpx.AsyncClient, urls: list[str], deliveries: list[str]) -> dict[str, list[tuple[int, str | None]]]:
    """Each delivery sent to both servers at once, all deliveries at once; the answers per delivery."""
    answers = await asyncio.gather(*(asyncio.gather(*(post(client, url, delivery) for url in urls)) for delivery in deliveries))
    return dict(zip(deliveries, answers, strict=True))


async def test_two_processes_on_one_store_start_one_run_per_delivery(
    two_servers: list[str], standin: PrefectStandIn, backend: str, tmp_path: Path, namespace: str, request: pytest.FixtureRequest
) -> None:
    deliveries = [uuid.uuid4().hex for _ in range(DELIVERIES)]
    async with httpx.AsyncClient(timeout=60) as client:
        first = await to_both(client, two_servers, deliveries)
        redelivered = await to_both(client, two_servers, deliveries)  # settles any 503, and duplicates the rest
        for _ in range(3):  # a 503 the redelivery met too is settled by the sender's next try
            unsettled = [delivery for delivery, answers in redelivered.items() if not any(code < 300 for code, _ in answers)]
            if not unsettled:
                break
            redelivered.update(await to_both(client, two_servers, unsettled))

    answers = {delivery: first[delivery] + redelivered[delivery] for delivery in deliveries}
    assert {code for replies in answers.values() for code, _ in replies} <= {200, 202, 503}, answers
    assert not standin.doubled() and not standin.unexpected
    runs = {delivery: standin.runs.get(f"mnemoflow-hook:load:{delivery}") for delivery in deliveries}
    assert len(standin.runs) == DELIVERIES and all(runs.values()), runs
    for delivery, replies in answers.items():
        assert any(code < 300 for code, _ in redelivered[delivery]), (delivery, replies)
        assert {run for code, run in replies if code < 300} == {runs[delivery]}, (delivery, replies)

    uri = request.getfixturevalue("empty_neo4j") if backend == "neo4j" else None
    store = new_store(backend, neo4j_uri=uri, sqlite_path=tmp_path / "memory.db")
    await store.setup()
    try:
        records = await store.list_nodes(f"{namespace}-hooks", kind=DELIVERY_KIND, limit=10 * DELIVERIES)
    finally:
        await store.close()
    recorded = {
        (record.properties["delivery_id"], record.properties["outcome"], record.properties["flow_run_id"]) for record in records
    }
    assert len(records) == DELIVERIES
    assert recorded == {(delivery, "triggered", runs[delivery]) for delivery in deliveries}
