"""The run page and the runs list in a real headless Chromium (Debian's, through Playwright): a run's input and output,
a step opened to its diff and a model call's prompt and reply, a live run followed to its end with an opened step kept
open, the runs list's filters, a thread group opened in place, and a list waiting for a thread's first run.

Shares the browser, the page helper and the screenshot folder with ``tests/test_ui_browser.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mnemoflow.flows.server.app import create_app
from tests.support.web_server import serve
from tests.test_ui import event, settings_at, write_run
from tests.test_ui_browser import Tab
from tests.test_ui_browser import browser as browser  # the module's Chromium, shared with this module's tests
from tests.test_ui_browser import tab as tab  # a fresh page per test, on this module's site
from tests.test_ui_runs import LONG, RICH_EVENTS, T0

NAMESPACE = "browser-runs"
OTHER = "browser-runs-other"


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ui-browser-runs") / "memory.db"
    flow_run = "0b7c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3"
    prefect = {"prefect_flow_run_id": flow_run, "prefect_flow_run_url": f"http://127.0.0.1:4200/runs/flow-run/{flow_run}"}
    for index in range(3):
        write_run(path, NAMESPACE, f"turn-{index}", "failed" if index == 1 else "completed", [event("load")], graph="tme-turn",
                  thread_id="chat-7", started_at=T0 + index, annotations=prefect if index == 2 else {})  # fmt: skip
    write_run(path, NAMESPACE, "stats", "completed", [event("split")], started_at=T0 + 10, annotations=prefect)
    write_run(path, OTHER, "other-stats", "completed", [event("split")], started_at=T0 + 11)
    write_run(
        path, NAMESPACE, "explained", "completed", RICH_EVENTS[:3], started_at=T0 + 20,
        input={"text": {"$text": LONG[:500], "$chars": len(LONG)}, "min_length": 2},
        outputs={"total_words": 9, "rounds": 3, "notes": ["round 1: 9 words", "round 2: 9 words", "round 3: 9 words"],
                 "embedding": {"$vector": 384}},
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def site(db: Path) -> Iterator[str]:
    with serve(create_app(settings_at(db))) as url:
        yield url


def open_run(tab: Tab, run_id: str) -> None:
    tab.open(f"/runs/{run_id}?namespace={NAMESPACE}")
    tab.page.wait_for_selector('#run[data-ready="true"]')


def test_a_run_page_shows_input_output_a_steps_diff_and_a_model_call(tab: Tab) -> None:
    open_run(tab, "explained")
    page = tab.page
    input_box = page.locator("#run-input")
    assert "(1,280 chars)" in (input_box.text_content() or "") and "min_length" in (input_box.text_content() or "")
    outputs = page.locator("#run-outputs")
    assert "vector of 384 numbers" in (outputs.text_content() or "") and "round 3: 9 words" in (outputs.text_content() or "")
    assert page.locator("#run-input details.value-text pre").is_hidden()  # the long text is folded
    page.locator("#run-input details.value-text summary").click()
    assert "The caravan rested at the ford." in (page.locator("#run-input details.value-text pre").text_content() or "")
    assert "… 780 more chars not kept in the trace" in (input_box.text_content() or "")

    assert page.locator("#steps-body tr.step").count() == 3 and page.locator("tr.step-detail").count() == 0
    page.locator("#step-2 button.toggle").click()  # count: a merged field
    diff = page.locator("#step-detail-2 table.diff")
    assert "word_counts" in (diff.text_content() or "") and diff.locator(".badge-merged").is_visible()

    page.locator("#step-3 button.toggle").click()
    detail = page.locator("#step-detail-3")
    assert page.locator("#step-3 button.toggle").get_attribute("aria-expanded") == "true"
    assert "vector of 384 numbers" in (detail.locator("table.diff").text_content() or "")
    assert detail.locator(".badge-unchanged").is_visible()
    call = detail.locator("details.call")
    summary = call.locator("summary").text_content() or ""
    assert "structured" in summary and "Note" in summary and "12 → 4 tokens" in summary and "1 retry" in summary
    assert call.locator(".call-body").is_hidden()
    call.locator("summary").click()
    assert call.locator(".message.role-system").text_content() == "systemYou write one note per round."
    user = call.locator(".message.role-user")
    assert "Note the total: <img src=x onerror=alert(1)>" in (user.text_content() or "") and user.locator("img").count() == 0
    assert '{"note": "round 1: 9 words"}' in (call.locator(".call-body").text_content() or "")
    tab.shoot("run-detail")
    tab.assert_clean()


def test_a_failed_runs_error_names_its_step_and_opens_it(tab: Tab, db: Path) -> None:
    write_run(db, NAMESPACE, "broken", "failed", RICH_EVENTS, started_at=T0 + 30, error="the store refused")
    open_run(tab, "broken")
    page = tab.page
    assert page.locator("#run-error-step").text_content() == " in step 4, remember"
    page.locator("#run-error-step a").click()
    page.wait_for_selector("#step-detail-4")
    detail = page.locator("#step-detail-4")
    assert "the store refused <script>alert(1)</script>" in (detail.text_content() or "") and detail.locator("script").count() == 0
    assert detail.locator("details.call .badge-error").is_visible() and "3 more model calls" in (detail.text_content() or "")
    tab.assert_clean()


def test_a_live_run_page_follows_the_run_and_keeps_open_steps_open(tab: Tab, db: Path) -> None:
    write_run(db, NAMESPACE, "live", "running", RICH_EVENTS[:1], input={"text": "The salt road ran north."})
    open_run(tab, "live")
    page = tab.page
    assert page.locator("#run-status").text_content() == "running" and page.locator("#live-note").is_visible()
    assert page.locator("#run-outputs").text_content() == "Not yet: the run is still going."
    page.locator("#step-1 button.toggle").click()
    page.wait_for_selector("#step-detail-1")
    page.evaluate("() => { document.getElementById('step-1').dataset.mark = 'kept'; }")

    write_run(db, NAMESPACE, "live", "running", RICH_EVENTS[:3], input={"text": "The salt road ran north."})
    page.wait_for_function("() => document.querySelectorAll('#steps-body tr.step').length === 3")
    assert page.locator("#step-1").get_attribute("data-mark") == "kept"  # the row was kept, not redrawn
    assert page.locator("#step-detail-1").is_visible()

    write_run(db, NAMESPACE, "live", "completed", RICH_EVENTS[:3], input={"text": "The salt road ran north."},
              outputs={"total_words": 9})  # fmt: skip
    page.wait_for_function("() => document.getElementById('run-status').textContent === 'completed'")
    page.wait_for_function("() => document.getElementById('run-outputs').textContent.includes('total_words')")
    assert page.locator("#live-note").is_hidden() and page.locator("#run").get_attribute("data-live") == "false"
    assert page.locator("#step-detail-1").is_visible() and page.locator("#step-1").get_attribute("data-mark") == "kept"
    tab.assert_clean()


def test_the_runs_list_filters_and_opens_a_thread_group(tab: Tab) -> None:
    tab.open("/runs")
    page = tab.page

    def filter_by(**fields: str) -> None:
        for name, value in fields.items():
            if name == "thread":
                page.fill('#run-filters input[name="thread"]', value)
            else:
                page.select_option(f'#run-filters select[name="{name}"]', value)
        with page.expect_navigation(wait_until="networkidle"):
            page.locator('#run-filters button[type="submit"]').click()

    filter_by(namespace=NAMESPACE)
    assert f"namespace={NAMESPACE}" in page.url and page.locator("#runs a[href^='/runs/other-stats']").count() == 0
    group = page.locator("tbody.thread-group")
    assert group.count() == 1 and page.locator("tbody.single-run").count() >= 2
    runs = group.locator("tr.thread-run")
    assert runs.count() == 3 and all(runs.nth(index).is_hidden() for index in range(3))
    toggle = group.locator("tr.thread-row button.toggle")
    assert "3 runs" in (toggle.text_content() or "")
    assert group.locator("tr.thread-row .status").text_content() == "completed"
    toggle.click()
    assert all(runs.nth(index).is_visible() for index in range(3)) and toggle.get_attribute("aria-expanded") == "true"
    assert [runs.nth(index).locator("td").first.text_content() for index in range(3)] == ["turn-2", "turn-1", "turn-0"]
    assert runs.first.locator("td.prefect a").get_attribute("href") == (
        "http://127.0.0.1:4200/runs/flow-run/0b7c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3"
    )
    tab.shoot("runs")
    toggle.click()
    assert all(runs.nth(index).is_hidden() for index in range(3))

    filter_by(graph="tme-turn")
    assert page.locator("tbody.thread-group").count() == 1 and page.locator("tbody.single-run").count() == 0
    filter_by(thread="chat-7", status="failed")
    assert page.locator("#runs tr.run-row").count() == 1 and page.locator("#runs a code").first.text_content() == "turn-1"
    tab.assert_clean()


def test_a_list_filtered_to_a_thread_without_runs_waits_for_its_first(tab: Tab, db: Path) -> None:
    tab.open(f"/runs?namespace={NAMESPACE}&thread=started-by-prefect")
    page = tab.page
    assert "No runs of thread" in (page.locator("#runs-waiting").text_content() or "")
    write_run(db, NAMESPACE, "from-prefect", "running", [], thread_id="started-by-prefect", started_at=T0 + 40)
    page.wait_for_selector("#runs a[href^='/runs/from-prefect']", timeout=20_000)
    assert page.locator("#runs-waiting").count() == 0
    tab.assert_clean()
