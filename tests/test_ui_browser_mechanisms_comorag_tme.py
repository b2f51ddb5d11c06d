"""The ComoRAG and TME views in a real headless Chromium (Debian's, through Playwright, as ``tests/test_ui_browser.py``):
each page loads without console errors or Content-Security-Policy violations on memory the mechanisms' graphs made,
stored markup stays text, the workspace's evidence opens, an open question's page follows its run, and the
conversation page moves between turns by its picker, the arrow keys and its step links. Screenshots:
``comorag-workspace.png`` and ``tme-session.png``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from mnemoflow.flows.server.app import create_app
from mnemoflow.flows.server.ui.mechanisms import comorag, tme
from mnemoflow.nodes.comorag.model import question_id
from mnemoflow.nodes.comorag.workspace import question_record
from mnemoflow.nodes.tme.forest import node_key, slot_key
from tests.conftest import new_store
from tests.support.web_server import serve
from tests.test_ui import run_async
from tests.test_ui_browser import Tab
from tests.test_ui_browser import browser as browser  # the module's Chromium, shared with this module's tests
from tests.test_ui_browser import tab as tab  # a fresh page per test, on this module's site
from tests.test_ui_mechanisms_comorag_tme import BOOK, FINAL, HOSTILE, HOSTILE_SESSION, QUESTION, SCRIPT, Made, make_memory


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Made:
    return make_memory("sqlite", tmp_path_factory.mktemp("mechanisms-browser"))


@pytest.fixture(scope="module")
def site(made: Made) -> Iterator[str]:
    with serve(create_app(made.settings)) as url:
        yield url


def pwned(tab: Tab) -> bool:
    """Whether stored markup ran: each hostile value sets ``window.__pwned`` if it ever executes."""
    return bool(tab.evaluate("() => window.__pwned !== undefined"))


def test_comorag_workspace(tab: Tab, made: Made) -> None:
    tab.open(comorag.question_url(made.namespace, made.question_id))
    page = tab.page
    assert page.locator("#question-text").text_content() == QUESTION
    assert page.locator("#question-status").text_content() == "answered"
    assert page.locator("section.cr-attempt").count() == 2
    assert page.locator("#attempt-0 .status").first.text_content() == "impasse"
    assert page.locator("#final-answer").inner_text() == FINAL
    cues = page.locator(".cr-unit .cr-cue")
    assert cues.count() >= 4 and HOSTILE in (cues.first.text_content() or "")
    assert page.locator("#fusion-1 .cr-sources li").count() == 2
    assert not pwned(tab)
    page.locator("#attempt-1 details.cr-evidence > summary").first.click()
    assert page.locator("#attempt-1 details.cr-evidence[open] .cr-evidence-text").first.is_visible()
    tab.shoot("comorag-workspace")

    toggle = page.locator("#evidence-toggle")
    assert toggle.is_visible() and toggle.text_content() == "Show all evidence"
    toggle.click()
    folds = page.locator("details.cr-evidence")
    assert folds.count() == page.locator("details.cr-evidence[open]").count() > 1
    assert toggle.text_content() == "Hide all evidence"
    toggle.click()
    assert page.locator("details.cr-evidence[open]").count() == 0
    tab.assert_clean()


def test_comorag_books_lead_to_the_workspace(tab: Tab, made: Made) -> None:
    tab.open(f"/mechanisms/comorag?namespace={made.namespace}")
    tab.page.locator("#comorag-books a", has_text=BOOK).click()
    tab.page.wait_for_selector("#book-questions")
    assert tab.page.locator("#book-index tbody tr").count() == 5
    tab.page.locator("#book-questions a").first.click()
    tab.page.wait_for_selector("#attempt-1")
    assert tab.page.locator("#question-text").text_content() == QUESTION
    assert not pwned(tab)
    tab.assert_clean()


def test_a_question_run_page_links_to_its_workspace(tab: Tab, made: Made) -> None:
    tab.open(f"/runs/{made.qa_run_id}?namespace={made.namespace}")
    tab.page.locator("#run-links a", has_text="ComoRAG question workspace").click()
    tab.page.wait_for_selector("#attempt-1")
    assert tab.page.locator("#question-text").text_content() == QUESTION
    tab.assert_clean()


def test_an_open_question_follows_its_run(tab: Tab, made: Made) -> None:
    """While a question is open its page checks the workspace and reloads when it changes: here the question closes."""
    text = "Where did Jessamy Pell lead her caravans?"
    record_id = question_id(made.namespace, BOOK, text, "live-thread")
    path = made.settings.store.sqlite_path

    def write(status: str, final_answer: str) -> None:
        async def upsert() -> None:
            store = new_store("sqlite", sqlite_path=path)
            await store.setup()
            try:
                record = question_record(
                    made.namespace,
                    record_id,
                    book_id=BOOK,
                    question=text,
                    options={},
                    status=status,
                    final_answer=final_answer,
                    cycles=0,
                )
                await store.upsert_nodes([record])
            finally:
                await store.close()

        run_async(upsert)

    write("open", "")
    tab.open(comorag.question_url(made.namespace, record_id))
    assert tab.page.locator("#question-status").text_content() == "open"
    assert tab.page.locator("#no-attempts").is_visible()
    write("answered", "Along the Needle path")
    tab.page.wait_for_selector("#question-status.status-answered", timeout=20_000)
    assert tab.page.locator("#final-answer").inner_text() == "Along the Needle path"
    tab.assert_clean()


def test_tme_conversation(tab: Tab, made: Made) -> None:
    page = tab.page
    tab.open(tme.session_url(made.namespace, "cooking", turn=5, step="cook dinner/shared vegetable"))
    assert page.locator("#forest h2").text_content() == "Task forest after turn 5"
    assert page.locator("#turn-list li[aria-current='true'] a").text_content() == "Turn 5"
    marks = page.locator("#stale-list li")
    assert marks.count() == 2 and "'shared vegetable' was updated at turn 5" in (marks.first.text_content() or "")
    assert page.locator("#forest-tree .tme-step-stale").count() == 2
    assert page.locator("#versions tbody tr").count() == 2
    assert page.locator("#versions tr.tme-version-shown td").nth(1).text_content() == "mushrooms"
    assert page.locator("#turn-show").is_hidden()  # the picker submits itself
    tab.shoot("tme-session")

    page.locator("#turn-select").select_option("4")
    page.wait_for_url(re.compile(r"turn=4"))
    assert page.locator("#forest h2").text_content() == "Task forest after turn 4"
    assert page.locator("#stale-list").count() == 0  # nothing was stale yet
    assert page.locator("#versions tr.tme-version-shown td").nth(1).text_content() == "celery"  # the step stays picked
    page.keyboard.press("ArrowRight")
    page.wait_for_url(re.compile(r"turn=5"))
    page.keyboard.press("ArrowLeft")
    page.wait_for_url(re.compile(r"turn=4"))
    page.locator("#forest-tree a[data-step='cook dinner/soup']").click()
    page.wait_for_url(re.compile(r"step=cook\+dinner%2Fsoup"))
    assert (page.locator("#step-history h2").text_content() or "").startswith("History of soup")
    tab.assert_clean()


def test_tme_markup_stays_text(tab: Tab, made: Made) -> None:
    tab.open(tme.session_url(made.namespace, HOSTILE_SESSION, step=node_key(slot_key(SCRIPT), "destination")))
    page = tab.page
    root = page.locator("#forest-tree > li > .tme-slot a").first
    assert root.text_content() == SCRIPT
    assert page.locator("#stale-list li").count() == 1
    assert HOSTILE in (page.locator("#versions tbody").text_content() or "")
    assert not pwned(tab)
    tab.assert_clean()
