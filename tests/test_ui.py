"""The web UI over real HTTP: pages, JSON APIs, paging, bad input and the token.

The app runs under uvicorn on a SQLite file seeded by a real run of the ``text-stats`` library graph, plus a
hand-made hub record with more neighbours than one page holds. The tests are plain sync functions (seeding runs
its coroutine in a thread) so that ``tests/test_ui_browser.py`` can share the seeding with Playwright's sync API.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import httpx
import pytest
from pydantic import SecretStr

from mnemoflow.flows.server.app import create_app
from mnemoflow.flows.server.auth import SESSION_COOKIE
from mnemoflow.flows.server.ui import pages
from mnemoflow.flows.server.ui.routes import safe_next
from mnemoflow.graphs import library_graphs, load_graph, run_graph
from mnemoflow.graphs.runner import STALLED_AFTER_S
from mnemoflow.memory import SQLiteStore
from mnemoflow.memory.records import NodeRecord, RelationshipRecord, stable_id
from mnemoflow.settings import Settings, StoreSettings, UISettings
from tests.conftest import EMBEDDER, offline_llm
from tests.support.web_server import serve

T = TypeVar("T")

NAMESPACE = "ui-test"
TEXT = "The salt road ran north. Caravans carried salt and cloth. The river flooded in spring. Traders waited at the ford."
HUB_NEIGHBOURS = 65


def run_async(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion in a thread of its own, outside any event loop of the test session."""
    result: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        async def main() -> T:
            return await make()

        try:
            result.append(asyncio.run(main()))
        except BaseException as exc:  # handed to the caller
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


def settings_at(path: Path, **overrides: Any) -> Settings:
    return Settings(store=StoreSettings(backend="sqlite", sqlite_path=path), **overrides)


def open_store(path: Path) -> SQLiteStore:
    return SQLiteStore(path, embedding_model=EMBEDDER.model, embedding_dimension=EMBEDDER.dimension)


@dataclass(frozen=True)
class Seeded:
    """What ``seed`` wrote."""

    path: Path
    run_id: str
    hub_id: str
    spoke_ids: list[str]
    leaf_ids: list[str]


def hub_records(namespace: str) -> tuple[list[NodeRecord], list[RelationshipRecord]]:
    """A Document with ``HUB_NEIGHBOURS`` chunks PART_OF it; each chunk has one leaf of its own (so a click adds nodes)."""
    hub = NodeRecord(id="hub", namespace=namespace, kind="Document", text="The ledger of the salt road", properties={"title": "Ledger"})
    spokes = [
        NodeRecord(id=f"entry-{index:03d}", namespace=namespace, kind="Chunk", text=f"Ledger entry {index}: {index * 3} sacks of salt",
                   properties={"position": index, "note": "<b>not markup</b>"})
        for index in range(HUB_NEIGHBOURS)
    ]
    leaves = [
        NodeRecord(id=f"receipt-{index:03d}", namespace=namespace, kind="Document", text=f"Receipt for entry {index}")
        for index in range(HUB_NEIGHBOURS)
    ]
    relationships = [RelationshipRecord(namespace=namespace, type="PART_OF", source_id=spoke.id, target_id=hub.id) for spoke in spokes]
    relationships += [
        RelationshipRecord(namespace=namespace, type="PART_OF", source_id=leaf.id, target_id=spoke.id)
        for spoke, leaf in zip(spokes, leaves, strict=True)
    ]
    return [hub, *spokes, *leaves], relationships


def seed(path: Path) -> Seeded:
    """A store with a completed text-stats run and the hub records, in ``NAMESPACE``."""

    async def write() -> str:
        store = open_store(path)
        await store.setup()
        try:
            result = await run_graph(
                load_graph("text-stats"), {"text": TEXT}, store=store, embedder=EMBEDDER, llm=offline_llm(),
                settings=settings_at(path), checkpointer=None, namespace=NAMESPACE, thread_id="ui-thread",
            )
            nodes, relationships = hub_records(NAMESPACE)
            await store.upsert_nodes(nodes)
            await store.upsert_relationships(relationships)
            return result.run_id
        finally:
            await store.close()

    run_id = run_async(write)
    return Seeded(
        path=path,
        run_id=run_id,
        hub_id="hub",
        spoke_ids=[f"entry-{index:03d}" for index in range(HUB_NEIGHBOURS)],
        leaf_ids=[f"receipt-{index:03d}" for index in range(HUB_NEIGHBOURS)],
    )


def write_run(
    path: Path,
    namespace: str,
    run_id: str,
    status: str,
    events: list[dict[str, Any]],
    *,
    recorded_at: float | None = None,
    **properties: Any,
) -> None:
    """Write (or update) a Run record the way the runner does, for a run of text-stats; ``properties`` are added."""
    record = NodeRecord(
        id=stable_id(namespace, "Run", run_id),
        namespace=namespace,
        kind="Run",
        text=f"text-stats {status}",
        properties={
            "graph": "text-stats", "graph_version": 1, "run_id": run_id, "thread_id": run_id, "status": status,
            "resumed": False, "duration_s": 0.5 * len(events), "started_at": 1_760_000_000.0,
            "steps": sum(event["event"] == "end" for event in events), "events": events,
            "recorded_at": time.time() if recorded_at is None else recorded_at,
            "llm": {"calls": len(events), "tokens": 10 * len(events), "prompt_tokens": 8 * len(events), "completion_tokens": 2 * len(events)},
            **properties,
        },
    )

    async def write() -> None:
        store = open_store(path)
        await store.setup()
        try:
            await store.upsert_nodes([record])
        finally:
            await store.close()

    run_async(write)


def event(node: str, kind: str = "end", error: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"node": node, "event": kind, "started_at": 1_760_000_000.0, "duration_s": 0.25}
    if error:
        data["error"] = error
    return data


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    return seed(tmp_path_factory.mktemp("ui") / "memory.db")


@pytest.fixture(scope="module")
def site(seeded: Seeded) -> Iterator[str]:
    with serve(create_app(settings_at(seeded.path))) as url:
        yield url


@pytest.fixture
def client(site: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=site, timeout=30) as http:
        yield http


# -- pages -----------------------------------------------------------------------------------------------


def test_home_redirects_to_graphs(client: httpx.Client) -> None:
    response = client.get("/")
    assert response.status_code == 303
    assert response.headers["location"] == "/graphs"


def test_graphs_page_lists_every_library_graph_with_its_description(client: httpx.Client) -> None:
    response = client.get("/graphs")
    assert response.status_code == 200
    for path in library_graphs():
        assert f'href="/graphs/{path.stem}"' in response.text
    assert "Split a text into sentences" in response.text
    assert 'href="/graphs" aria-current="page"' in response.text
    assert "/static/app.css" in response.text


def test_graph_page_has_the_diagram_and_each_node_with_reads_writes_and_config(client: httpx.Client) -> None:
    response = client.get("/graphs/text-stats")
    assert response.status_code == 200
    html = response.text
    assert 'id="diagram-source"' in html and "flowchart TD" in html
    assert '<script type="module" src="/static/graph.js"></script>' in html
    for node in ("split", "count", "total", "note", "remember"):
        assert f'id="node-{node}"' in html
    assert "text.split_sentences" in html
    assert '<code class="field">sentences</code>' in html
    assert "min_length" in html and "text.until_rounds" in html


def test_graph_api(client: httpx.Client) -> None:
    listing = client.get("/api/graphs").json()
    assert {graph["name"] for graph in listing} == {path.stem for path in library_graphs()}
    assert all(isinstance(graph["description"], str) for graph in listing)
    graph = client.get("/api/graphs/text-stats").json()
    assert graph["mermaid"].startswith("flowchart TD")
    nodes = {node["name"]: node for node in graph["nodes"]}
    assert nodes["split"]["reads"] == ["text"] and nodes["split"]["writes"] == ["sentences"]
    assert nodes["split"]["config"] == {"min_length": 2}
    assert [field["name"] for field in nodes["split"]["config_fields"]] == ["min_length"]
    assert nodes["remember"]["timeout"] == 60 and nodes["remember"]["retry"]["max_attempts"] == 3
    assert graph["routes"][0]["outcomes"] == {"again": "note", "done": "remember"}
    assert graph["fanouts"] == [{"from": "split", "over": "sentences", "item": "sentence", "to": "count"}]


def test_every_library_graph_page_serves(client: httpx.Client) -> None:
    for path in library_graphs():
        assert client.get(f"/graphs/{path.stem}").status_code == 200, path.stem
        assert client.get(f"/api/graphs/{path.stem}").status_code == 200, path.stem


def test_runs_page_and_api_list_the_run(client: httpx.Client, seeded: Seeded) -> None:
    runs = client.get("/api/runs").json()
    [run] = [run for run in runs if run["run_id"] == seeded.run_id]
    assert run["status"] == "completed" and run["graph"] == "text-stats" and run["namespace"] == NAMESPACE
    assert run["duration_s"] > 0 and run["steps"] > 0 and "llm_calls" in run and "tokens" in run
    assert client.get("/api/runs", params={"namespace": NAMESPACE}).json()[0]["namespace"] == NAMESPACE
    page = client.get("/runs")
    assert page.status_code == 200
    assert f"/runs/{seeded.run_id}?namespace={NAMESPACE}" in page.text
    assert "status-completed" in page.text


def test_run_api_has_steps_usage_and_visited_nodes(client: httpx.Client, seeded: Seeded) -> None:
    run = client.get(f"/api/runs/{seeded.run_id}", params={"namespace": NAMESPACE}).json()
    assert run["status"] == "completed" and run["live"] is False
    assert set(run["visited"]) >= {"split", "count", "total", "note", "remember"}
    assert all({"node", "event", "duration_s"} <= set(event) for event in run["events"])
    assert "class " in run["mermaid"] and " visited" in run["mermaid"]
    assert "calls" in run["llm"]
    page = client.get(f"/runs/{seeded.run_id}", params={"namespace": NAMESPACE})
    assert page.status_code == 200
    assert 'id="steps-body"' in page.text and "remember" in page.text
    assert 'data-live="false"' in page.text


def test_failed_run_shows_its_error(client: httpx.Client, seeded: Seeded) -> None:
    write_run(seeded.path, NAMESPACE, "failed-run", "failed", [event("split"), event("count", "error", "boom <script>")])
    page = client.get("/runs/failed-run", params={"namespace": NAMESPACE})
    assert page.status_code == 200
    assert "boom &lt;script&gt;" in page.text and "status-failed" in page.text
    run = client.get("/api/runs/failed-run", params={"namespace": NAMESPACE}).json()
    assert run["visited"] == ["split"] and run["events"][1]["error"] == "boom <script>"


def test_a_run_that_failed_before_its_first_step_shows_its_error_and_its_prefect_flow_run(client: httpx.Client, seeded: Seeded) -> None:
    flow_run = "0b7c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3"
    write_run(
        seeded.path, NAMESPACE, "refused-run", "failed", [],
        error="book 'salt' is not indexed in namespace 'ui-test' <img src=x onerror=alert(1)>",
        annotations={"prefect_flow_run_id": flow_run, "prefect_flow_run_url": f"http://127.0.0.1:4200/runs/flow-run/{flow_run}?a=1&b=\"2\""},
    )
    page = client.get("/runs/refused-run", params={"namespace": NAMESPACE})
    assert page.status_code == 200
    html = page.text
    assert "status-failed" in html and "No steps: the run failed before its first one." in html
    assert 'id="run-error" hidden' not in html
    assert "book &#39;salt&#39; is not indexed in namespace &#39;ui-test&#39; &lt;img src=x onerror=alert(1)&gt;" in html
    assert "<img" not in html
    assert f'<a href="http://127.0.0.1:4200/runs/flow-run/{flow_run}?a=1&amp;b=&#34;2&#34;" rel="noopener noreferrer">' in html
    assert f"flow run <code>{flow_run}</code>" in html
    run = client.get("/api/runs/refused-run", params={"namespace": NAMESPACE}).json()
    assert run["error"].startswith("book 'salt' is not indexed") and run["prefect"]["id"] == flow_run


def test_a_prefect_link_that_is_not_a_web_address_is_shown_as_text(client: httpx.Client, seeded: Seeded) -> None:
    write_run(
        seeded.path, NAMESPACE, "odd-link-run", "completed", [event("split")],
        annotations={"prefect_flow_run_id": "<b>run</b>", "prefect_flow_run_url": "javascript:alert(1)"},
    )
    html = client.get("/runs/odd-link-run", params={"namespace": NAMESPACE}).text
    assert "javascript:" not in html and "<b>run</b>" not in html
    assert '<dd id="run-prefect">flow run <code>&lt;b&gt;run&lt;/b&gt;</code></dd>' in html
    assert 'id="run-error" hidden' in html


def test_a_run_without_prefect_or_error_shows_neither(client: httpx.Client, seeded: Seeded) -> None:
    html = client.get(f"/runs/{seeded.run_id}", params={"namespace": NAMESPACE}).text
    assert 'id="run-prefect"' not in html and 'id="run-error" hidden' in html
    run = client.get(f"/api/runs/{seeded.run_id}", params={"namespace": NAMESPACE}).json()
    assert run["error"] == "" and run["prefect"] is None


def test_a_running_run_whose_record_stopped_changing_shows_as_stalled(client: httpx.Client, seeded: Seeded) -> None:
    write_run(seeded.path, NAMESPACE, "alive-run", "running", [event("split")])
    write_run(seeded.path, NAMESPACE, "dead-run", "running", [event("split")], recorded_at=time.time() - STALLED_AFTER_S - 5)
    alive = client.get("/api/runs/alive-run", params={"namespace": NAMESPACE}).json()
    dead = client.get("/api/runs/dead-run", params={"namespace": NAMESPACE}).json()
    assert (alive["status"], alive["live"]) == ("running", True)
    assert (dead["status"], dead["live"]) == ("stalled", False)
    assert "status-stalled" in client.get("/runs", params={"namespace": NAMESPACE}).text


def test_memory_page_lists_and_searches(client: httpx.Client) -> None:
    page = client.get("/memory", params={"namespace": NAMESPACE})
    assert page.status_code == 200
    assert 'id="records"' in page.text and "/memory/record?namespace=ui-test&amp;id=" in page.text
    keyword = client.get("/memory", params={"namespace": NAMESPACE, "q": "caravans salt"})
    assert keyword.status_code == 200 and "Caravans carried salt and cloth." in keyword.text
    vector = client.get("/memory", params={"namespace": NAMESPACE, "q": "river flooded", "mode": "vector"})
    assert vector.status_code == 200 and 'id="results"' in vector.text and "vector search of Chunk" in vector.text


def test_search_api(client: httpx.Client) -> None:
    hits = client.get("/api/memory/search", params={"namespace": NAMESPACE, "q": "caravans"}).json()
    assert hits and hits[0]["node"]["text"] == "Caravans carried salt and cloth."
    assert "embedding" not in hits[0]["node"]
    vector = client.get("/api/memory/search", params={"namespace": NAMESPACE, "q": "The river flooded in spring.", "mode": "vector", "kind": "Chunk"})
    assert vector.status_code == 200
    assert vector.json()[0]["node"]["text"] == "The river flooded in spring."
    kinded = client.get("/api/memory/search", params={"namespace": NAMESPACE, "q": "receipt", "kind": "Document"}).json()
    assert kinded and all(hit["node"]["kind"] == "Document" for hit in kinded)


def test_namespaces_and_records_api(client: httpx.Client) -> None:
    namespaces = {ns["name"]: ns["nodes"] for ns in client.get("/api/namespaces").json()}
    assert namespaces[NAMESPACE] > 2 * HUB_NEIGHBOURS
    first = client.get("/api/memory/records", params={"namespace": NAMESPACE, "limit": 10}).json()
    second = client.get("/api/memory/records", params={"namespace": NAMESPACE, "limit": 10, "offset": 10}).json()
    assert len(first) == len(second) == 10
    assert not {node["id"] for node in first} & {node["id"] for node in second}
    runs = client.get("/api/memory/records", params={"namespace": NAMESPACE, "kind": "Run"}).json()
    assert runs and all(node["kind"] == "Run" for node in runs)


def test_record_and_neighbours_are_paged(client: httpx.Client, seeded: Seeded) -> None:
    record = client.get("/api/memory/record", params={"namespace": NAMESPACE, "id": seeded.hub_id}).json()
    assert record["kind"] == "Document" and record["relationships"] == HUB_NEIGHBOURS and record["embedded"] is False
    seen: list[str] = []
    offset = 0
    while True:
        page = client.get("/api/memory/neighbours", params={"namespace": NAMESPACE, "id": seeded.hub_id, "limit": 25, "offset": offset}).json()
        assert page["total"] == HUB_NEIGHBOURS and page["limit"] == 25 and page["offset"] == offset
        assert len(page["relationships"]) <= 25 and len(page["nodes"]) == len(page["relationships"])
        assert all("embedding" not in node for node in page["nodes"])
        seen += [node["id"] for node in page["nodes"]]
        offset += 25
        if offset >= page["total"]:
            break
    assert len(seen) == len(set(seen)) == HUB_NEIGHBOURS
    assert sorted(seen) == seeded.spoke_ids
    default = client.get("/api/memory/neighbours", params={"namespace": NAMESPACE, "id": seeded.hub_id}).json()
    assert len(default["relationships"]) == 25


def test_record_page_has_the_explorer(client: httpx.Client, seeded: Seeded) -> None:
    page = client.get("/memory/record", params={"namespace": NAMESPACE, "id": seeded.spoke_ids[0]})
    assert page.status_code == 200
    assert 'id="cy"' in page.text and '<script type="module" src="/static/explorer.js"></script>' in page.text
    assert "&lt;b&gt;not markup&lt;/b&gt;" in page.text and "<b>not markup</b>" not in page.text


def test_static_and_vendor_files_are_served(client: httpx.Client) -> None:
    for path in ("/static/app.css", "/static/diagram.js", "/static/run.js", "/static/explorer.js", "/static/graph.js"):
        assert client.get(path).status_code == 200, path
    if not pages.vendor_missing():
        assert client.get("/vendor/mermaid/mermaid.esm.min.mjs").status_code == 200
        assert client.get("/vendor/cytoscape/cytoscape.esm.min.mjs").status_code == 200
    assert client.get("/vendor/mermaid/../../package.json").status_code == 404


# -- hardening headers -----------------------------------------------------------------------------------


def policy_of(response: httpx.Response) -> dict[str, list[str]]:
    """The directives of a response's Content-Security-Policy, by name."""
    directives = [part.split() for part in response.headers["content-security-policy"].split(";") if part.strip()]
    return {name: values for name, *values in directives}


def assert_hardened(response: httpx.Response) -> None:
    policy = policy_of(response)
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["script-src"] == ["'self'"]  # never inline, never eval
    assert policy["object-src"] == ["'none'"] and policy["base-uri"] == ["'none'"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/graphs", 200),
        ("/api/graphs", 200),
        ("/static/app.css", 200),
        ("/graphs/no-such-graph", 404),
        ("/api/graphs/no-such-graph", 404),
        ("/no-such-path", 404),
        ("/login", 200),
        ("/openapi.json", 200),
    ],
)
def test_every_answer_carries_the_hardening_headers(client: httpx.Client, path: str, status: int) -> None:
    response = client.get(path)
    assert response.status_code == status, response.text
    assert_hardened(response)


def test_the_token_guard_answers_carry_the_hardening_headers(guarded_site: str) -> None:
    with httpx.Client(base_url=guarded_site, timeout=30) as http:
        for path, status in (("/api/graphs", 401), ("/graphs", 303), ("/login", 200)):
            response = http.get(path)
            assert response.status_code == status, path
            assert_hardened(response)


def test_the_docs_pages_are_off_but_the_schema_is_served(client: httpx.Client) -> None:
    """FastAPI's /docs and /redoc load their scripts from a CDN, which the policy (rightly) refuses: they are off."""
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "swagger" not in response.text.lower() and "redoc" not in response.text.lower(), path
    schema = client.get("/openapi.json")
    assert schema.status_code == 200 and schema.headers["content-type"].startswith("application/json")
    assert schema.json()["info"]["title"] == "mnemoflow" and "/api/graphs" in schema.json()["paths"]


# -- bad input -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/api/graphs/no-such-graph", {}, 404),
        ("/api/graphs/..%2Fspec", {}, 404),
        ("/api/runs/no-such-run", {"namespace": NAMESPACE}, 404),
        ("/api/runs/no-such-run", {}, 422),
        ("/api/runs/x", {"namespace": ""}, 422),
        ("/api/runs", {"limit": 0}, 422),
        ("/api/memory/record", {"namespace": NAMESPACE, "id": "nope"}, 404),
        ("/api/memory/record", {"namespace": "no-such-namespace", "id": "hub"}, 404),
        ("/api/memory/record", {"namespace": "bad\x01", "id": "hub"}, 422),
        ("/api/memory/neighbours", {"namespace": NAMESPACE, "id": "hub", "limit": 0}, 422),
        ("/api/memory/neighbours", {"namespace": NAMESPACE, "id": "hub", "limit": 5000}, 422),
        ("/api/memory/neighbours", {"namespace": NAMESPACE, "id": "hub", "limit": "many"}, 422),
        ("/api/memory/neighbours", {"namespace": NAMESPACE, "id": "hub", "offset": -1}, 422),
        ("/api/memory/neighbours", {"namespace": NAMESPACE, "id": "nope"}, 404),
        ("/api/memory/records", {"namespace": "no-such-namespace"}, 404),
        ("/api/memory/records", {"namespace": NAMESPACE, "kind": "NoSuchKind"}, 422),
        ("/api/memory/records", {"namespace": NAMESPACE, "kind": "bad kind!"}, 422),
        ("/api/memory/search", {"namespace": NAMESPACE, "q": "salt", "mode": "vector", "kind": "Document"}, 422),
        ("/api/memory/search", {"namespace": NAMESPACE, "q": "salt", "mode": "vector"}, 422),
        ("/api/memory/search", {"namespace": NAMESPACE, "q": "salt", "mode": "psychic"}, 422),
        ("/api/memory/search", {"namespace": NAMESPACE, "q": "   "}, 422),
        ("/api/memory/search", {"namespace": NAMESPACE, "q": "salt", "k": 0}, 422),
    ],
)
def test_bad_api_input_is_a_client_error_in_json(client: httpx.Client, path: str, params: dict[str, Any], status: int) -> None:
    response = client.get(path, params=params)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/graphs/no-such-graph", {}, 404),
        ("/runs/no-such-run", {"namespace": NAMESPACE}, 404),
        ("/runs/no-such-run", {}, 422),
        ("/memory/record", {"namespace": NAMESPACE, "id": "nope"}, 404),
        ("/memory/record", {"namespace": NAMESPACE}, 422),
        ("/memory", {"namespace": "no-such-namespace"}, 404),
        ("/memory", {"namespace": NAMESPACE, "kind": "NoSuchKind"}, 422),
        ("/memory", {"namespace": NAMESPACE, "q": "x", "mode": "vector", "kind": "Document"}, 422),
        ("/memory", {"namespace": NAMESPACE, "offset": -3}, 422),
    ],
)
def test_bad_page_input_is_an_error_page(client: httpx.Client, path: str, params: dict[str, Any], status: int) -> None:
    response = client.get(path, params=params)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert f"<h1>{status}</h1>" in response.text and "Graphs" in response.text


def test_pages_serve_without_the_front_end_libraries(client: httpx.Client, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(pages, "VENDOR", tmp_path / "node_modules")
    for path in ("/graphs", "/graphs/text-stats", "/runs", "/memory"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert "front-end libraries are not installed" in response.text and "make ui" in response.text
        assert "<script" not in response.text


# -- the token -------------------------------------------------------------------------------------------


TOKEN = "t0ken-for-the-ui-tests"


@pytest.fixture(scope="module")
def guarded_site(seeded: Seeded) -> Iterator[str]:
    with serve(create_app(settings_at(seeded.path, ui=UISettings(token=SecretStr(TOKEN))))) as url:
        yield url


def test_token_is_asked_for_by_apis_and_pages(guarded_site: str) -> None:
    with httpx.Client(base_url=guarded_site, timeout=30) as http:
        assert http.get("/api/graphs").status_code == 401
        assert http.get("/api/graphs", headers={"Authorization": "Bearer wrong"}).status_code == 401
        page = http.get("/graphs")
        assert page.status_code == 303 and page.headers["location"] == "/login?next=%2Fgraphs"
        deep = http.get("/runs", params={"namespace": "a b", "limit": 5})
        assert deep.headers["location"] == "/login?" + urlencode({"next": "/runs?namespace=a+b&limit=5"})
        assert http.get("/login", params={"next": "/graphs"}).status_code == 200
        assert http.get("/static/app.css").status_code == 200
        assert http.get("/api/graphs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_login_sets_the_cookie_and_pages_work_after(guarded_site: str) -> None:
    with httpx.Client(base_url=guarded_site, timeout=30) as http:
        wrong = http.post("/login", data={"token": "nope", "next": "/runs"})
        assert wrong.status_code == 401 and "not right" in wrong.text
        assert SESSION_COOKIE not in http.cookies
        right = http.post("/login", data={"token": TOKEN, "next": "/runs"})
        assert right.status_code == 303 and right.headers["location"] == "/runs"
        cookie = right.headers["set-cookie"].lower()
        assert f"{SESSION_COOKIE}=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
        assert TOKEN.lower() not in cookie  # a signed session, never the token itself
        assert http.get("/runs").status_code == 200
        assert http.get("/api/namespaces").status_code == 200


def test_login_only_redirects_to_local_paths(guarded_site: str) -> None:
    with httpx.Client(base_url=guarded_site, timeout=30) as http:
        for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:alert(1)", ""):
            response = http.post("/login", data={"token": TOKEN, "next": target})
            assert response.status_code == 303 and response.headers["location"] == "/graphs", target


def test_safe_next() -> None:
    assert safe_next("/runs/x?namespace=a") == "/runs/x?namespace=a"
    assert safe_next(None) == "/graphs"
    assert safe_next("//host") == "/graphs"
    assert safe_next("http://host/") == "/graphs"
    assert safe_next("/a\nb") == "/graphs"
