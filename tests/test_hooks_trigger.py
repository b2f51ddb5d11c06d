"""The receiver's Prefect trigger: one client for the app's life, a bounded wait, and a ``pending`` record first.

Deliveries go through the real app over HTTP. Prefect is either the stand-in API of tests/test_ui_deliveries.py
(one run per idempotency key) or a port that accepts connections and never answers (a Prefect that hangs).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import PrefectClient
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL, temporary_settings

from mnemoflow.flows.server.app import create_app
from mnemoflow.flows.server.hooks import trigger as trigger_module
from mnemoflow.flows.server.hooks.deliveries import DeliveryLog, PastDelivery
from mnemoflow.flows.server.hooks.providers import sign_generic
from mnemoflow.flows.server.hooks.trigger import PrefectTrigger, TriggerUnavailable
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.settings import HooksSettings, Settings
from tests.conftest import cli_environment, settings_of
from tests.support.web_server import serve, serve_processes
from tests.test_ui_deliveries import StandInPrefect

SECRET = "generic-secret-for-the-trigger"
HOOKS_YAML = """
hooks:
  - name: stats
    provider: generic
    secret_env: TEST_TRIGGER_SECRET
    deployment: run_graph/text-stats
    parameters:
      input: "{text: text}"
"""
NAMESPACE = "hooks"


@pytest.fixture(scope="module")
def stand_in() -> Iterator[StandInPrefect]:
    prefect = StandInPrefect()
    with serve(prefect.app()) as url:
        prefect.url = f"{url}/api"
        yield prefect


@pytest.fixture(scope="module")
def silent_api() -> Iterator[str]:
    """A Prefect API address that takes connections (the kernel's backlog) and never answers: nothing accepts them."""
    with socket.create_server(("127.0.0.1", 0), backlog=128) as listener:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/api"


@pytest.fixture
def hooks_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TEST_TRIGGER_SECRET", SECRET)
    path = tmp_path / "hooks.yaml"
    path.write_text(HOOKS_YAML)
    return path


def with_hooks(settings: Settings, hooks_file: Path, wait_s: float) -> Settings:
    hooks = HooksSettings(file=hooks_file, namespace=NAMESPACE, prefect_wait_s=wait_s)
    return settings.model_copy(update={"hooks": hooks})


def send(site: str, text: str, delivery: str) -> httpx.Response:
    """One signed delivery (signed now: a redelivery carries a fresh timestamp and signature, as senders do)."""
    body = json.dumps({"text": text}).encode()
    headers = sign_generic(SECRET.encode(), body, int(time.time()), delivery=delivery)
    return httpx.post(f"{site}/hooks/stats", content=body, headers=headers, timeout=60)


async def past(store: GraphStore, delivery: str) -> PastDelivery | None:
    return await DeliveryLog(store, namespace=NAMESPACE, retention_days=1).find("stats", delivery)


def runs_keyed(prefect: StandInPrefect, delivery: str) -> int:
    return sum(key == f"mnemoflow-hook:stats:{delivery}" for key in prefect.flow_runs)


async def test_a_silent_prefect_is_answered_503_after_the_wait_and_the_redelivery_triggers(
    store: GraphStore, tmp_path: Path, request: pytest.FixtureRequest, hooks_file: Path, silent_api: str, stand_in: StandInPrefect
) -> None:
    settings = with_hooks(settings_of(store, tmp_path, request), hooks_file, wait_s=1.0)
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    with temporary_settings({PREFECT_API_URL: silent_api}), serve(create_app(settings)) as site:
        replies = [await asyncio.to_thread(send, site, text, delivery) for text, delivery in (("one", first), ("two", second))]
        # at once: two deliveries do not wait for each other; a copy waits for its original, within the same wait
        together = await asyncio.gather(*(asyncio.to_thread(send, site, "three", key) for key in ("k3", "k4", "k3")))
    for reply, delivery in zip(replies, (first, second), strict=True):
        assert reply.status_code == 503, reply.text
        assert reply.headers["Retry-After"] == "30"
        assert "did not answer within 1 s" in reply.json()["error"]
        recorded = await past(store, delivery)
        assert recorded is not None and (recorded.outcome, recorded.attempts) == ("unavailable", 1)
    assert [reply.status_code for reply in together] == [503, 503, 503], [reply.text for reply in together]
    assert "did not answer within 1 s" in together[1].json()["error"]
    recorded = await past(store, "k3")
    assert recorded is not None and recorded.outcome == "unavailable"

    with temporary_settings({PREFECT_API_URL: stand_in.url}), serve(create_app(settings)) as site:
        again = await asyncio.to_thread(send, site, "one", first)
    assert again.status_code == 202, again.text
    recorded = await past(store, first)
    assert recorded is not None and (recorded.outcome, recorded.attempts) == ("triggered", 2)
    assert recorded.flow_run_id == again.json()["flow_run_id"] and runs_keyed(stand_in, first) == 1


@pytest.mark.subprocess
async def test_a_server_killed_while_prefect_hangs_leaves_the_delivery_pending_and_its_redelivery_counts(
    sqlite_store: GraphStore,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    hooks_file: Path,
    silent_api: str,
    stand_in: StandInPrefect,
) -> None:
    delivery = str(uuid.uuid4())
    env = cli_environment(
        "sqlite",
        tmp_path,
        namespace="trigger",
        MNEMOFLOW_HOOKS_FILE=str(hooks_file),
        MNEMOFLOW_HOOKS_NAMESPACE=NAMESPACE,
        MNEMOFLOW_HOOKS_PREFECT_WAIT_S="60",
        TEST_TRIGGER_SECRET=SECRET,
        PREFECT_API_URL=silent_api,
    )
    with serve_processes(1, env, tmp_path) as [(site, process)]:
        sending = asyncio.create_task(asyncio.to_thread(send, site, "killed mid-call", delivery))
        for _ in range(200):  # the record is written before Prefect is asked, which never answers
            recorded = await past(sqlite_store, delivery)
            if recorded is not None:
                break
            await asyncio.sleep(0.05)
        process.kill()
    with pytest.raises(httpx.TransportError):
        await sending
    recorded = await past(sqlite_store, delivery)
    assert recorded is not None and (recorded.outcome, recorded.attempts) == ("pending", 1), (tmp_path / "serve-0.log").read_text()

    settings = with_hooks(settings_of(sqlite_store, tmp_path, request), hooks_file, wait_s=5.0)
    with temporary_settings({PREFECT_API_URL: stand_in.url}), serve(create_app(settings)) as site:
        again = await asyncio.to_thread(send, site, "killed mid-call", delivery)
        repeated = await asyncio.to_thread(send, site, "killed mid-call", delivery)
    assert again.status_code == 202, again.text
    assert repeated.status_code == 200 and repeated.json()["flow_run_id"] == again.json()["flow_run_id"]
    recorded = await past(sqlite_store, delivery)
    assert recorded is not None and (recorded.outcome, recorded.attempts) == ("triggered", 2)
    assert runs_keyed(stand_in, delivery) == 1


class Counted:
    """Counts the Prefect clients the trigger opens and the deployment lookups they make; ``fail_next`` makes the next
    create a connection failure, as a broken connection would."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.opened: list[PrefectClient] = []
        self.lookups = 0
        self.fail_next = False
        self.missing_next = False
        real_get_client = trigger_module.get_client
        read, create = PrefectClient.read_deployment_by_name, PrefectClient.create_flow_run_from_deployment

        def get_client() -> PrefectClient:
            client = real_get_client()
            self.opened.append(client)
            return client

        async def read_deployment_by_name(client: PrefectClient, name: str) -> Any:
            self.lookups += 1
            return await read(client, name)

        async def create_flow_run_from_deployment(client: PrefectClient, *args: Any, **kwargs: Any) -> Any:
            if self.fail_next:
                self.fail_next = False
                raise httpx.ConnectError("connection reset by the test")
            if self.missing_next:
                self.missing_next = False
                raise ObjectNotFound(http_exc=Exception("deployment deleted"))
            return await create(client, *args, **kwargs)

        monkeypatch.setattr(trigger_module, "get_client", get_client)
        monkeypatch.setattr(PrefectClient, "read_deployment_by_name", read_deployment_by_name)
        monkeypatch.setattr(PrefectClient, "create_flow_run_from_deployment", create_flow_run_from_deployment)


async def test_deliveries_share_one_client_and_one_lookup_until_a_transport_failure(
    store: GraphStore,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    hooks_file: Path,
    stand_in: StandInPrefect,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counted = Counted(monkeypatch)
    settings = with_hooks(settings_of(store, tmp_path, request), hooks_file, wait_s=5.0)
    with temporary_settings({PREFECT_API_URL: stand_in.url}), serve(create_app(settings)) as site:
        replies = await asyncio.gather(*(asyncio.to_thread(send, site, f"text {n}", str(uuid.uuid4())) for n in range(6)))
        assert [reply.status_code for reply in replies] == [202] * 6, [reply.text for reply in replies]
        assert (len(counted.opened), counted.lookups) == (1, 1)

        counted.fail_next = True
        broken = await asyncio.to_thread(send, site, "broken", str(uuid.uuid4()))
        assert broken.status_code == 503 and "unreachable" in broken.json()["error"]
        after = await asyncio.to_thread(send, site, "after", str(uuid.uuid4()))
        assert after.status_code == 202, after.text
        assert len(counted.opened) == 2  # the broken client was dropped; the deployment id is still cached
        assert counted.lookups == 1
    assert len({id(client) for client in counted.opened}) == 2


async def test_a_cached_deployment_id_expires_and_a_missing_one_is_looked_up_again(
    stand_in: StandInPrefect, monkeypatch: pytest.MonkeyPatch
) -> None:
    counted = Counted(monkeypatch)
    trigger = PrefectTrigger(wait_s=5.0)

    async def create() -> str:
        key = uuid.uuid4().hex
        return await trigger.create_flow_run(
            "run_graph/text-stats", {"input": {"text": "x"}}, idempotency_key=key, tags=["webhook"]
        )

    try:
        with temporary_settings({PREFECT_API_URL: stand_in.url}):
            monkeypatch.setattr(trigger_module, "DEPLOYMENT_TTL_S", 0.0)
            await create()
            await create()
            assert counted.lookups == 2  # ids cached with no time left: each call looks the deployment up
            monkeypatch.setattr(trigger_module, "DEPLOYMENT_TTL_S", 30.0)
            await create()
            await create()
            assert counted.lookups == 3  # within the expiry: one lookup
            counted.missing_next = True  # deleted and re-created: the cached id is refused, and looked up once more
            await create()
            assert counted.lookups == 4
            stand_in.deployed, counted.missing_next = False, True  # deleted for good: the second lookup fails too
            with pytest.raises(TriggerUnavailable, match="not on the Prefect server"):
                await create()
            assert counted.lookups == 5
    finally:
        stand_in.deployed = True
        await trigger.aclose()
    assert len(counted.opened) == 1


async def test_a_delivery_waits_only_for_its_own_copies_and_the_locks_go_with_them(sqlite_store: GraphStore) -> None:
    log = DeliveryLog(sqlite_store, namespace=NAMESPACE, retention_days=1)
    order: list[str] = []

    async def handle(name: str, *keys: str, hold: float) -> None:
        async with log.handling(*keys):
            order.append(f"{name} in")
            await asyncio.sleep(hold)
            order.append(f"{name} out")

    original = asyncio.create_task(handle("original", "hook:a", "signature-a", hold=0.2))
    await asyncio.sleep(0.01)
    other = asyncio.create_task(handle("other", "hook:b", "signature-b", hold=0))
    replay = asyncio.create_task(handle("replay", "hook:c", "signature-a", hold=0))  # a new id, the same signature
    await asyncio.gather(original, other, replay)
    assert order.index("other out") < order.index("original out") < order.index("replay in"), order
    assert not log._locks and not log._holders  # nothing kept per delivery once handled
