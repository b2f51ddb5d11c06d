"""The L2MAC project view and the G-Memory namespace view in a real headless Chromium (Debian's, driven by
Playwright), on data made by the mechanisms' own graphs (``tests/test_ui_mechanisms_l2mac_gmemory.py``): a file at
two versions and their diff, insights by score that expand to their support and contradictions, a query that
expands to its trajectory; stored markup stays text, and no page has console errors or policy violations.

Screenshots ``l2mac-project.png`` (a diff shown) and ``gmemory-insights.png`` go where ``tests/test_ui_browser.py``
puts its own. Plain sync tests: Playwright's sync API cannot run inside a running event loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Browser

from mnemoflow.nodes.gmemory.model import insight_id, query_id
from tests.test_ui_browser import Tab, browser
from tests.test_ui_mechanisms_l2mac_gmemory import (
    GM_NAMESPACE,
    HOSTILE,
    L2_NAMESPACE,
    L2_THREAD,
    MISTAKE,
    RULE_CHECK,
    RULE_GUESS,
    Site,
    serving,
)

__all__ = ["browser"]  # the Chromium fixture, shared with tests/test_ui_browser.py


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with serving(tmp_path_factory.mktemp("ui-browser-mechanisms")) as served:
        yield served


@pytest.fixture
def tab(browser: Browser, site: Site) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        yield Tab(page, site.url)
    finally:
        context.close()


def project(**extra: str | int) -> str:
    return "/mechanisms/l2mac/project?" + urlencode({"namespace": L2_NAMESPACE, "thread": L2_THREAD, **extra})


def assert_not_run(tab: Tab) -> None:
    """The hostile markup stored in a file, an insight or a task never ran, and never became elements."""
    assert tab.evaluate("() => window.__pwned === undefined")
    assert tab.page.locator("main img, main script").count() == 0


def test_the_l2mac_project_shows_a_file_at_any_version_and_a_diff(tab: Tab) -> None:
    tab.open(project())
    assert tab.page.locator("#instructions tbody tr").count() == 2
    assert tab.page.locator("#instructions .status-done").count() == 2
    assert tab.page.locator("#project-task").text_content() == f"Build greet, a tiny greeting module. {HOSTILE}"

    tab.page.locator("#file-tree a[data-path='greet/hello.py']").click()
    tab.page.wait_for_selector("#file-content")
    assert tab.page.locator("#file-version").text_content() == "version 2 of 2"
    assert tab.page.locator("#file-content .code-line").nth(1).text_content() == '    return "Good day, " + name + "."'
    assert tab.page.locator("#version-show").is_hidden()  # picking applies at once

    tab.page.select_option("#version-select", "1")  # the script submits the form
    tab.page.wait_for_url("**version=1**")
    assert tab.page.locator("#file-content .code-line").nth(1).text_content() == '    return "hi " + name'
    assert "against=" not in tab.page.url

    tab.page.select_option("#version-select", "2")
    tab.page.wait_for_url("**version=2**")
    tab.page.select_option("#against-select", "1")
    tab.page.wait_for_selector("#diff")
    assert tab.page.locator("#diff-title").text_content() == "Changes from version 1 to version 2 +1 −1"
    assert tab.page.locator("#diff .diff-removed").all_text_contents() == ['-    return "hi " + name']
    assert tab.page.locator("#diff .diff-added").all_text_contents() == ['+    return "Good day, " + name + "."']
    assert tab.page.locator("#diff .diff-hunk").count() == 1
    colours = tab.evaluate(
        "() => ['.diff-added', '.diff-removed'].map((s) => getComputedStyle(document.querySelector('#diff ' + s)).backgroundColor)"
    )
    assert colours[0] != colours[1] and "rgba(0, 0, 0, 0)" not in colours
    assert tab.page.locator("#file-tree a[aria-current='true']").text_content() == "hello.py"
    tab.shoot("l2mac-project")

    tab.page.locator("#file-tree a[data-path='README.md']").click()
    tab.page.wait_for_selector("#file-content")
    assert tab.page.locator("#file-content .code-line").all_text_contents() == ["# greet", "", HOSTILE]
    assert tab.page.locator("#file-tree li.deleted a").all_text_contents() == ["todo.txt"]
    assert_not_run(tab)
    tab.assert_clean()


def test_the_gmemory_namespace_shows_insights_by_score_and_queries_with_their_trajectories(tab: Tab) -> None:
    tab.open(f"/mechanisms/gmemory?namespace={GM_NAMESPACE}")
    insights = tab.page.locator("details.gm-insight")
    assert insights.count() == 3
    scores = [int(score) for score in tab.page.locator(".gm-insight .gm-score").all_text_contents()]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == 3
    assert insights.first.locator("summary .gm-text").text_content() == RULE_CHECK
    assert insights.last.locator("summary > .status").text_content() == "pruned"

    insights.first.locator("summary").click()
    supported = insights.first.locator(".gm-supported li")
    contradicted = insights.first.locator(".gm-contradicted li")
    assert supported.count() >= 4 and contradicted.count() >= 2
    assert [text.split()[:2] for text in contradicted.all_text_contents()][:2] == [["#11", "failed"], ["#7", "failed"]]
    assert insights.first.locator(".gm-credits tbody tr").count() >= 3

    failed = tab.page.locator("details.gm-query", has=tab.page.locator("summary .status-failed")).first
    assert not failed.locator(".gm-trajectory").is_visible()
    failed.locator("summary").click()
    assert "solver -> critic: The answer is 42." in (failed.locator(".gm-trajectory").text_content() or "")
    assert failed.locator(".gm-mistake").text_content() == MISTAKE
    assert_not_run(tab)
    tab.shoot("gmemory-insights")
    tab.assert_clean()

    tab.page.select_option("#gm-status", "pruned")  # the script applies the filter
    tab.page.wait_for_url("**status=pruned**")
    assert tab.page.locator("details.gm-insight summary .gm-text").all_text_contents() == [RULE_GUESS]
    tab.assert_clean()


def test_a_query_page_shows_its_trajectory_and_links_back_to_its_insights(tab: Tab) -> None:
    tab.open("/mechanisms/gmemory/query?" + urlencode({"namespace": GM_NAMESPACE, "id": query_id(GM_NAMESPACE, "t7")}))
    rows = tab.page.locator("#gm-utterances tbody tr")
    assert rows.count() >= 2
    assert rows.first.locator(".gm-route").text_content() == "solver → critic"
    assert rows.first.locator(".gm-text").text_content() == "The answer is 42."
    assert tab.page.locator("#gm-used li").count() == 3 and tab.page.locator("#gm-contradicts li").count() == 3
    assert_not_run(tab)
    tab.assert_clean()

    tab.page.locator("#gm-used a", has_text="Check the figures twice").click()  # opens the insight on the namespace page
    target = f"insight-{insight_id(GM_NAMESPACE, RULE_CHECK)}"
    tab.page.wait_for_url(f"**#{target}")
    assert tab.evaluate("(id) => document.getElementById(id).open", target)
    tab.assert_clean()
