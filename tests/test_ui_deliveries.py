"""The webhook deliveries page and ``/api/deliveries`` over real HTTP.

Deliveries are signed and sent through the real app (``POST /hooks/<name>``, as tests/test_hooks.py does); the
Prefect API they trigger is a stand-in answering the two calls the receiver makes (read the deployment, create its
flow run) with Prefect's own response models, so these tests need no Prefect server. The listing itself is read
through the ``GraphStore`` protocol, so it is also checked on Neo4j.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.responses import DeploymentResponse
from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mnemoflow.flows.server.app import create_app
from mnemoflow.flows.server.hooks.deliveries import DeliveryLog
from mnemoflow.flows.server.hooks.providers import sign_generic, sign_github
from mnemoflow.flows.server.state import ServerState
from mnemoflow.flows.server.ui import deliveries
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import NodeRecord, stable_id
from mnemoflow.settings import HooksSettings, Settings, StoreSettings
from tests.conftest import EMBEDDER
from tests.support.web_server import serve
from tests.test_ui import event, run_async, write_run

GENERIC_SECRET = "generic-secret-for-the-deliveries"
GITHUB_SECRET = "github-secret-for-the-deliveries"
HOOKS_YAML = """
hooks:
  - name: stats
    provider: generic
    secret_env: TEST_DELIVERIES_GENERIC_SECRET
    deployment: run_graph/text-stats
    parameters:
      input: "{text: text}"
  - name: issues
    provider: github
    secret_env: TEST_DELIVERIES_GITHUB_SECRET
    deployment: run_graph/comorag-qa
    events: [issues]
    parameters:
      input: "{question: issue.title}"
"""
HOSTILE_EVENT = "<img src=x onerror=alert(1)>"


@dataclass
class StandInPrefect:
    """The Prefect API as the receiver uses it: every created flow run is kept, one per idempotency key; while
    ``deployed`` is false no deployment is found (the receiver answers 503 and keeps the delivery for a retry)."""

    url: str = ""
    deployed: bool = True
    flow_runs: dict[str, FlowRun] = field(default_factory=dict)

    def app(self) -> Starlette:
        flow_id = uuid.uuid4()

        async def deployment(request: Request) -> JSONResponse:
            name = request.path_params["deployment"]
            if not self.deployed:
                return JSONResponse({"detail": "Deployment not found"}, status_code=404)
            found = DeploymentResponse(id=uuid.uuid5(uuid.NAMESPACE_URL, name), name=name, flow_id=flow_id)
            return JSONResponse(found.model_dump(mode="json"))

        async def create_flow_run(request: Request) -> JSONResponse:
            body = await request.json()
            key = body.get("idempotency_key") or uuid.uuid4().hex
            if key not in self.flow_runs:
                self.flow_runs[key] = FlowRun(
                    id=uuid.uuid4(),
                    name=f"stand-in-{len(self.flow_runs)}",
                    flow_id=flow_id,
                    deployment_id=uuid.UUID(request.path_params["id"]),
                    parameters=body.get("parameters", {}),
                    tags=body.get("tags", []),
                )
            return JSONResponse(self.flow_runs[key].model_dump(mode="json"), status_code=201)

        return Starlette(
            routes=[
                Route("/api/deployments/name/{flow}/{deployment}", deployment),
                Route("/api/deployments/{id}/create_flow_run", create_flow_run, methods=["POST"]),
            ]
        )


@pytest.fixture(scope="module")
def prefect() -> Iterator[StandInPrefect]:
    stand_in = StandInPrefect()
    with serve(stand_in.app()) as url:
        stand_in.url = url
        with temporary_settings({PREFECT_API_URL: f"{url}/api"}, restore_defaults={PREFECT_UI_URL}):
            yield stand_in


@pytest.fixture
def hooks_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TEST_DELIVERIES_GENERIC_SECRET", GENERIC_SECRET)
    monkeypatch.setenv("TEST_DELIVERIES_GITHUB_SECRET", GITHUB_SECRET)
    path = tmp_path / "hooks.yaml"
    path.write_text(HOOKS_YAML)
    return path


def app_settings(tmp_path: Path, hooks_file: Path | None) -> Settings:
    hooks = HooksSettings(file=hooks_file, max_body_bytes=64 * 1024, retention_days=7)
    return Settings(store=StoreSettings(backend="sqlite", sqlite_path=tmp_path / "memory.db"), hooks=hooks)


@pytest.fixture
def site(tmp_path: Path, hooks_env: Path, prefect: StandInPrefect) -> Iterator[str]:
    with serve(create_app(app_settings(tmp_path, hooks_env))) as url:
        yield url


def send_generic(site: str, text: str, *, delivery: str | None = None) -> httpx.Response:
    body = json.dumps({"text": text}).encode()
    headers = sign_generic(GENERIC_SECRET.encode(), body, int(time.time()), delivery=delivery)
    return httpx.post(f"{site}/hooks/stats", content=body, headers=headers, timeout=30)


def send_github(site: str, event_name: str, title: str) -> httpx.Response:
    body = json.dumps({"action": "opened", "issue": {"title": title}}).encode()
    headers = sign_github(GITHUB_SECRET.encode(), body, event_name, f"gh-{uuid.uuid4()}")
    return httpx.post(f"{site}/hooks/issues", content=body, headers=headers, timeout=30)


def listing(site: str, **params: Any) -> dict[str, Any]:
    reply = httpx.get(f"{site}/api/deliveries", params=params, timeout=30)
    assert reply.status_code == 200, reply.text
    found: dict[str, Any] = reply.json()
    return found


def page(site: str, **params: Any) -> str:
    reply = httpx.get(f"{site}/deliveries", params=params, timeout=30)
    assert reply.status_code == 200, reply.text
    return reply.text


def rows(html: str) -> list[str]:
    """The table's rows, in order (the ``<tr class="delivery"`` openings, one per delivery)."""
    return [line.strip() for line in html.splitlines() if line.strip().startswith('<tr class="delivery"')]


# -- the listing after signed deliveries -------------------------------------------------------------------


def test_signed_deliveries_are_listed_newest_first_with_dates_and_their_flow_runs(site: str, prefect: StandInPrefect) -> None:
    triggered = send_generic(site, "Memory that lasts.", delivery="delivery-one")
    assert triggered.status_code == 202, triggered.text
    flow_run_id = triggered.json()["flow_run_id"]
    ignored = send_github(site, "pull_request", "Not an issue")
    assert ignored.status_code == 200 and ignored.json()["status"] == "ignored", ignored.text

    found = listing(site)
    assert [(item["hook"], item["outcome"]) for item in found["deliveries"]] == [("issues", "ignored"), ("stats", "triggered")]
    newest, first = found["deliveries"]
    assert first["delivery_id"] == "delivery-one" and first["attempts"] == 1 and first["deployment"] == "run_graph/text-stats"
    assert first["flow_run"] == {"id": flow_run_id, "url": f"{prefect.url}/runs/flow-run/{flow_run_id}"}
    assert first["run"] is None  # no run record names that flow run yet
    assert newest["event"] == "pull_request" and newest["flow_run"] is None and "not in events [issues]" in newest["reason"]
    assert first["received_at"] <= first["updated_at"] <= newest["received_at"]
    assert first["expires_at"] - first["received_at"] == pytest.approx(7 * 86_400, abs=5)
    assert found["hooks"] == ["issues", "stats"] and found["outcomes"] == ["triggered", "ignored", "rejected", "unavailable", "pending"]
    assert found["namespace"] == "webhooks" and found["partial"] is False

    html = page(site)
    assert [row.split('data-hook="')[1].split('"')[0] for row in rows(html)] == ["issues", "stats"]
    for epoch in (first["received_at"], first["updated_at"], first["expires_at"]):  # dates, never raw epoch seconds
        moment = datetime.fromtimestamp(epoch, UTC)
        assert f'<time datetime="{moment:%Y-%m-%dT%H:%M:%SZ}">{moment:%Y-%m-%d}<br>{moment:%H:%M:%S} UTC</time>' in html
    assert str(first["expires_at"]) not in html and str(int(first["expires_at"])) not in html
    assert f'<a class="prefect-link" href="{prefect.url}/runs/flow-run/{flow_run_id}" rel="noopener noreferrer"' in html
    assert '<span class="status status-completed">triggered</span>' in html and ">ignored</span>" in html


def test_a_retried_delivery_counts_its_attempts_and_keeps_its_first_date(site: str, prefect: StandInPrefect) -> None:
    prefect.deployed = False
    try:
        unavailable = send_generic(site, "Try again later.", delivery="retried")
    finally:
        prefect.deployed = True
    assert unavailable.status_code == 503, unavailable.text
    [item] = listing(site)["deliveries"]
    assert item["outcome"] == "unavailable" and "is not on the Prefect server" in item["reason"] and item["flow_run"] is None
    assert '<span class="status status-stalled">unavailable</span>' in page(site)
    again = send_generic(site, "Try again later.", delivery="retried")
    assert again.status_code == 202, again.text
    [item] = listing(site)["deliveries"]
    assert item["outcome"] == "triggered" and item["attempts"] == 2 and item["reason"] is None
    assert item["received_at"] < item["updated_at"]


# -- links to the runs the deliveries started ----------------------------------------------------------------


def test_a_delivery_links_to_the_run_its_flow_run_started(site: str, tmp_path: Path) -> None:
    by_thread = send_generic(site, "Started by run_graph.").json()["flow_run_id"]
    by_annotation = send_generic(site, "Named by the run's own flow run.").json()["flow_run_id"]
    unmatched = send_generic(site, "Not picked up by a worker yet.").json()["flow_run_id"]
    store_path = tmp_path / "memory.db"
    # run_graph names the thread after its flow run (the one the delivery created) ...
    write_run(store_path, "books", "run-thread", "completed", [event("split")], thread_id=by_thread)
    # ... while a run's annotations name the flow run it ran in
    write_run(store_path, "other", "run-note", "failed", [event("split")], annotations={"prefect_flow_run_id": by_annotation})

    runs = {item["flow_run"]["id"]: item["run"] for item in listing(site)["deliveries"]}
    assert runs[unmatched] is None
    assert runs[by_thread] is not None and runs[by_thread]["namespace"] == "books" and runs[by_thread]["run_id"] == "run-thread"
    assert runs[by_annotation] is not None and runs[by_annotation]["status"] == "failed"
    html = page(site)
    assert '<a class="run-link" href="/runs/run-thread?namespace=books">run <code>run-thread</code></a>' in html
    assert '<a class="run-link" href="/runs/run-note?namespace=other">' in html
    assert html.count('class="run-link"') == 2


def test_without_prefects_address_the_flow_run_is_named_not_linked(tmp_path: Path, hooks_env: Path) -> None:
    async def remember() -> None:
        from mnemoflow.memory import SQLiteStore

        store = SQLiteStore(tmp_path / "memory.db", embedding_model=EMBEDDER.model, embedding_dimension=EMBEDDER.dimension)
        await store.setup()
        try:
            log = DeliveryLog(store, namespace="webhooks", retention_days=7)
            await log.remember(
                "stats",
                "d-1",
                event=None,
                outcome="triggered",
                deployment="run_graph/text-stats",
                attempts=1,
                signature=None,
                flow_run_id="0b7c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3",
            )
        finally:
            await store.close()

    run_async(remember)
    with (
        temporary_settings(restore_defaults={PREFECT_API_URL, PREFECT_UI_URL}),
        serve(create_app(app_settings(tmp_path, hooks_env))) as url,
    ):
        [item] = listing(url)["deliveries"]
        html = page(url)
    assert item["flow_run"] == {"id": "0b7c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3", "url": ""}
    assert 'flow run <code class="prefect-id" title="Prefect flow run">0b7c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3</code>' in html
    assert "prefect-link" not in html


def test_a_prefect_address_that_is_not_a_web_address_gives_no_link() -> None:
    with temporary_settings({PREFECT_UI_URL: "javascript:alert(1)//"}):
        assert deliveries.prefect_flow_run_url("abc") == ""
    with temporary_settings({PREFECT_UI_URL: "https://prefect.example"}):
        assert deliveries.prefect_flow_run_url("a/b?c") == "https://prefect.example/runs/flow-run/a%2Fb%3Fc"


# -- filters -------------------------------------------------------------------------------------------------


def test_filters_by_hook_and_outcome(site: str) -> None:
    assert send_generic(site, "One.").status_code == 202
    assert send_generic(site, "Two.").status_code == 202
    assert send_github(site, "issues", "Triggered by an issue").status_code == 202
    assert send_github(site, "push", "Ignored").status_code == 200

    assert [item["hook"] for item in listing(site, hook="stats")["deliveries"]] == ["stats", "stats"]
    assert [(item["hook"], item["outcome"]) for item in listing(site, outcome="ignored")["deliveries"]] == [("issues", "ignored")]
    assert [item["event"] for item in listing(site, hook="issues", outcome="triggered")["deliveries"]] == ["issues"]
    assert listing(site, hook="nope")["deliveries"] == [] and "nope" in listing(site, hook="nope")["hooks"]
    assert len(listing(site, limit=3)["deliveries"]) == 3

    html = page(site, hook="issues", outcome="ignored")
    assert [row.split('data-outcome="')[1].split('"')[0] for row in rows(html)] == ["ignored"]
    assert (
        '<option value="issues" selected>issues</option>' in html and '<option value="ignored" selected>ignored</option>' in html
    )
    assert '<a href="/deliveries">Clear filters</a>' in html
    html = page(site, outcome="rejected")
    assert 'id="deliveries-empty"' in html and "No deliveries match these filters." in html and rows(html) == []
    assert httpx.get(f"{site}/api/deliveries", params={"limit": 501}, timeout=30).status_code == 422


def test_a_filter_reads_a_bounded_number_of_deliveries_and_says_so(site: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert send_github(site, "push", "The oldest, the only ignored one").status_code == 200
    for index in range(4):
        assert send_generic(site, f"Newer {index}.").status_code == 202
    monkeypatch.setattr(deliveries, "DELIVERY_SCAN_LIMIT", 3)
    monkeypatch.setattr(deliveries, "DELIVERY_SCAN_PAGE", 2)
    found = listing(site, outcome="ignored")
    assert found["deliveries"] == [] and found["partial"] is True and found["scan_limit"] == 3
    assert "Only the 3 most recent deliveries were searched" in page(site, outcome="ignored")
    assert listing(site, hook="stats", limit=2)["partial"] is False  # enough found before the bound


# -- stored text is shown as text ------------------------------------------------------------------------------


def test_hostile_values_in_a_delivery_are_shown_as_text(site: str, tmp_path: Path) -> None:
    assert send_github(site, HOSTILE_EVENT, "Hostile").status_code == 200  # ignored: not in events [issues]

    async def remember() -> None:
        from mnemoflow.memory import SQLiteStore

        store = SQLiteStore(tmp_path / "memory.db", embedding_model=EMBEDDER.model, embedding_dimension=EMBEDDER.dimension)
        await store.setup()
        try:
            await DeliveryLog(store, namespace="webhooks", retention_days=7).remember(
                '"><script>alert(1)</script>',
                "</td><b>id</b>",
                event="<i>event</i>",
                outcome="rejected",
                deployment="<u>flow</u>/d",
                attempts=1,
                signature=None,
                reason="</td></tr><script>alert(2)</script>",
                flow_run_id='javascript:alert(3)"',
            )
        finally:
            await store.close()

    run_async(remember)
    html = page(site)
    for markup in ("<script>", "<img", "<i>", "<b>", "<u>", 'href="javascript'):
        assert markup not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html  # the event, and again in the reason
    assert "event &#39;&lt;img src=x onerror=alert(1)&gt;&#39; is not in events [issues]" in html
    assert "&lt;/td&gt;&lt;/tr&gt;&lt;script&gt;alert(2)&lt;/script&gt;" in html
    assert '<option value="&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;">' in html
    assert 'data-hook="&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in html
    assert len(rows(html)) == 2
    hostile = listing(site, hook='"><script>alert(1)</script>')["deliveries"]
    assert [item["reason"] for item in hostile] == ["</td></tr><script>alert(2)</script>"]


# -- the empty page --------------------------------------------------------------------------------------------


def test_the_empty_page_explains_how_deliveries_arrive(site: str, tmp_path: Path) -> None:
    html = page(site)
    assert 'id="deliveries-empty"' in html and "No deliveries yet." in html and "/hooks/&lt;name&gt;" in html
    assert "Hooks served: <code>issues</code>, <code>stats</code>." in html
    assert listing(site)["deliveries"] == [] and listing(site)["served_hooks"] == ["issues", "stats"]
    with serve(create_app(app_settings(tmp_path / "bare", None))) as bare:
        assert "This server serves no hooks" in page(bare) and listing(bare)["hooks"] == []


def test_the_nav_marks_the_deliveries_page(site: str) -> None:
    assert '<a href="/deliveries" aria-current="page">Deliveries</a>' in page(site)


# -- both backends, through the GraphStore protocol -------------------------------------------------------------


async def test_the_listing_reads_through_the_store_on_either_backend(store: GraphStore) -> None:
    log = DeliveryLog(store, namespace="webhooks", retention_days=1)
    state = ServerState(settings=Settings(), store=store, embedder=EMBEDDER, deliveries=log)
    await log.remember(
        "a", "1", event="issues", outcome="triggered", deployment="f/d", attempts=1, signature="s1", flow_run_id="fr-1"
    )
    await log.remember("b", "2", event=None, outcome="rejected", deployment="f/d", attempts=1, signature="s2", reason="bad")
    await log.remember("a", "3", event="push", outcome="ignored", deployment="f/d", attempts=1, signature="s3", reason="filtered")
    run = NodeRecord(
        id=stable_id("books", "Run", "r-1"),
        namespace="books",
        kind="Run",
        text="text-stats completed",
        properties={
            "graph": "text-stats",
            "run_id": "r-1",
            "thread_id": "fr-1",
            "status": "completed",
            "started_at": time.time(),
        },
    )
    await store.upsert_nodes([run])

    found = await deliveries.delivery_listing(state)
    assert [(item["hook"], item["delivery_id"]) for item in found["deliveries"]] == [("a", "3"), ("b", "2"), ("a", "1")]
    assert all(
        isinstance(item[key], float) for item in found["deliveries"] for key in ("received_at", "updated_at", "expires_at")
    )
    [started] = [item for item in found["deliveries"] if item["flow_run"]]
    assert started["run"] is not None and (started["run"]["namespace"], started["run"]["run_id"]) == ("books", "r-1")
    assert [item["delivery_id"] for item in (await deliveries.delivery_listing(state, hook="a"))["deliveries"]] == ["3", "1"]
    assert [item["delivery_id"] for item in (await deliveries.delivery_listing(state, outcome="rejected"))["deliveries"]] == ["2"]
    assert [item.delivery_id for item in await log.recent(limit=1, offset=1)] == ["2"]
