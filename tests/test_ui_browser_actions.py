"""Starting, resuming and forking runs in a real headless Chromium (Debian's, driven by Playwright), as a user would:
the graph page's start form opens the live run page and follows the run to its end, a refused field shows its message
beside it, a thread whose run was killed (SIGKILL, a real ``mnemoflow run`` process) or cut off when the server stopped
resumes from its run's page, and a fork of a step with an edited
field gives the new thread a different output. Every page stays free of console errors and policy violations.

Skips without Chromium like ``tests/test_ui_browser.py``, whose fixtures and ``Tab`` it uses; screenshots go to the
same folder (``start-run.png``, ``fork.png``).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser

from mnemoflow.flows.server.app import create_app
from mnemoflow.graphs.runner import RUN_KIND, STALLED_AFTER_S
from mnemoflow.memory.records import stable_id
from mnemoflow.settings import Settings
from tests.conftest import cli_environment
from tests.support.openai_server import ScriptedOpenAIServer
from tests.support.web_server import serve
from tests.test_ui import open_store, run_async
from tests.test_ui_actions import NAMESPACE, TEXT, WAIT_S, Gate, finished, script_tme, start, ui_settings, wait_for_run
from tests.test_ui_actions import model as model  # the scripted model, the SQLite store and the server of those tests
from tests.test_ui_actions import site as site
from tests.test_ui_actions import stored as stored
from tests.test_ui_browser import Tab
from tests.test_ui_browser import browser as browser  # the module's Chromium, shared with this module's tests

STATUS_IS = "(status) => document.getElementById('run-status').textContent === status"


@pytest.fixture
def tabs(browser: Browser) -> Iterator[list[Tab]]:
    """Open tabs with ``tabs.append(new_tab(browser, url))``; their contexts close when the test ends."""
    opened: list[Tab] = []
    yield opened
    for tab in opened:
        tab.page.context.close()


def new_tab(browser: Browser, base: str) -> Tab:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
    page = context.new_page()
    page.set_default_timeout(WAIT_S * 1000)
    return Tab(page, base)


@pytest.fixture
def tab(browser: Browser, site: str, tabs: list[Tab]) -> Tab:
    tabs.append(new_tab(browser, site))
    return tabs[-1]


def forgive_refusals(tab: Tab, status: int) -> None:
    """The console reports each answer ``status`` to the page's fetches as an error: here they were the point."""
    expected = f"console: Failed to load resource: the server responded with a status of {status}"
    tab.errors = [error for error in tab.errors if not error.startswith(expected)]


def test_start_a_run_from_the_form_and_follow_it_live(tab: Tab, model: ScriptedOpenAIServer) -> None:
    gate = Gate()
    script_tme(model, gate)
    tab.open("/graphs/tme-turn")
    tab.page.wait_for_selector("#start-field-utterance")
    assert tab.page.locator("#start-form > .field-row").evaluate_all("rows => rows.map(row => row.dataset.field)") == [
        "session", "utterance"
    ]  # fmt: skip
    assert tab.page.locator('.field-row[data-field="session"] .required-mark').count() == 1
    assert "task memory" in (tab.page.locator('.field-row[data-field="session"] .field-description').text_content() or "")
    assert tab.page.locator(".more-fields").get_attribute("open") is None  # the other state fields are folded
    assert tab.page.locator("#start-field-turn").input_value() == "0"
    assert tab.page.locator("#start-field-namespace").input_value() == NAMESPACE
    tab.page.fill("#start-field-session", "lisbon")
    tab.page.fill("#start-field-utterance", "Plan a trip to Lisbon in May.")
    tab.shoot("start-run")

    tab.page.click("#start-submit")
    tab.page.wait_for_url("**/runs/*?namespace=*")
    tab.page.wait_for_function(STATUS_IS, arg="running")
    assert tab.page.locator("#live-note").is_visible()
    assert gate.waiting.wait(WAIT_S)  # the answer step waits on the model: the page shows the steps before it
    tab.page.wait_for_function("() => Number(document.getElementById('run-steps').textContent) >= 4")
    assert tab.page.locator("#run-status").text_content() == "running"
    assert tab.page.locator("#resume-button").is_hidden() and tab.page.locator("#fork-panel").is_hidden()
    gate.opened.set()

    tab.page.wait_for_function(STATUS_IS, arg="completed")
    tab.page.wait_for_function("() => document.body.textContent.includes('Answered:')")
    assert tab.page.locator("#live-note").is_hidden()
    assert tab.page.locator("#fork-panel").is_visible() and tab.page.locator("#resume-button").is_hidden()
    tab.assert_clean()


def test_a_refused_field_shows_its_message_beside_it(tab: Tab) -> None:
    tab.open("/graphs/comorag-qa")
    tab.page.wait_for_selector("#start-field-question")
    tab.page.fill("#start-field-question", "Who kept the ledger?")
    tab.page.fill("#start-field-book_id", "missing-book")
    tab.page.click(".more-fields summary")
    tab.page.fill("#start-field-max_cycles", "99")
    tab.page.fill("#start-field-options", "{not json")
    tab.page.click(".more-fields summary")  # folded again: a message on a folded field unfolds it
    tab.page.click("#start-submit")
    options_error = tab.page.locator('.field-row[data-field="options"] .field-error')
    options_error.wait_for(state="visible")
    assert "not JSON" in (options_error.text_content() or "")  # caught in the page: nothing was sent

    tab.page.fill("#start-field-options", '{"A": "Corvin Ashe"}')
    tab.page.click("#start-submit")
    cycles_error = tab.page.locator('.field-row[data-field="max_cycles"] .field-error')
    cycles_error.wait_for(state="visible")
    assert "less than or equal to 20" in (cycles_error.text_content() or "")
    assert options_error.is_hidden()
    assert "1 field(s) to fix" in (tab.page.locator("#start-error").text_content() or "")

    tab.page.fill("#start-field-max_cycles", "2")
    tab.page.click("#start-submit")
    book_error = tab.page.locator('.field-row[data-field="book_id"] .field-error')
    book_error.wait_for(state="visible")
    assert "missing-book" in (book_error.text_content() or "")  # the precondition: the book is not indexed
    assert cycles_error.is_hidden() and tab.page.url.endswith("/graphs/comorag-qa")
    forgive_refusals(tab, 422)
    tab.assert_clean()


def age_record(path: Path, run_id: str, seconds: float) -> None:
    """Make a run's record ``seconds`` older, as if its process had written nothing for that long."""

    async def age() -> None:
        store = open_store(path)
        await store.setup()
        try:
            [record] = await store.get_nodes(NAMESPACE, [stable_id(NAMESPACE, RUN_KIND, run_id)])
            assert record is not None
            recorded_at = float(record.properties["recorded_at"]) - seconds
            await store.upsert_nodes([record.model_copy(update={"properties": {**record.properties, "recorded_at": recorded_at}})])
        finally:
            await store.close()

    run_async(age)


MNEMOFLOW = str(Path(sys.executable).with_name("mnemoflow"))


@pytest.mark.subprocess
def test_resume_a_thread_whose_run_was_killed(
    tab: Tab, model: ScriptedOpenAIServer, tmp_path: Path
) -> None:
    gate = Gate()
    script_tme(model, gate)
    environment = cli_environment("sqlite", tmp_path, namespace=NAMESPACE, model_url=model.base_url)  # the site's store
    utterance = json.dumps({"session": "killed", "utterance": "Book a room near the river."})
    command = [MNEMOFLOW, "run", "tme-turn", "--input", utterance, "--thread", "killed-thread"]
    cli = subprocess.Popen(command, env=environment, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert gate.waiting.wait(WAIT_S), "the run never reached its answer step"
        time.sleep(1.0)  # the earlier steps' checkpoints are saved while the answer step waits (LangGraph's async durability)
        cli.send_signal(signal.SIGKILL)
        assert cli.wait(timeout=30) == -signal.SIGKILL
    finally:
        if cli.poll() is None:
            cli.kill()
    gate.opened.set()
    with httpx.Client(base_url=tab.base, timeout=30) as http:
        [killed] = http.get("/api/runs", params={"namespace": NAMESPACE, "thread": "killed-thread"}).json()
    assert killed["status"] == "running"  # the killed run's last word
    age_record(tmp_path / "memory.db", killed["run_id"], STALLED_AFTER_S + 5)  # as if a minute had passed since

    with httpx.Client(base_url=tab.base, timeout=30) as http:
        [killed] = http.get("/api/runs", params={"namespace": NAMESPACE, "thread": "killed-thread"}).json()
    assert killed["status"] == "stalled" and killed["graph"] == "tme-turn"
    tab.open(f"/runs/{killed['run_id']}?namespace={NAMESPACE}")
    assert tab.page.locator("#run-status").text_content() == "stalled"
    tab.page.locator("#resume-button").click()
    tab.page.wait_for_url(lambda address: "/runs/" in address and killed["run_id"] not in address)
    resumed_id = tab.page.locator("#run").get_attribute("data-run-id")
    with httpx.Client(base_url=tab.base, timeout=30) as http:
        resumed = wait_for_run(http, str(resumed_id), finished)
    assert resumed["status"] == "completed", resumed["error"]
    tab.page.wait_for_function(STATUS_IS, arg="completed")
    assert resumed["resumed"] and resumed["thread_id"] == "killed-thread"
    assert str(resumed["outputs"]["response"]).startswith("Answered:")
    assert [event["node"] for event in resumed["events"]] == ["answer", "persist"]  # nothing before the kill runs again
    tab.assert_clean()


def test_resume_a_thread_cut_off_when_the_server_stopped(
    browser: Browser, tabs: list[Tab], stored: Settings, model: ScriptedOpenAIServer
) -> None:
    gate = Gate()
    script_tme(model, gate)
    settings = ui_settings(stored, model)
    with serve(create_app(settings)) as url, httpx.Client(base_url=url, timeout=30) as http:
        response = start(http, "tme-turn", {"session": "cut", "utterance": "Book a room near the river."})
        assert response.status_code == 202, response.text
        run_id = response.json()["run_id"]
        assert gate.waiting.wait(WAIT_S)  # stopped while the answer step waits on the model
    gate.opened.set()

    with serve(create_app(settings)) as url:
        tabs.append(tab := new_tab(browser, url))
        tab.open(f"/runs/{run_id}?namespace={NAMESPACE}")
        assert tab.page.locator("#run-status").text_content() in ("failed", "interrupted")
        assert "interrupted" in (tab.page.locator("#run-error-text").text_content() or "")
        resume = tab.page.locator("#resume-button")
        assert resume.is_visible()
        resume.click()
        tab.page.wait_for_url(lambda address: "/runs/" in address and run_id not in address)
        tab.page.wait_for_function(STATUS_IS, arg="completed")
        assert tab.page.locator("#run-origin").is_visible()  # "Resumed: ... the thread's earlier runs"
        assert resume.is_hidden()

        resumed_id = tab.page.locator("#run").get_attribute("data-run-id")
        with httpx.Client(base_url=url, timeout=30) as http:
            run = wait_for_run(http, str(resumed_id), finished)
            assert run["resumed"] and str(run["outputs"]["response"]).startswith("Answered:")
            tab.open(f"/runs/{run_id}?namespace={NAMESPACE}")  # the cut-off run: its thread has nothing left to run
            tab.page.locator("#resume-button").click()
            tab.page.locator("#actions-error").wait_for(state="visible")
            assert "nothing left to run" in (tab.page.locator("#actions-error").text_content() or "")
        forgive_refusals(tab, 409)
        tab.assert_clean()


def test_fork_a_step_with_an_edited_field(tab: Tab, site: str) -> None:
    with httpx.Client(base_url=site, timeout=30) as http:
        response = start(http, "text-stats", {"text": TEXT})
        assert response.status_code == 202, response.text
        source = wait_for_run(http, response.json()["run_id"], finished)
    assert source["status"] == "completed" and source["outputs"]["total_words"] == 10

    tab.open(f"/runs/{source['run_id']}?namespace={NAMESPACE}")
    tab.page.click("#fork-panel summary")
    tab.page.wait_for_selector("#fork-checkpoint")
    labels = tab.page.locator("#fork-checkpoint option").all_text_contents()
    assert labels[0].startswith("step -1: after input") and "nothing runs after it" in labels[-1]
    after_split = tab.evaluate(
        "() => [...document.querySelectorAll('#fork-checkpoint option')].find(o => o.textContent.includes('after split')).value"
    )
    tab.page.select_option("#fork-checkpoint", after_split)
    sentences = tab.page.locator("#fork-field-sentences")
    assert '"Memory that lasts."' in sentences.input_value()
    sentences.fill('["One two three.", "Four."]')
    tab.shoot("fork")

    tab.page.click("#fork-submit")
    tab.page.wait_for_url(lambda address: "/runs/" in address and source["run_id"] not in address)
    tab.page.wait_for_function(STATUS_IS, arg="completed")
    origin = tab.page.locator("#run-origin")
    assert "Forked from run" in (origin.text_content() or "") and source["run_id"] in (origin.text_content() or "")
    fork_id = str(tab.page.locator("#run").get_attribute("data-run-id"))
    with httpx.Client(base_url=site, timeout=30) as http:
        fork = wait_for_run(http, fork_id, finished)
    assert fork["outputs"]["total_words"] == 4 and fork["thread_id"] != source["thread_id"]
    tab.assert_clean()
