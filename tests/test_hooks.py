"""``POST /hooks/{name}`` over real HTTP, against a real Prefect server holding the repository's deployments.

Runs are created but not executed here (no worker), except in the end-to-end test, where ``mnemoflow serve``
runs as its own process and a worker answers the question from the test Neo4j with the scripted model.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from prefect.settings import PREFECT_API_URL, temporary_settings

from mnemoflow.flows.server.app import create_app
from mnemoflow.flows.server.hooks.deliveries import DeliveryLog
from mnemoflow.flows.server.hooks.providers import sign_generic, sign_github, sign_slack
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.settings import HooksSettings, Settings, StoreSettings
from tests.conftest import EMBEDDER
from tests.support.comorag_book import answer, build_book, script
from tests.support.openai_server import ScriptedOpenAIServer
from tests.support.prefect_fixtures import logs, run_env, wait_final
from tests.support.prefect_server import PrefectServer, Worker
from tests.support.web_server import free_port, serve, wait_until_serving

pytestmark = [pytest.mark.neo4j, pytest.mark.timeout(900)]

FIXTURES = Path(__file__).parent / "fixtures" / "webhooks"
SECRETS = {"TEST_GITHUB_SECRET": "gh-secret", "TEST_SLACK_SECRET": "slack-secret", "TEST_GENERIC_SECRET": "generic-secret"}
QUESTION = "Who was the guardian of Tobin Orsk after Hedda Vale married?"

HOOKS_YAML = """
hooks:
  - name: github-qa
    provider: github
    secret_env: TEST_GITHUB_SECRET
    deployment: run_graph/comorag-qa
    events: [issues]
    when: "action == 'opened'"
    parameters:
      input: "{book_id: 'the-salt-road', question: issue.title}"
  - name: github-stats
    provider: github
    secret_env: TEST_GITHUB_SECRET
    deployment: run_graph/text-stats
    parameters:
      input: "{text: issue.title}"
  - name: slack-qa
    provider: slack
    secret_env: TEST_SLACK_SECRET
    deployment: run_graph/comorag-qa
    events: [app_mention]
    parameters:
      input: "{book_id: 'the-salt-road', question: event.text}"
  - name: generic-stats
    provider: generic
    secret_env: TEST_GENERIC_SECRET
    deployment: run_graph/text-stats
    when: "length(text) > `0`"
    parameters:
      input: "{text: text}"
"""


def payload(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return loaded


def issue(title: str, action: str = "opened") -> bytes:
    body = payload("github_issues_opened.json")
    body["action"] = action
    body["issue"]["title"] = title
    return json.dumps(body).encode()


def github(body: bytes, *, event: str = "issues", delivery: str | None = None, secret: str = "gh-secret") -> dict[str, str]:
    return sign_github(secret.encode(), body, event, delivery or str(uuid.uuid4()))


@pytest.fixture
def hooks_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "hooks.yaml"
    path.write_text(HOOKS_YAML)
    return path


@pytest.fixture
def app_settings(hooks_file: Path, tmp_path: Path) -> Settings:
    return Settings(
        store=StoreSettings(backend="sqlite", sqlite_path=tmp_path / "memory.db"),
        hooks=HooksSettings(file=hooks_file, max_body_bytes=64 * 1024),
    )


@pytest.fixture
def receiver(deployed: Any, prefect_server: PrefectServer, app_settings: Settings) -> Iterator[httpx.Client]:
    """The app under uvicorn, its Prefect client (and the test's) on the test server; an HTTP client to it."""
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    with (
        temporary_settings({PREFECT_API_URL: prefect_server.api_url}),
        serve(create_app(app_settings)) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        yield client
        asyncio.run(delete_runs_tagged("webhook"))  # no worker runs them: a later test's worker must not find them


async def delete_runs_tagged(tag: str) -> None:
    async with get_client() as client:
        for run in await runs_tagged(tag):
            await client.delete_flow_run(run.id)


async def runs_tagged(tag: str) -> list[Any]:
    async with get_client() as client:
        return await client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag])))


async def remembered(settings: Settings, hook: str, delivery_id: str) -> Any:
    from mnemoflow.memory import store_from_settings

    store = store_from_settings(settings, EMBEDDER)
    await store.setup()
    try:
        return await DeliveryLog(store, namespace=settings.hooks.namespace, retention_days=1).find(hook, delivery_id)
    finally:
        await store.close()


# -- valid deliveries, redeliveries ------------------------------------------------------------------------


async def test_a_github_issue_creates_one_run_and_its_redelivery_none(receiver: httpx.Client, app_settings: Settings) -> None:
    body, delivery = issue("Who guarded Tobin?"), str(uuid.uuid4())
    first = receiver.post("/hooks/github-qa", content=body, headers=github(body, delivery=delivery))
    assert first.status_code == 202, first.text
    run_id = first.json()["flow_run_id"]

    async with get_client() as client:
        run = await client.read_flow_run(uuid.UUID(run_id))
    assert run.parameters["input"] == {"book_id": "the-salt-road", "question": "Who guarded Tobin?"}
    assert {"webhook", "hook:github-qa", "mnemoflow"} <= set(run.tags)

    again = receiver.post("/hooks/github-qa", content=body, headers=github(body, delivery=delivery))
    assert again.status_code == 200 and again.json()["flow_run_id"] == run_id and again.json()["duplicate"] is True
    assert [str(run.id) for run in await runs_tagged("hook:github-qa") if str(run.id) == run_id] == [run_id]
    past = await remembered(app_settings, "github-qa", delivery)
    assert past.outcome == "triggered" and past.flow_run_id == run_id


async def test_a_replayed_github_delivery_under_a_fresh_id_or_another_hook_starts_nothing(receiver: httpx.Client) -> None:
    body = issue("Replayed by someone who captured it")
    headers = github(body)
    first = receiver.post("/hooks/github-qa", content=body, headers=headers)
    assert first.status_code == 202, first.text
    run_id = first.json()["flow_run_id"]

    fresh_id = {**headers, "X-GitHub-Delivery": str(uuid.uuid4())}  # the delivery id is not signed
    replay = receiver.post("/hooks/github-qa", content=body, headers=fresh_id)
    assert replay.status_code == 200 and replay.json()["duplicate"] is True and replay.json()["flow_run_id"] == run_id
    assert "replay" in replay.json()["reason"]
    elsewhere = receiver.post("/hooks/github-stats", content=body, headers=fresh_id)  # same secret, hook name unsigned
    assert elsewhere.status_code == 200 and elsewhere.json()["flow_run_id"] == run_id
    runs = [run for run in await runs_tagged("webhook") if run.parameters.get("input", {}).get("question") == "Replayed by someone who captured it"]
    assert [str(run.id) for run in runs] == [run_id]
    assert await runs_tagged("hook:github-stats") == []


async def test_copies_of_one_delivery_sent_at_once_start_one_run(receiver: httpx.Client) -> None:
    body, delivery = issue("Sent twice at once"), str(uuid.uuid4())
    headers = github(body, delivery=delivery)
    replies = await asyncio.gather(
        *(asyncio.to_thread(receiver.post, "/hooks/github-qa", content=body, headers=headers) for _ in range(4))
    )
    assert sorted(reply.status_code for reply in replies) == [200, 200, 200, 202]
    assert len({reply.json()["flow_run_id"] for reply in replies}) == 1
    titles = [run for run in await runs_tagged("hook:github-qa") if run.parameters["input"]["question"] == "Sent twice at once"]
    assert len(titles) == 1


async def test_slack_challenge_and_app_mention(receiver: httpx.Client) -> None:
    challenge = json.dumps({"token": "x", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "type": "url_verification"}).encode()
    reply = receiver.post("/hooks/slack-qa", content=challenge, headers=sign_slack(b"slack-secret", challenge, int(time.time())))
    assert reply.status_code == 200 and reply.json() == {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}

    mention = payload("slack_app_mention.json")
    mention["event_id"] = f"Ev{uuid.uuid4().hex[:10].upper()}"
    body = json.dumps(mention).encode()
    reply = receiver.post("/hooks/slack-qa", content=body, headers=sign_slack(b"slack-secret", body, int(time.time())))
    assert reply.status_code == 202, reply.text
    async with get_client() as client:
        run = await client.read_flow_run(uuid.UUID(reply.json()["flow_run_id"]))
    assert run.parameters["input"]["question"] == mention["event"]["text"]

    stale = sign_slack(b"slack-secret", body, int(time.time()) - 6 * 60)
    reply = receiver.post("/hooks/slack-qa", content=body, headers=stale)
    assert reply.status_code == 401 and "stale" in reply.json()["error"].lower()


async def test_generic_delivery_and_its_idempotency_key(receiver: httpx.Client) -> None:
    body = json.dumps({"text": "One sentence here. And another one."}).encode()
    key = str(uuid.uuid4())
    headers = sign_generic(b"generic-secret", body, int(time.time()), delivery=key)
    first = receiver.post("/hooks/generic-stats", content=body, headers=headers)
    assert first.status_code == 202, first.text
    later = sign_generic(b"generic-secret", body, int(time.time()), delivery=key)
    again = receiver.post("/hooks/generic-stats", content=body, headers=later)
    assert again.status_code == 200 and again.json()["flow_run_id"] == first.json()["flow_run_id"]

    stale = sign_generic(b"generic-secret", body, int(time.time()) - 301, delivery=str(uuid.uuid4()))
    assert receiver.post("/hooks/generic-stats", content=body, headers=stale).status_code == 401


# -- refusals ----------------------------------------------------------------------------------------------


async def test_refusals_name_what_was_wrong_and_create_nothing(receiver: httpx.Client) -> None:
    before = len(await runs_tagged("webhook"))
    body = issue("Never run")

    def post(hook: str, content: bytes, headers: dict[str, str]) -> httpx.Response:
        return receiver.post(f"/hooks/{hook}", content=content, headers=headers)

    unknown = post("no-such-hook", body, github(body))
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown hook" and "github-qa" not in unknown.text
    tampered = post("github-qa", body.replace(b"Never run", b"Never ran"), github(body))
    assert tampered.status_code == 401
    assert post("github-qa", body, github(body, secret="wrong")).status_code == 401
    unsigned = {key: value for key, value in github(body).items() if key.lower() != "x-hub-signature-256"}
    missing = post("github-qa", body, unsigned)
    assert missing.status_code == 401 and "X-Hub-Signature-256" in missing.json()["error"]
    large = b'{"x": "' + b"a" * 70_000 + b'"}'
    assert post("github-qa", large, github(large)).status_code == 413
    as_text = {**github(body), "Content-Type": "text/plain"}
    assert post("github-qa", body, as_text).status_code == 415

    untitled = json.loads(body)
    del untitled["issue"]["title"]
    untitled_body = json.dumps(untitled).encode()
    unusable = post("github-qa", untitled_body, github(untitled_body))
    assert unusable.status_code == 422
    assert "input" in unusable.json()["error"] and "issue.title" in unusable.json()["error"]

    push = json.dumps(payload("github_push.json")).encode()
    ignored = post("github-qa", push, github(push, event="push"))
    assert ignored.status_code == 200 and ignored.json()["status"] == "ignored" and "push" in ignored.json()["reason"]
    closed = issue("Closed issue", action="closed")
    assert post("github-qa", closed, github(closed)).json()["status"] == "ignored"
    numeric = json.dumps({"text": 5}).encode()  # length() of a number: the `when` condition itself fails
    failing_when = post("generic-stats", numeric, sign_generic(b"generic-secret", numeric, int(time.time())))
    assert failing_when.status_code == 422 and "when" in failing_when.json()["error"]

    assert len(await runs_tagged("webhook")) == before


async def test_prefect_unreachable_answers_503_and_a_retry_succeeds(
    deployed: Any, prefect_server: PrefectServer, app_settings: Settings
) -> None:
    body, delivery = issue("Asked while Prefect was down"), str(uuid.uuid4())
    headers = github(body, delivery=delivery)
    with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{free_port()}/api"}), serve(create_app(app_settings)) as url:
        reply = httpx.post(f"{url}/hooks/github-qa", content=body, headers=headers, timeout=120)
    assert reply.status_code == 503, reply.text
    assert reply.headers["Retry-After"] == "30" and "unreachable" in reply.json()["error"]
    past = await remembered(app_settings, "github-qa", delivery)
    assert past.outcome == "unavailable" and past.attempts == 1

    with temporary_settings({PREFECT_API_URL: prefect_server.api_url}), serve(create_app(app_settings)) as url:
        retried = httpx.post(f"{url}/hooks/github-qa", content=body, headers=headers, timeout=60)
        assert retried.status_code == 202, retried.text
        past = await remembered(app_settings, "github-qa", delivery)
        assert past.outcome == "triggered" and past.attempts == 2 and past.flow_run_id == retried.json()["flow_run_id"]
        await delete_runs_tagged("webhook")


# -- fuzzing: never a 500, never a run without a valid signature -------------------------------------------

HEADER_NAMES = st.sampled_from(
    ["Content-Type", "X-Hub-Signature-256", "X-GitHub-Event", "X-GitHub-Delivery", "X-Slack-Signature",
     "X-Slack-Request-Timestamp", "X-Mnemoflow-Signature", "X-Mnemoflow-Timestamp", "X-Mnemoflow-Delivery"]
)
HEADER_VALUES = st.one_of(
    st.sampled_from(["application/json", "application/x-www-form-urlencoded", "sha256=00", "v0=ab", "0", "-1", "99999999999999999999", "issues"]),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=80).map(str.strip),  # HTTP trims values
)
BODIES = st.one_of(
    st.binary(max_size=2048),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20), lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)).map(
        lambda value: json.dumps(value).encode()
    ),
)


def test_random_bodies_and_headers_never_answer_500_nor_start_a_run(receiver: httpx.Client) -> None:
    before = len(asyncio.run(runs_tagged("webhook")))

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(hook=st.sampled_from(["github-qa", "github-stats", "slack-qa", "generic-stats", "nope"]), body=BODIES, headers=st.dictionaries(HEADER_NAMES, HEADER_VALUES, max_size=6))
    def check(hook: str, body: bytes, headers: dict[str, str]) -> None:
        reply = receiver.post(f"/hooks/{hook}", content=body, headers=headers)
        assert reply.status_code in {401, 404, 413, 415, 422}, (reply.status_code, reply.text)

    check()
    assert len(asyncio.run(runs_tagged("webhook"))) == before


# -- end to end: `mnemoflow serve`, a signed GitHub delivery, a ComoRAG QA run on a worker -----------------


@pytest.fixture
async def served(
    prefect_server: PrefectServer, hooks_file: Path, empty_neo4j: str, model: ScriptedOpenAIServer, namespace: str, tmp_path: Path
) -> AsyncIterator[str]:
    port = free_port()
    env = {**os.environ, **run_env(empty_neo4j, model, namespace), **prefect_server.env, "MNEMOFLOW_HOOKS_FILE": str(hooks_file)}
    env["MNEMOFLOW_HOOKS_NAMESPACE"] = f"{namespace}-hooks"
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("mnemoflow")), "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await asyncio.to_thread(wait_until_serving, url, process, (tmp_path / "serve.log").read_text)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@pytest.mark.subprocess
async def test_a_signed_github_delivery_runs_comorag_qa_to_completion(
    deployed: Any,
    prefect_api: PrefectServer,
    served: str,
    workers: Callable[..., Worker],
    model: ScriptedOpenAIServer,
    neo4j: GraphStore,
    empty_neo4j: str,
    namespace: str,
) -> None:
    await build_book(neo4j, EMBEDDER, namespace, book_id="the-salt-road")  # the book the hook asks about
    script(model, [answer("*"), answer("Corvin Ashe")], [{"probes": ["Who looked after the Orsk children?"]}])
    worker = workers("hooks", env=run_env(empty_neo4j, model, namespace))
    body = issue(QUESTION)
    reply = httpx.post(f"{served}/hooks/github-qa", content=body, headers=github(body), timeout=60)
    assert reply.status_code == 202, reply.text

    finished = await wait_final(uuid.UUID(reply.json()["flow_run_id"]), [worker])
    assert finished.state is not None and finished.state.is_completed(), logs([worker])
    [question] = [hit.node for hit in await neo4j.keyword_search(namespace, "guardian Tobin", kinds=["Question"])]
    assert question.properties["final_answer"] == "Corvin Ashe"
    deliveries = await neo4j.list_nodes(f"{namespace}-hooks", kind="WebhookDelivery")
    assert [record.properties["outcome"] for record in deliveries] == ["triggered"]


@pytest.mark.subprocess
@pytest.mark.slow
def test_serving_beyond_loopback_needs_a_token(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MNEMOFLOW_")}
    env["MNEMOFLOW_STORE_SQLITE_PATH"] = str(tmp_path / "memory.db")
    done = subprocess.run(
        [str(Path(sys.executable).with_name("mnemoflow")), "serve", "--host", "0.0.0.0", "--port", str(free_port())],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2 and "MNEMOFLOW_UI_TOKEN" in done.stderr
