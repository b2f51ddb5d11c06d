"""The runs list and the run page, below the browser: filters and thread groups over the store API (on both backends),
what a run's detail holds (input, outputs, the fields each step wrote, its model calls, where its thread came from,
links to mechanism views), and the pages and JSON APIs over real HTTP.

Run records are written as the runner writes them (``tests/test_ui.py`` ``write_run``), plus real runs of the
``tme-turn`` graph against the scripted OpenAI-compatible server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mnemoflow.flows.server.app import create_app
from mnemoflow.flows.server.ui import mechanisms, runs
from mnemoflow.graphs import load_graph, run_graph
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import NodeRecord, stable_id
from tests.conftest import EMBEDDER, settings_of
from tests.support.openai_server import Rule, ScriptedOpenAIServer
from tests.support.web_server import serve
from tests.test_ui import settings_at, write_run

NAMESPACE = "ui-runs"
OTHER = "ui-runs-other"
SETTLED = "ui-runs-settled"
T0 = 1_760_000_000.0
LONG = "The caravan rested at the ford. " * 40

RICH_EVENTS: list[dict[str, Any]] = [
    {
        "node": "split", "event": "end", "started_at": T0, "duration_s": 0.01,
        "writes": {"sentences": {"before": [], "after": ["The salt road ran north.", "Caravans carried salt."]}},
    },
    {
        "node": "count", "event": "end", "started_at": T0 + 1, "duration_s": 0.02,
        "writes": {"word_counts": {"before": [], "after": [5], "merged": True}},
    },
    {
        "node": "note", "event": "end", "started_at": T0 + 2, "duration_s": 0.5,
        "llm": {"calls": 1, "tokens": 16},
        "writes": {
            "rounds": {"before": 1, "after": 1, "unchanged": True},
            "embedding": {"before": None, "after": {"$vector": 384}},
            "summary": {"before": "", "after": {"$text": LONG[:500], "$chars": len(LONG)}},
        },
        "calls": [
            {
                "kind": "structured", "name": "Note",
                "messages": [
                    {"role": "system", "content": "You write one note per round."},
                    {"role": "user", "content": "Note the total: <img src=x onerror=alert(1)>"},
                ],
                "messages_omitted": 0, "reply": '{"note": "round 1: 9 words"}',
                "prompt_tokens": 12, "completion_tokens": 4, "seconds": 0.42, "cache_hit": False,
                "requests": 2, "retries": 1, "reasks": 0,
            }
        ],
    },
    {
        "node": "remember", "event": "error", "started_at": T0 + 3, "duration_s": 0.1,
        "error": "the store refused <script>alert(1)</script>",
        "calls": [
            {
                "kind": "text", "messages": [{"role": "user", "content": "Remember?"}], "reply": "",
                "prompt_tokens": 2, "completion_tokens": 0, "seconds": 0.05, "cache_hit": False,
                "requests": 1, "retries": 0, "reasks": 0, "error": "the model refused",
            }
        ],
        "calls_omitted": 3,
    },
]  # fmt: skip


def run_record(
    namespace: str,
    run_id: str,
    *,
    graph: str = "tme-turn",
    status: str = "completed",
    thread: str | None = None,
    started_at: float = T0,
    **properties: Any,
) -> NodeRecord:
    """A Run record shaped as the runner writes it."""
    return NodeRecord(
        id=stable_id(namespace, "Run", run_id), namespace=namespace, kind="Run", text=f"{graph} {status}",
        properties={
            "graph": graph, "graph_version": 1, "run_id": run_id, "thread_id": thread or run_id, "status": status,
            "resumed": False, "duration_s": 0.5, "started_at": started_at, "recorded_at": time.time(), "steps": 1,
            "events": [], "llm": {"calls": 1, "tokens": 10}, "error": "", "annotations": {}, **properties,
        },
    )  # fmt: skip


async def write(store: GraphStore, *records: NodeRecord) -> None:
    """Upsert one record at a time, so each is newer (``updated_at``) than the one before."""
    for record in records:
        await store.upsert_nodes([record])


# -- filters and thread groups, on both backends ------------------------------------------------------------------


async def test_filters_narrow_by_graph_status_thread_and_namespace(store: GraphStore, namespace: str) -> None:
    other = f"{namespace}-b"
    await write(
        store,
        run_record(namespace, "turn-1", thread="chat-1", started_at=T0 + 1),
        run_record(namespace, "turn-2", thread="chat-1", started_at=T0 + 2, status="failed"),
        run_record(namespace, "turn-3", thread="chat-1", started_at=T0 + 3),
        run_record(namespace, "stats-1", graph="text-stats", started_at=T0 + 4),
        run_record(other, "stats-2", graph="text-stats", started_at=T0 + 5, status="failed"),
    )

    def ids(runs: list[dict[str, Any]]) -> list[str]:
        return [run["run_id"] for run in runs]

    assert ids(await runs.run_summaries(store, namespace=namespace)) == ["stats-1", "turn-3", "turn-2", "turn-1"]
    assert ids(await runs.run_summaries(store)) == ["stats-2", "stats-1", "turn-3", "turn-2", "turn-1"]
    assert ids(await runs.run_summaries(store, graph="text-stats")) == ["stats-2", "stats-1"]
    assert ids(await runs.run_summaries(store, status="failed")) == ["stats-2", "turn-2"]
    assert ids(await runs.run_summaries(store, namespace=namespace, status="failed")) == ["turn-2"]
    assert ids(await runs.run_summaries(store, thread="chat-1")) == ["turn-3", "turn-2", "turn-1"]
    assert ids(await runs.run_summaries(store, thread="chat")) == []  # a thread matches exactly
    assert ids(await runs.run_summaries(store, thread="chat-1", status="completed", limit=1)) == ["turn-3"]
    assert ids(await runs.run_summaries(store, namespace=other, graph="tme-turn")) == []


async def test_a_threads_runs_are_grouped_under_it_newest_first(store: GraphStore, namespace: str) -> None:
    await write(
        store,
        run_record(namespace, "turn-1", thread="chat-1", started_at=T0 + 1, steps=3),
        run_record(namespace, "alone", graph="text-stats", started_at=T0 + 2),
        run_record(namespace, "turn-2", thread="chat-1", started_at=T0 + 3, steps=4, status="failed"),
    )
    listing = await runs.run_listing(store, namespace=namespace)
    [chat, alone] = listing["groups"]
    assert (chat["thread_id"], chat["count"], chat["status"], chat["started_at"]) == ("chat-1", 2, "failed", T0 + 3)
    assert [run["run_id"] for run in chat["runs"]] == ["turn-2", "turn-1"] and chat["steps"] == 7
    assert chat["graphs"] == ["tme-turn"] and chat["thread_url"] == f"/runs?namespace={namespace}&thread=chat-1"
    assert (alone["count"], alone["runs"][0]["run_id"]) == (1, "alone")
    assert listing["partial"] is False
    assert {"text-stats", "tme-turn"} <= set(listing["graphs"]) and listing["statuses"][:2] == ["completed", "failed"]
    assert namespace in [entry["name"] for entry in listing["namespaces"]]


async def test_a_filter_reads_at_most_the_scan_limit_and_says_so(
    store: GraphStore, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runs, "RUN_SCAN_LIMIT", 4)
    monkeypatch.setattr(runs, "RUN_SCAN_PAGE", 2)
    await write(store, run_record(namespace, "old", thread="old-thread", started_at=T0))
    await write(store, *[run_record(namespace, f"new-{index}", started_at=T0 + 1 + index) for index in range(4)])
    listing = await runs.run_listing(store, namespace=namespace, thread="old-thread")
    assert listing["runs"] == [] and listing["partial"] is True
    newer = await runs.run_listing(store, namespace=namespace, thread="new-2")
    assert [run["run_id"] for run in newer["runs"]] == ["new-2"] and newer["partial"] is True  # "old" was not read
    enough = await runs.run_listing(store, namespace=namespace, thread="new-2", limit=1)
    assert [run["run_id"] for run in enough["runs"]] == ["new-2"] and enough["partial"] is False  # found before the bound


# -- a run's detail -----------------------------------------------------------------------------------------------


async def test_run_detail_has_input_outputs_writes_calls_and_the_failed_step(
    store: GraphStore, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    await write(store, run_record(
        namespace, "rich", graph="text-stats", status="failed", events=RICH_EVENTS, error="the store refused",
        input={"text": {"$text": LONG[:500], "$chars": len(LONG)}},
    ))  # fmt: skip
    detail = await runs.run_detail(store, settings_of(store, tmp_path, request), namespace, "rich")
    assert detail["input"] == {"text": {"$text": LONG[:500], "$chars": len(LONG)}} and detail["input_note"] == ""
    assert detail["outputs"] is None and detail["outputs_note"] == "None: the run did not complete (failed)."
    assert detail["failed_step"] == {"index": 4, "node": "remember"}
    split, count, note, remember = detail["events"]
    assert split["writes"]["sentences"]["after"] == ["The salt road ran north.", "Caravans carried salt."]
    assert count["writes"]["word_counts"]["merged"] is True
    assert note["writes"]["embedding"]["after"] == {"$vector": 384}
    [call] = note["calls"]
    assert call["name"] == "Note" and call["messages"][1]["content"].startswith("Note the total")
    assert (call["prompt_tokens"], call["completion_tokens"], call["retries"]) == (12, 4, 1)
    assert remember["calls"][0]["error"] == "the model refused" and remember["calls_omitted"] == 3
    assert detail["visited"] == ["count", "note", "split"] and detail["links"] == []


async def test_run_detail_of_a_running_and_of_a_malformed_run(
    store: GraphStore, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    settings = settings_of(store, tmp_path, request)
    odd_events = [
        {"node": "split", "event": "end", "started_at": T0, "duration_s": 0.1, "writes": "oops", "calls": [1, {"kind": "text"}]}
    ]
    await write(
        store,
        run_record(namespace, "going", status="running", input={"session": "s", "utterance": "hi"}),
        run_record(namespace, "odd", events=odd_events),
    )
    going = await runs.run_detail(store, settings, namespace, "going")
    assert going["live"] is True and going["outputs_note"] == "Not yet: the run is still going." and going["failed_step"] is None
    odd = await runs.run_detail(store, settings, namespace, "odd")
    [event] = odd["events"]
    assert "writes" not in event and event["calls"] == [{"kind": "text"}]
    assert odd["input"] is None and odd["input_note"] == "Not recorded for this run."
    assert odd["outputs_note"] == "Not recorded for this run."


async def test_a_forked_and_a_resumed_run_say_where_their_thread_came_from(
    store: GraphStore, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    settings = settings_of(store, tmp_path, request)
    forked = {"forked_from_run": "parent run", "forked_from_thread": "chat-1", "forked_from_checkpoint": "1ef-cp"}
    await write(
        store,
        run_record(namespace, "fork", thread="chat-1-fork", annotations=forked),
        run_record(namespace, "again", thread="chat-1", resumed=True, input=None),
    )
    fork = await runs.run_detail(store, settings, namespace, "fork")
    assert fork["forked_from"] == {
        "run_id": "parent run", "thread_id": "chat-1", "checkpoint_id": "1ef-cp", "url": f"/runs/parent%20run?namespace={namespace}"
    }  # fmt: skip
    again = await runs.run_detail(store, settings, namespace, "again")
    assert again["forked_from"] is None and again["resumed"] is True
    assert again["input_note"].startswith("Not recorded: this run resumed its thread")
    assert again["thread_url"] == f"/runs?namespace={namespace}&thread=chat-1"


async def test_run_detail_links_to_mechanism_views_on_this_server_only(
    store: GraphStore, namespace: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[dict[str, Any]] = []

    def run_links(run: dict[str, Any]) -> list[dict[str, str]]:
        seen.append(run)
        return [
            {"label": "Session s1", "url": f"/tme/session?namespace={run['namespace']}&session=s1"},
            {"label": "elsewhere", "url": "//evil.example/x"},
            {"label": "script", "url": "javascript:alert(1)"},
        ]

    monkeypatch.setattr(mechanisms, "run_links", run_links)
    await write(store, run_record(namespace, "turn", input={"session": "s1", "utterance": "hi"}, outputs={"response": "Hello."}))
    detail = await runs.run_detail(store, settings_of(store, tmp_path, request), namespace, "turn")
    assert detail["links"] == [{"label": "Session s1", "url": f"/tme/session?namespace={namespace}&session=s1"}]
    [run] = seen
    assert (run["graph"], run["thread_id"], run["input"], run["outputs"]) == (
        "tme-turn",
        "turn",
        {"session": "s1", "utterance": "hi"},
        {"response": "Hello."},
    )


# -- real runs of a chat session ----------------------------------------------------------------------------------

DECOMPOSE = "You split one user message"
CLASSIFY = "You are TRIM"
ANSWER = "You are an assistant helping a user"


async def test_a_chat_sessions_real_turns_form_one_thread_with_input_outputs_writes_and_calls(
    store: GraphStore, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    settings = settings_of(store, tmp_path, request)
    with ScriptedOpenAIServer() as server:
        server.script(Rule(system=DECOMPOSE, json={"task": "plan a trip", "substeps": []}))
        server.script(Rule(system=CLASSIFY, json={"operations": [{"intent": "new", "slot": "destination", "value": "Lisbon"}]}))
        server.script(Rule(system=ANSWER, text="Lisbon it is."))
        for utterance in ("destination: Lisbon", "and a hotel"):
            await run_graph(
                load_graph("tme-turn"), {"session": "trip", "utterance": utterance}, store=store, embedder=EMBEDDER,
                llm=server.gateway(), settings=settings, checkpointer=None, namespace=namespace, thread_id="chat-trip",
            )  # fmt: skip
    [group] = (await runs.run_listing(store, namespace=namespace, thread="chat-trip"))["groups"]
    assert group["count"] == 2 and group["status"] == "completed" and group["llm_calls"] >= 6
    latest = await runs.run_detail(store, settings, namespace, group["runs"][0]["run_id"])
    assert latest["input"] == {"session": "trip", "utterance": "and a hotel"}
    assert latest["outputs"]["response"] == "Lisbon it is."
    writes = {event["node"]: event.get("writes", {}) for event in latest["events"]}
    assert writes["answer"]["response"]["after"] == "Lisbon it is."
    calls = [call for event in latest["events"] for call in event.get("calls", [])]
    kinds = {call["kind"] for call in calls}
    assert {"structured", "text"} <= kinds
    [answer] = [call for call in calls if call["kind"] == "text"]
    assert answer["messages"][0]["role"] == "system" and ANSWER in str(answer["messages"][0]["content"])
    assert answer["reply"] == "Lisbon it is." and answer["prompt_tokens"] > 0 and answer["completion_tokens"] == 3


# -- pages and APIs over HTTP -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ui-runs") / "memory.db"
    flow_run = "0b7c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3"
    prefect = {"prefect_flow_run_id": flow_run, "prefect_flow_run_url": f"http://127.0.0.1:4200/runs/flow-run/{flow_run}"}
    for index in range(3):
        write_run(path, NAMESPACE, f"turn-{index}", "completed", [], graph="tme-turn", thread_id="chat-7", started_at=T0 + index)
    write_run(path, NAMESPACE, "stats", "completed", [], started_at=T0 + 10, annotations=prefect)
    write_run(path, OTHER, "broken", "failed", RICH_EVENTS, started_at=T0 + 20, error="the store refused <script>alert(1)</script>",
              input={"text": "The salt road ran north. <b>Caravans</b>"})  # fmt: skip
    forked = {"forked_from_run": "turn-1", "forked_from_thread": "chat-7", "forked_from_checkpoint": "cp-3"}
    write_run(path, NAMESPACE, "forked", "completed", [], graph="tme-turn", thread_id="chat-7-fork", started_at=T0 + 30,
              annotations=forked, input={"session": "s", "utterance": "hi"}, outputs={"response": "Hello <i>there</i>."})  # fmt: skip
    killed = [{"node": "split", "event": "end", "started_at": T0 + 40, "duration_s": 0.1}]
    write_run(path, SETTLED, "killed", "interrupted", killed, graph="tme-turn", thread_id="book-1", started_at=T0 + 40,
              recorded_at=T0 + 41, resumed_by="resumer", settled_at=T0 + 50, settled_reason="its process 4242 on <box> is gone")  # fmt: skip
    write_run(path, SETTLED, "resumer", "completed", [], graph="tme-turn", thread_id="book-1", started_at=T0 + 50, resumed=True,
              input=None, resumes=["killed"])  # fmt: skip
    return path


@pytest.fixture(scope="module")
def client(db: Path) -> Iterator[httpx.Client]:
    with serve(create_app(settings_at(db))) as url, httpx.Client(base_url=url, timeout=30) as http:
        yield http


def test_runs_api_filters(client: httpx.Client) -> None:
    def ids(**params: Any) -> list[str]:
        response = client.get("/api/runs", params=params)
        assert response.status_code == 200, response.text
        return [run["run_id"] for run in response.json()]

    assert ids(namespace=NAMESPACE, thread="chat-7") == ["turn-2", "turn-1", "turn-0"]
    assert ids(graph="text-stats") == ["broken", "stats"]
    assert ids(status="failed") == ["broken"]
    assert ids(namespace=OTHER, status="completed") == []
    [stats] = client.get("/api/runs", params={"graph": "text-stats", "status": "completed"}).json()
    assert (
        stats["prefect"]["url"].startswith("http://127.0.0.1:4200/runs/flow-run/")
        and stats["url"] == f"/runs/stats?namespace={NAMESPACE}"
    )
    assert client.get("/api/runs", params={"limit": runs.RUN_SCAN_LIMIT + 1}).status_code == 422
    assert client.get("/api/runs", params={"thread": ""}).status_code == 422


def test_runs_page_groups_a_thread_and_links_prefect(client: httpx.Client) -> None:
    html = client.get("/runs", params={"namespace": NAMESPACE}).text
    assert '<link rel="stylesheet" href="/static/runs.css">' in html and '<script type="module" src="/static/runs.js">' in html
    assert html.count('class="thread-group"') == 1 and 'data-thread="chat-7"' in html
    assert html.count('<tr class="run-row thread-run" hidden>') == 3 and "run 3 of 3" in html
    assert """<a href="/runs?namespace=ui-runs&amp;thread=chat-7" title="this thread's runs"><code>chat-7</code></a>""" in html
    assert '<a href="http://127.0.0.1:4200/runs/flow-run/0b7c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3" rel="noopener noreferrer"' in html
    assert '<option value="ui-runs" selected>' in html and 'id="runs-waiting"' not in html


def test_runs_page_keeps_its_filters_and_opens_a_filtered_thread(client: httpx.Client) -> None:
    html = client.get(
        "/runs", params={"namespace": NAMESPACE, "graph": "tme-turn", "status": "completed", "thread": "chat-7"}
    ).text
    assert '<option value="tme-turn" selected>' in html and '<option value="completed" selected>' in html
    assert 'name="thread" value="chat-7"' in html and 'href="/runs" class="clear-filters"' in html
    assert 'data-open="true"' in html and '<tr class="run-row thread-run">' in html and 'thread-run" hidden' not in html


def test_a_thread_without_runs_yet_says_so_and_waits(client: httpx.Client) -> None:
    html = client.get("/runs", params={"namespace": NAMESPACE, "thread": "not-started <b>yet</b>"}).text
    assert 'id="runs-waiting" data-thread="not-started &lt;b&gt;yet&lt;/b&gt;" data-namespace="ui-runs"' in html
    assert "No runs of thread <code>not-started &lt;b&gt;yet&lt;/b&gt;</code> in namespace ui-runs yet." in html
    assert 'id="runs"' not in html
    empty = client.get("/runs", params={"graph": "l2mac"}).text
    assert "No runs match these filters." in empty and 'id="runs-waiting"' not in empty


def test_run_page_shows_input_outputs_and_the_failed_step(client: httpx.Client) -> None:
    html = client.get("/runs/broken", params={"namespace": OTHER}).text
    assert '<link rel="stylesheet" href="/static/runs.css">' in html
    assert 'Error<span id="run-error-step"> in step <a href="#step-4">4, remember</a></span>' in html
    assert "the store refused &lt;script&gt;" in html and "<script>alert" not in html
    assert "The salt road ran north. &lt;b&gt;Caravans&lt;/b&gt;" in html  # the input, as text
    assert "None: the run did not complete (failed)." in html
    assert '<tr class="step event-end" id="step-3">' in html and '<code class="field">embedding</code>' in html
    assert """id="run-links" aria-label="Views of this run's memory" hidden""" in html and 'id="run-origin"' not in html
    run = client.get("/api/runs/broken", params={"namespace": OTHER}).json()
    assert run["events"][2]["calls"][0]["reply"] == '{"note": "round 1: 9 words"}' and run["failed_step"]["index"] == 4


def test_run_page_of_a_forked_run_links_back(client: httpx.Client) -> None:
    html = client.get("/runs/forked", params={"namespace": NAMESPACE}).text
    assert (
        '<p class="run-origin" id="run-origin">Forked from run <a href="/runs/turn-1?namespace=ui-runs"><code>turn-1</code></a>'
        " at checkpoint <code>cp-3</code> of thread <code>chat-7</code>"
    ) in html
    assert "Hello &lt;i&gt;there&lt;/i&gt;." in html and 'id="run-error" hidden' in html
    assert '<a href="/runs?namespace=ui-runs&amp;thread=chat-7-fork">thread <code>chat-7-fork</code></a>' in html


def test_a_killed_run_settled_by_its_resume_and_the_resume_link_each_other(client: httpx.Client) -> None:
    killed = client.get("/runs/killed", params={"namespace": SETTLED}).text
    assert '<span id="run-status" class="status status-interrupted">interrupted</span>' in killed
    assert '<span class="muted small" id="run-settled">(its process 4242 on &lt;box&gt; is gone)</span>' in killed
    assert '<dd id="run-resumed-by">run <a href="/runs/resumer?namespace=ui-runs-settled"><code>resumer</code></a>' in killed
    assert 'id="run-resumes"' not in killed and 'id="live-note" class="muted small" hidden' in killed
    resumer = client.get("/runs/resumer", params={"namespace": SETTLED}).text
    assert '<dd id="run-resumes">run <a href="/runs/killed?namespace=ui-runs-settled"><code>killed</code></a>' in resumer
    assert 'id="run-resumed-by"' not in resumer and 'id="run-settled"' not in resumer
    listing = client.get("/runs", params={"namespace": SETTLED, "status": "interrupted"}).text
    assert (
        'href="/runs/resumer?namespace=ui-runs-settled" title="the run that took its thread over">resumed by <code>resumer</code>'
        in listing
    )
    run = client.get("/api/runs/killed", params={"namespace": SETTLED}).json()
    assert run["resumed_by"] == {"run_id": "resumer", "url": "/runs/resumer?namespace=ui-runs-settled"} and run["resumes"] == []
