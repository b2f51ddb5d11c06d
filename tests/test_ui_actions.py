"""Starting, resuming and forking runs from the UI's APIs, over real HTTP, with the scripted OpenAI-compatible server as
the model: the start form's fields, a start that runs to completion, bad input named field by field, requests from
other origins and without the token refused, resume after the server stopped mid-run, forks, and the bound on runs at
once. One test hands a start to a real Prefect server's deployment and worker.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.settings import PREFECT_API_URL, PREFECT_LOGGING_TO_API_ENABLED, temporary_settings
from pydantic import SecretStr

from mnemoflow.flows.server.app import create_app
from mnemoflow.flows.server.ui.actions import ACTION_MAX_BODY_BYTES
from mnemoflow.settings import LLMSettings, OpenAISettings, Settings, UISettings
from tests.conftest import settings_for
from tests.support.openai_server import Rule, ScriptedOpenAIServer
from tests.support.prefect_fixtures import logs, run_env, wait_final
from tests.support.prefect_server import PrefectServer, Worker
from tests.support.web_server import serve
from tests.test_tme import ANSWER, CLASSIFY, DECOMPOSE

NAMESPACE = "ui-actions"
TEXT = "Memory that lasts. Runs on a schedule. Can be trusted."
TOKEN = "actions-token-0123456789abcdef"
WAIT_S = 60.0


class Gate:
    """Holds the model's answers to the TME answer step until opened, so a test can act while a run is mid-step."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.waiting = threading.Event()

    def reply(self, body: dict[str, Any]) -> str:
        self.waiting.set()
        self.opened.wait(WAIT_S)
        prompt = str(body["messages"][-1]["content"])
        return f"Answered: {prompt.splitlines()[0][:60]}" if prompt else "Answered."


def script_tme(model: ScriptedOpenAIServer, gate: Gate | None = None) -> None:
    """Replies for the tme-turn graph: a fixed decomposition, no operations, an answer (held by ``gate``)."""
    model.script(Rule(system=DECOMPOSE, json={"task": "plan a trip", "substeps": []}))
    model.script(Rule(system=CLASSIFY, json={"operations": []}))
    if gate is None:
        model.script(Rule(system=ANSWER, text="Noted."))
    else:
        model.script(Rule(system=ANSWER, respond=gate.reply))


def ui_settings(stored: Settings, model: ScriptedOpenAIServer, **ui: Any) -> Settings:
    """The server's settings: ``stored``'s backend, the scripted model, :data:`NAMESPACE` and the ``ui`` settings given."""
    return stored.model_copy(
        update={
            "namespace": NAMESPACE,
            "openai": OpenAISettings(base_url=model.base_url, api_key=SecretStr("test")),
            "llm": LLMSettings(cache=False, initial_backoff=0.0, max_backoff=0.01),
            "ui": UISettings(**ui),
        }
    )


@pytest.fixture
def model() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer() as server:
        yield server


@pytest.fixture
def stored(tmp_path: Path) -> Settings:
    """A SQLite store in the test's folder (its checkpoints beside it)."""
    return settings_for("sqlite", sqlite_path=tmp_path / "memory.db")


@pytest.fixture
def on_backend(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """A store of the parametrized backend: a SQLite file, or the test Neo4j, emptied."""
    uri = request.getfixturevalue("empty_neo4j") if backend == "neo4j" else None
    return settings_for(backend, neo4j_uri=uri, sqlite_path=tmp_path / "memory.db")


@pytest.fixture
def site(stored: Settings, model: ScriptedOpenAIServer) -> Iterator[str]:
    with serve(create_app(ui_settings(stored, model))) as url:
        yield url


@pytest.fixture
def client(site: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=site, timeout=30) as http:
        yield http


def start(client: httpx.Client, graph: str, input: dict[str, Any], **extra: Any) -> httpx.Response:
    return client.post(f"/api/graphs/{graph}/runs", json={"input": input, **extra})


def wait_for_run(
    client: httpx.Client, run_id: str, done: Callable[[dict[str, Any]], bool], namespace: str = NAMESPACE
) -> dict[str, Any]:
    """The run's detail once ``done`` says so (polled; fails after ``WAIT_S``)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        response = client.get(f"/api/runs/{run_id}", params={"namespace": namespace})
        if response.status_code == 200 and done(run := response.json()):
            return run
        assert time.monotonic() < deadline, f"run {run_id}: {response.status_code} {response.text[:2000]}"
        time.sleep(0.1)


def finished(run: dict[str, Any]) -> bool:
    return bool(run["status"] in ("completed", "failed", "interrupted"))


def completed_run(client: httpx.Client, graph: str, input: dict[str, Any]) -> dict[str, Any]:
    response = start(client, graph, input)
    assert response.status_code == 202, response.text
    run = wait_for_run(client, response.json()["run_id"], finished)
    assert run["status"] == "completed", run["error"]
    return run


# -- the start form ----------------------------------------------------------------------------------------


def test_form_lists_the_declared_inputs_first_with_their_types(client: httpx.Client) -> None:
    form = client.get("/api/graphs/tme-turn/form").json()
    assert form["graph"] == "tme-turn" and form["namespace"] == NAMESPACE and form["prefect"] is False
    fields = {field["name"]: field for field in form["fields"]}
    assert [field["name"] for field in form["fields"][:2]] == ["session", "utterance"]
    assert fields["session"] == {
        "name": "session", "type": "string", "required": True, "input": True, "default": None,
        "description": "The conversation's id: the same id continues the same task memory.",
    }  # fmt: skip
    assert fields["utterance"]["type"] == "text" and fields["utterance"]["required"]
    assert fields["turn"] == {**fields["turn"], "type": "integer", "required": False, "input": False, "default": 0}
    assert fields["forest"]["type"] == "json" and fields["forest"]["default"] == {}

    qa = {field["name"]: field for field in client.get("/api/graphs/comorag-qa/form").json()["fields"]}
    assert (qa["max_cycles"]["type"], qa["max_cycles"]["default"]) == ("integer", 5)
    assert (qa["encode_first"]["type"], qa["encode_first"]["default"]) == ("boolean", True)
    assert (qa["options"]["type"], qa["book_id"]["type"], qa["question"]["type"]) == ("json", "string", "text")


def test_an_unknown_graph_is_404(client: httpx.Client) -> None:
    assert client.get("/api/graphs/no-such-graph/form").status_code == 404
    response = start(client, "no-such-graph", {"text": TEXT})
    assert response.status_code == 404 and "no-such-graph" in response.json()["error"]


# -- starting ----------------------------------------------------------------------------------------------


def test_a_start_answers_at_once_and_the_run_completes_with_its_record(on_backend: Settings, model: ScriptedOpenAIServer) -> None:
    gate = Gate()
    script_tme(model, gate)
    with serve(create_app(ui_settings(on_backend, model))) as url, httpx.Client(base_url=url, timeout=30) as client:
        started_and_completed(client, gate)


def started_and_completed(client: httpx.Client, gate: Gate) -> None:
    response = start(client, "tme-turn", {"session": "trip", "utterance": "Plan a trip to Lisbon."})
    assert response.status_code == 202, response.text
    answer = response.json()
    run_id, thread_id = answer["run_id"], answer["thread_id"]
    assert answer["namespace"] == NAMESPACE and answer["url"] == f"/runs/{run_id}?namespace={NAMESPACE}"
    assert "prefect_flow_run_id" not in answer
    page = client.get(answer["url"])  # the run's page opens while its answer step waits on the model
    assert page.status_code == 200 and run_id in page.text
    assert gate.waiting.wait(WAIT_S)
    running = wait_for_run(client, run_id, lambda run: run["steps"] >= 3)
    assert running["status"] == "running"
    gate.opened.set()

    run = wait_for_run(client, run_id, finished)
    assert run["status"] == "completed", run["error"]
    assert run["graph"] == "tme-turn" and run["thread_id"] == thread_id and run["input"]["session"] == "trip"
    assert str(run["outputs"]["response"]).startswith("Answered:")
    [listed] = client.get("/api/runs", params={"namespace": NAMESPACE, "thread": thread_id}).json()
    assert listed["run_id"] == run_id


def test_bad_input_is_422_naming_each_field(client: httpx.Client) -> None:
    response = start(client, "tme-turn", {"session": "", "utterans": "hello", "turn": "first"})
    assert response.status_code == 422
    body = response.json()
    assert set(body["fields"]) == {"session", "utterance", "utterans", "turn"}
    assert "required" in body["fields"]["utterance"] and "utterance" in body["fields"]["utterans"]  # did you mean
    assert "integer" in body["fields"]["turn"] and "3 field" not in body["error"] and "4 field(s)" in body["error"]

    nested = start(client, "tme-turn", {"session": "s", "utterance": "u", "operations": [{"intent": "new"}, 7]})
    assert nested.status_code == 422 and set(nested.json()["fields"]) == {"operations"}
    assert nested.json()["fields"]["operations"].startswith("at 1: ")

    malformed = client.post("/api/graphs/tme-turn/runs", json={"input": [], "thread_id": "no spaces please"})
    assert malformed.status_code == 422 and set(malformed.json()["fields"]) == {"input", "thread_id"}
    assert client.get("/api/runs", params={"namespace": NAMESPACE}).json() == []  # nothing ran


def test_a_failed_precondition_is_422_on_the_field_it_reads(client: httpx.Client) -> None:
    response = start(client, "comorag-qa", {"question": "Who?", "book_id": "missing-book"})
    assert response.status_code == 422
    body = response.json()
    assert set(body["fields"]) == {"book_id"} and "missing-book" in body["fields"]["book_id"]
    assert body["error"] == body["fields"]["book_id"]


def test_a_large_input_fits_under_the_actions_body_limit(client: httpx.Client) -> None:
    question = "Who kept the ledger? " * 20_000  # 420 KB: over the 16 KiB of other routes, under the actions' limit
    response = start(client, "comorag-qa", {"question": question, "book_id": "missing-book"})
    assert response.status_code == 422 and set(response.json()["fields"]) == {"book_id"}  # read and checked, not 413
    too_large = client.post("/api/graphs/comorag-qa/runs", content=b"{" + b" " * ACTION_MAX_BODY_BYTES + b"}",
                            headers={"Content-Type": "application/json"})  # fmt: skip
    assert too_large.status_code == 413


# -- other origins and the token ------------------------------------------------------------------------------


def test_requests_from_other_origins_are_refused(client: httpx.Client, site: str) -> None:
    body = {"input": {"text": TEXT}}
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"}, {"Origin": site.replace("127.0.0.1", "localhost")},
                    {"Origin": site.replace("http:", "https:")}, {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}):  # fmt: skip
        response = client.post("/api/graphs/text-stats/runs", json=body, headers=headers)
        assert response.status_code == 403, headers
        assert "another" in response.json()["error"]
    for path in ("/api/runs/nope/resume", "/api/runs/nope/fork"):
        assert client.post(path, json={"namespace": NAMESPACE}, headers={"Origin": "http://evil.example"}).status_code == 403

    form = client.post("/api/graphs/text-stats/runs", data={"input": TEXT})  # what a plain HTML form on another site sends
    assert form.status_code == 415 and "application/json" in form.json()["error"]
    plain = client.post("/api/graphs/text-stats/runs", content=b'{"input": {}}', headers={"Content-Type": "text/plain"})
    assert plain.status_code == 415
    assert client.get("/api/runs", params={"namespace": NAMESPACE}).json() == []

    same = client.post("/api/graphs/text-stats/runs", json=body, headers={"Origin": site, "Sec-Fetch-Site": "same-origin"})
    assert same.status_code == 202, same.text
    wait_for_run(client, same.json()["run_id"], finished)


def test_behind_a_trusted_proxy_the_origin_has_the_scheme_the_proxy_was_reached_by(
    stored: Settings, model: ScriptedOpenAIServer
) -> None:
    with (
        serve(create_app(ui_settings(stored, model, trusted_proxies="127.0.0.1"))) as url,
        httpx.Client(base_url=url, timeout=30) as http,
    ):
        body = {"input": {"text": TEXT}}
        proxied = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
        plain = http.post("/api/graphs/text-stats/runs", json=body, headers={**proxied, "Origin": url})
        assert plain.status_code == 403  # the page was served over https by the proxy: an http origin is another one
        started = http.post(
            "/api/graphs/text-stats/runs", json=body, headers={**proxied, "Origin": url.replace("http:", "https:")}
        )
        assert started.status_code == 202, started.text
        wait_for_run(http, started.json()["run_id"], finished)


def test_starts_need_the_token_when_one_is_set(stored: Settings, model: ScriptedOpenAIServer) -> None:
    with (
        serve(create_app(ui_settings(stored, model, token=SecretStr(TOKEN)))) as url,
        httpx.Client(base_url=url, timeout=30) as http,
    ):
        body = {"input": {"text": TEXT}}
        assert http.get("/api/graphs/text-stats/form").status_code == 401
        refused = http.post("/api/graphs/text-stats/runs", json=body)
        assert refused.status_code == 401 and "MNEMOFLOW_UI_TOKEN" in refused.json()["error"]
        assert http.post("/api/runs/nope/resume", json={"namespace": NAMESPACE}).status_code == 401
        assert http.post("/api/runs/nope/fork", json={"namespace": NAMESPACE, "checkpoint_id": "c"}).status_code == 401
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        foreign = http.post("/api/graphs/text-stats/runs", json=body, headers={**bearer, "Origin": "http://evil.example"})
        assert foreign.status_code == 403  # the token does not make another origin's request acceptable
        started = http.post("/api/graphs/text-stats/runs", json=body, headers=bearer)
        assert started.status_code == 202, started.text
        http.headers.update(bearer)
        assert wait_for_run(http, started.json()["run_id"], finished)["status"] == "completed"


# -- resume --------------------------------------------------------------------------------------------------


def test_resume_is_409_for_a_finished_run_and_404_for_an_unknown_one(client: httpx.Client) -> None:
    run = completed_run(client, "text-stats", {"text": TEXT})
    response = client.post(f"/api/runs/{run['run_id']}/resume", json={"namespace": NAMESPACE})
    assert response.status_code == 409 and "nothing left to run" in response.json()["error"]
    assert client.post("/api/runs/no-such-run/resume", json={"namespace": NAMESPACE}).status_code == 404
    assert client.post(f"/api/runs/{run['run_id']}/resume", json={}).status_code == 422


def test_a_run_cut_off_by_the_server_stopping_resumes_in_the_next_one(on_backend: Settings, model: ScriptedOpenAIServer) -> None:
    gate = Gate()
    script_tme(model, gate)
    settings = ui_settings(on_backend, model)
    with serve(create_app(settings)) as url, httpx.Client(base_url=url, timeout=30) as http:
        response = start(http, "tme-turn", {"session": "cut", "utterance": "Book a room."})
        assert response.status_code == 202, response.text
        run_id, thread_id = response.json()["run_id"], response.json()["thread_id"]
        assert gate.waiting.wait(WAIT_S)
    # the server stopped while the answer step waited on the model: the run is recorded as interrupted
    with serve(create_app(settings)) as url, httpx.Client(base_url=url, timeout=30) as http:
        cut = http.get(f"/api/runs/{run_id}", params={"namespace": NAMESPACE}).json()
        assert cut["status"] in ("failed", "interrupted") and cut["error"] == "interrupted"
        taken = start(http, "tme-turn", {"session": "cut", "utterance": "Something else."}, thread_id=thread_id)
        assert taken.status_code == 409 and "resume it" in taken.json()["fields"]["thread_id"]
        assert [event["node"] for event in cut["events"] if event["event"] == "end"][:4] == [
            "load",
            "decompose",
            "classify",
            "apply",
        ]
        gate.opened.set()
        resumed = http.post(f"/api/runs/{run_id}/resume", json={"namespace": NAMESPACE})
        assert resumed.status_code == 202, resumed.text
        assert resumed.json()["thread_id"] == thread_id and resumed.json()["run_id"] != run_id
        run = wait_for_run(http, resumed.json()["run_id"], finished)
        assert run["status"] == "completed" and run["resumed"], run["error"]
        assert [event["node"] for event in run["events"] if event["event"] == "end"][0] in ("synthesize", "answer")
        again = http.post(f"/api/runs/{run_id}/resume", json={"namespace": NAMESPACE})
        assert again.status_code == 409


# -- fork ----------------------------------------------------------------------------------------------------


def test_checkpoints_then_a_fork_with_an_edited_field_gives_a_different_output(
    on_backend: Settings, model: ScriptedOpenAIServer
) -> None:
    with serve(create_app(ui_settings(on_backend, model))) as url, httpx.Client(base_url=url, timeout=30) as client:
        forked_with_an_edit(client)


def forked_with_an_edit(client: httpx.Client) -> None:
    run = completed_run(client, "text-stats", {"text": TEXT})
    assert run["outputs"]["total_words"] == 10
    checkpoints = client.get(f"/api/runs/{run['run_id']}/checkpoints", params={"namespace": NAMESPACE}).json()
    assert [checkpoint["step"] for checkpoint in checkpoints] == sorted(checkpoint["step"] for checkpoint in checkpoints)
    assert checkpoints[0]["after"] == ["input"] and not checkpoints[0]["forkable"]
    assert checkpoints[-1]["next"] == [] and not checkpoints[-1]["forkable"]
    [split] = [checkpoint for checkpoint in checkpoints if checkpoint["after"] == ["split"]]
    assert split["forkable"] and split["next"] == ["count", "count", "count"]
    assert split["editable"]["sentences"] == ["Memory that lasts.", "Runs on a schedule.", "Can be trusted."]
    assert split["values"]["text"] == TEXT

    response = client.post(
        f"/api/runs/{run['run_id']}/fork",
        json={
            "namespace": NAMESPACE,
            "checkpoint_id": split["checkpoint_id"],
            "edits": {"sentences": ["One two three.", "Four."]},
        },
    )
    assert response.status_code == 202, response.text
    forked = response.json()
    assert forked["thread_id"] != run["thread_id"] and forked["url"] == f"/runs/{forked['run_id']}?namespace={NAMESPACE}"
    fork = wait_for_run(client, forked["run_id"], finished)
    assert fork["status"] == "completed", fork["error"]
    assert fork["outputs"]["total_words"] == 4
    assert fork["forked_from"]["run_id"] == run["run_id"] and fork["forked_from"]["checkpoint_id"] == split["checkpoint_id"]
    again = client.get(f"/api/runs/{run['run_id']}", params={"namespace": NAMESPACE}).json()
    assert again["outputs"]["total_words"] == 10  # the source thread is untouched


def test_a_bad_fork_is_422_naming_the_field(client: httpx.Client) -> None:
    run = completed_run(client, "text-stats", {"text": TEXT})
    checkpoints = client.get(f"/api/runs/{run['run_id']}/checkpoints", params={"namespace": NAMESPACE}).json()
    [split] = [checkpoint for checkpoint in checkpoints if checkpoint["after"] == ["split"]]

    def fork(checkpoint_id: str, edits: dict[str, Any]) -> httpx.Response:
        body = {"namespace": NAMESPACE, "checkpoint_id": checkpoint_id, "edits": edits}
        return client.post(f"/api/runs/{run['run_id']}/fork", json=body)

    wrong_type = fork(split["checkpoint_id"], {"total_words": "many", "sentencs": []})
    assert wrong_type.status_code == 422
    assert set(wrong_type.json()["fields"]) == {"total_words", "sentencs"}
    assert "sentences" in wrong_type.json()["fields"]["sentencs"]
    unknown = fork("no-such-checkpoint", {})
    assert unknown.status_code == 422 and set(unknown.json()["fields"]) == {"checkpoint_id"}
    at_the_end = fork(checkpoints[-1]["checkpoint_id"], {})
    assert at_the_end.status_code == 422 and "nothing runs after it" in at_the_end.json()["error"]
    assert client.post("/api/runs/no-such-run/fork", json={"namespace": NAMESPACE, "checkpoint_id": "c"}).status_code == 404
    assert [listed["run_id"] for listed in client.get("/api/runs", params={"namespace": NAMESPACE}).json()] == [run["run_id"]]


# -- the bound on runs at once ---------------------------------------------------------------------------------


def test_past_the_bound_on_runs_at_once_a_start_is_429(stored: Settings, model: ScriptedOpenAIServer) -> None:
    gate = Gate()
    script_tme(model, gate)
    with serve(create_app(ui_settings(stored, model, max_runs=1))) as url, httpx.Client(base_url=url, timeout=30) as http:
        first = start(http, "tme-turn", {"session": "one", "utterance": "Hold on."})
        assert first.status_code == 202, first.text
        refused = start(http, "text-stats", {"text": TEXT})
        assert refused.status_code == 429 and "MNEMOFLOW_UI_MAX_RUNS" in refused.json()["error"]
        busy = http.post(f"/api/runs/{first.json()['run_id']}/resume", json={"namespace": NAMESPACE})
        assert busy.status_code == 409 and "running" in busy.json()["error"]  # its thread is not resumed under it
        gate.opened.set()
        assert wait_for_run(http, first.json()["run_id"], finished)["status"] == "completed"
        deadline = time.monotonic() + WAIT_S  # the slot is given back once the run's task has ended
        while (second := start(http, "text-stats", {"text": TEXT})).status_code == 429:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert second.status_code == 202, second.text
        wait_for_run(http, second.json()["run_id"], finished)


# -- Prefect ---------------------------------------------------------------------------------------------------


@pytest.mark.neo4j
@pytest.mark.timeout(900)
def test_a_start_of_a_deployed_graph_becomes_a_prefect_flow_run(
    deployed: Any,
    prefect_server: PrefectServer,
    workers: Callable[..., Worker],
    model: ScriptedOpenAIServer,
    empty_neo4j: str,
) -> None:
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    namespace = f"ui-prefect-{uuid.uuid4().hex[:8]}"
    worker = workers("ui", env=run_env(empty_neo4j, model, namespace))
    settings = ui_settings(settings_for("neo4j", neo4j_uri=empty_neo4j), model).model_copy(update={"namespace": namespace})
    with (
        temporary_settings({PREFECT_API_URL: prefect_server.api_url, PREFECT_LOGGING_TO_API_ENABLED: False}),
        serve(create_app(settings)) as url,
        httpx.Client(base_url=url, timeout=60) as http,
    ):
        assert http.get("/api/graphs/text-stats/form").json()["prefect"] is True
        response = start(http, "text-stats", {"text": TEXT})
        assert response.status_code == 202, response.text
        answer = response.json()
        assert answer["run_id"] is None and answer["namespace"] == namespace and answer["prefect_flow_run_id"]
        assert answer["url"] == f"/runs?namespace={namespace}&thread={answer['thread_id']}"
        assert http.get(answer["url"]).status_code == 200

        flow_run = asyncio.run(wait_final(uuid.UUID(answer["prefect_flow_run_id"]), [worker]))
        assert flow_run.state is not None and flow_run.state.is_completed(), logs([worker])
        assert flow_run.parameters["input"] == {"text": TEXT} and flow_run.parameters["thread_id"] == answer["thread_id"]
        [run] = http.get("/api/runs", params={"namespace": namespace, "thread": answer["thread_id"]}).json()
        assert run["status"] == "completed" and run["graph"] == "text-stats"
        assert run["prefect"] is not None
