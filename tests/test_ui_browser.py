"""The web UI in a real headless Chromium (Debian's, driven by Playwright): pages load without console errors or
violations of the Content-Security-Policy, diagrams render as SVG, a run page marks visited nodes and follows a live
run, the memory explorer expands on click.

Skips without Chromium (``MNEMOFLOW_CHROMIUM`` overrides ``/usr/bin/chromium``), except when
``MNEMOFLOW_REQUIRE_BROWSER=1`` (CI), where a missing browser fails. Screenshots go to the folder named by
``MNEMOFLOW_SCREENSHOTS`` (``make screenshots`` sets ``docs/screenshots`` for the README), else to a temporary
folder, so a test run leaves the work tree alone. Plain sync tests: Playwright's sync API cannot run inside a
running event loop.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright
from playwright.sync_api import Error as PlaywrightError
from pydantic import SecretStr

from mnemoflow.flows.server.app import create_app
from mnemoflow.flows.server.headers import CONTENT_SECURITY_POLICY
from mnemoflow.flows.server.ui import pages
from mnemoflow.graphs import library_graphs
from mnemoflow.settings import UISettings
from tests.support.web_server import serve
from tests.test_ui import HUB_NEIGHBOURS, NAMESPACE, Seeded, event, seed, settings_at, write_run

SCREENSHOTS = Path(os.environ.get("MNEMOFLOW_SCREENSHOTS") or tempfile.mkdtemp(prefix="mnemoflow-screenshots-"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CSP_LISTENER = """
(() => {
  window.__mnemoflowCspViolations = [];
  document.addEventListener("securitypolicyviolation", (event) => {
    const violation = {
      directive: event.effectiveDirective,
      blocked: event.blockedURI,
      source: `${event.sourceFile}:${event.lineNumber}`,
      sample: event.sample,
      page: document.location.pathname + document.location.search,
    };
    window.__mnemoflowCspViolations.push(violation);
    if (window.mnemoflowCspViolation) window.mnemoflowCspViolation(violation);
  }, true);
})();
"""
"""Runs in every document before its own scripts (through the DevTools protocol, so the policy does not apply to it):
records each ``securitypolicyviolation`` event in the page and hands it to the test."""


def browser_required() -> bool:
    """CI sets MNEMOFLOW_REQUIRE_BROWSER=1: there a missing Chromium fails the run instead of skipping."""
    return os.environ.get("MNEMOFLOW_REQUIRE_BROWSER", "").lower() in ("1", "true", "yes")


def _unavailable(reason: str) -> None:
    if browser_required():
        pytest.fail(f"MNEMOFLOW_REQUIRE_BROWSER is set but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = Path(os.environ.get("MNEMOFLOW_CHROMIUM", "/usr/bin/chromium"))
    if not chromium.exists():
        _unavailable(f"no Chromium at {chromium} (set MNEMOFLOW_CHROMIUM)")
    if pages.vendor_missing():
        _unavailable(f"the front-end libraries are not installed ({', '.join(pages.vendor_missing())}): run `make ui`")
    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        except PlaywrightError as exc:
            _unavailable(f"Chromium at {chromium} did not start: {exc}")
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    return seed(tmp_path_factory.mktemp("ui-browser") / "memory.db")


@pytest.fixture(scope="module")
def site(seeded: Seeded) -> Iterator[str]:
    with serve(create_app(settings_at(seeded.path))) as url:
        yield url


class Tab:
    """A page that records console errors, uncaught exceptions and Content-Security-Policy violations."""

    def __init__(self, page: Page, base: str) -> None:
        self.page = page
        self.base = base
        self.errors: list[str] = []
        self.violations: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))
        page.expose_function("mnemoflowCspViolation", self._violation)
        page.add_init_script(CSP_LISTENER)

    def _violation(self, violation: dict[str, str]) -> None:
        self.violations.append(
            f"{violation['page']}: {violation['directive']} refused {violation['blocked'] or 'inline'}"
            f" (from {violation['source']}) {violation['sample']}".rstrip()
        )

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text} ({message.location.get('url', '')})")

    def open(self, path: str, status: int = 200) -> None:
        """Go to ``path`` (after the violations of the page left behind are in); it must answer ``status`` under
        the server's policy, or the absence of violations would prove nothing."""
        self.settle()
        response = self.page.goto(self.base + path, wait_until="networkidle")
        assert response is not None and response.status == status, f"{path}: {response and response.status}"
        assert response.headers.get("content-security-policy") == CONTENT_SECURITY_POLICY, path
        if status != 200:  # the console reports the page's own status as an error: this one was expected
            expected = f"console: Failed to load resource: the server responded with a status of {status}"
            self.errors = [error for error in self.errors if not (error.startswith(expected) and response.url in error)]

    def shoot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

    def settle(self) -> None:
        """Let the events of violations that already happened fire (they are queued as tasks in the page), and
        their calls into the test arrive in :attr:`violations` (one more round trip to the page)."""
        self.page.evaluate("() => new Promise((resolve) => setTimeout(resolve, 50))")
        self.page.evaluate("() => (window.__mnemoflowCspViolations || []).length")

    def assert_clean(self) -> None:
        self.settle()
        assert self.violations == [], "Content-Security-Policy violations:\n" + "\n".join(self.violations)
        assert self.errors == [], "\n".join(self.errors)

    def evaluate(self, script: str, argument: Any = None) -> Any:
        return self.page.evaluate(script, argument)


@pytest.fixture
def tab(browser: Browser, site: str) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": 1280, "height": 860}, device_scale_factor=1)
    page = context.new_page()
    page.set_default_timeout(15_000)
    opened = Tab(page, site)
    try:
        yield opened
    finally:
        context.close()


def test_graphs_list_loads(tab: Tab) -> None:
    tab.open("/graphs")
    assert tab.page.locator(".cards .card").count() >= 4
    tab.shoot("graphs")
    tab.assert_clean()


def test_graph_page_draws_its_diagram_as_svg(tab: Tab) -> None:
    tab.open("/graphs/text-stats")
    tab.page.wait_for_selector("#diagram svg")
    assert tab.page.locator("#diagram svg .node").count() >= 5
    assert tab.page.locator("#diagram svg .node.visited").count() == 0
    assert "split_sentences" in (tab.page.locator("#diagram svg").text_content() or "")
    assert tab.page.locator("#nodes tbody tr").count() == 5
    tab.assert_clean()


def test_every_library_graph_renders(tab: Tab) -> None:
    for name in ("comorag-ingest", "comorag-qa", "text-pipeline"):
        tab.open(f"/graphs/{name}")
        tab.page.wait_for_selector("#diagram svg")
        assert tab.page.locator("#diagram .error-message").count() == 0, name
    tab.assert_clean()


def test_runs_page_loads(tab: Tab, seeded: Seeded) -> None:
    tab.open("/runs")
    assert tab.page.locator(f'#runs a[href^="/runs/{seeded.run_id}"]').count() == 1
    tab.assert_clean()


def test_run_page_marks_the_visited_nodes(tab: Tab, seeded: Seeded) -> None:
    tab.open(f"/runs/{seeded.run_id}?namespace={NAMESPACE}")
    tab.page.wait_for_selector("#diagram svg .node.visited")
    visited = tab.evaluate("() => [...document.querySelectorAll('#diagram svg .node.visited')].map(n => n.id)")
    assert {node for node in ("split", "count", "total", "note", "remember") if any(f"n_{node}" in id for id in visited)} == {
        "split", "count", "total", "note", "remember"
    }
    assert tab.page.locator("#run-status").text_content() == "completed"
    assert tab.page.locator("#steps-body tr").count() >= 5
    tab.assert_clean()


def test_live_run_page_follows_the_run(tab: Tab, seeded: Seeded) -> None:
    write_run(seeded.path, NAMESPACE, "live-run", "running", [event("split")])
    tab.open(f"/runs/live-run?namespace={NAMESPACE}")
    tab.page.wait_for_selector("#diagram svg .node.visited")
    assert tab.page.locator("#run-status").text_content() == "running"
    assert tab.page.locator("#live-note").is_visible()
    assert tab.page.locator("#diagram svg .node.visited").count() == 1
    assert tab.page.locator("#steps-body tr").count() == 1

    write_run(seeded.path, NAMESPACE, "live-run", "running", [event("split"), event("count"), event("count")])
    tab.page.wait_for_function("() => document.querySelectorAll('#steps-body tr').length === 3")
    tab.page.wait_for_function("() => document.querySelectorAll('#diagram svg .node.visited').length === 2")

    finished = [event("split"), event("count"), event("count"), event("total"), event("note", "error", "the model refused")]
    write_run(seeded.path, NAMESPACE, "live-run", "failed", finished)
    tab.page.wait_for_function("() => document.getElementById('run-status').textContent === 'failed'")
    tab.page.wait_for_function("() => document.querySelectorAll('#diagram svg .node.visited').length === 3")
    assert tab.page.locator("#steps-body tr").count() == 5
    assert "the model refused" in (tab.page.locator("#steps-body").text_content() or "")
    assert tab.page.locator("#live-note").is_hidden()
    assert tab.page.locator("#run").get_attribute("data-live") == "false"
    tab.assert_clean()


def test_memory_search_loads(tab: Tab) -> None:
    tab.open(f"/memory?namespace={NAMESPACE}")
    assert tab.page.locator("#records tbody tr").count() >= 10
    tab.open(f"/memory?namespace={NAMESPACE}&q=salt+caravans&mode=keyword")
    assert tab.page.locator("#results tbody tr").count() >= 1
    tab.shoot("memory")
    tab.open(f"/memory?namespace={NAMESPACE}&q=river&mode=vector&kind=Chunk")
    assert tab.page.locator("#results tbody tr").count() >= 1
    tab.assert_clean()


def _node_count(tab: Tab) -> int:
    count: int = tab.evaluate("() => window.mnemoflowExplorer.nodeCount()")
    return count


def _click_node(tab: Tab, node_id: str) -> None:
    """Click the node where cytoscape drew it, as a user would."""
    box = tab.page.locator("#cy").bounding_box()
    assert box is not None
    position = tab.evaluate("(id) => window.mnemoflowExplorer.cy.getElementById(id).renderedPosition()", node_id)
    tab.page.mouse.click(box["x"] + position["x"], box["y"] + position["y"])


def test_memory_explorer_expands_a_neighbourhood_on_click(tab: Tab, seeded: Seeded) -> None:
    tab.open(f"/memory/record?namespace={NAMESPACE}&id={seeded.hub_id}")
    tab.page.wait_for_selector('#explorer[data-ready="true"]')
    page_size = 25
    assert _node_count(tab) == 1 + page_size  # the hub and its first page, never the whole neighbourhood
    more = tab.page.locator("#explorer-more")
    assert more.is_visible() and f"{page_size} of {HUB_NEIGHBOURS}" in (more.text_content() or "")
    more.click()
    tab.page.wait_for_function(f"() => window.mnemoflowExplorer.nodeCount() === {1 + 2 * page_size}")

    spoke = tab.evaluate("() => window.mnemoflowExplorer.cy.nodes().map(n => n.id()).find(id => id.startsWith('entry-'))")
    before = _node_count(tab)
    _click_node(tab, spoke)
    tab.page.wait_for_function(f"() => window.mnemoflowExplorer.nodeCount() > {before}")
    tab.page.wait_for_function(f"() => document.getElementById('explorer').dataset.selected === {spoke!r}")
    assert tab.page.locator("#prop-id").text_content() == spoke
    assert tab.page.locator("#prop-kind").text_content() == "Chunk"
    assert "Ledger entry" in (tab.page.locator("#prop-text").text_content() or "")
    assert '"note": "<b>not markup</b>"' in (tab.page.locator("#prop-properties").text_content() or "")
    assert tab.page.locator("#prop-properties b").count() == 0
    leaf = spoke.replace("entry-", "receipt-")
    assert tab.evaluate("(id) => window.mnemoflowExplorer.cy.getElementById(id).nonempty()", leaf)
    tab.assert_clean()


def test_record_page_of_a_small_neighbourhood(tab: Tab, seeded: Seeded) -> None:
    leaf = seeded.leaf_ids[0]
    tab.open(f"/memory/record?namespace={NAMESPACE}&id={leaf}")
    tab.page.wait_for_selector('#explorer[data-ready="true"]')
    assert _node_count(tab) == 2
    assert tab.page.locator("#explorer-more").is_hidden()
    tab.assert_clean()


# -- the Content-Security-Policy -------------------------------------------------------------------------

TOKEN = "browser-test-token-0123456789"


@pytest.fixture(scope="module")
def guarded_site(seeded: Seeded) -> Iterator[str]:
    with serve(create_app(settings_at(seeded.path, ui=UISettings(token=SecretStr(TOKEN))))) as url:
        yield url


def _assert_diagram_drawn(tab: Tab, path: str) -> None:
    """Mermaid drew the diagram and its theme applies: the theme is the ``<style>`` it puts inline, so a policy
    refusing inline styles leaves the nodes without outlines (and some black)."""
    tab.page.wait_for_selector("#diagram svg .node")
    assert tab.page.locator("#diagram .error-message").count() == 0, path
    strokes = tab.evaluate(
        "() => [...document.querySelectorAll('#diagram svg .node')].map((node) => {"
        " const shape = node.querySelector('rect, polygon, path, circle');"
        " return shape ? getComputedStyle(shape).stroke : 'no shape'; })"
    )
    assert strokes and all(stroke not in ("none", "no shape") for stroke in strokes), f"{path}: {strokes}"


def _assert_explorer_drawn(tab: Tab) -> None:
    """Cytoscape drew on its canvas, and the ``<style>`` it puts inline (its container's positioning) applies."""
    tab.page.wait_for_selector('#explorer[data-ready="true"]')
    sizes = tab.evaluate("() => [...document.querySelectorAll('#cy canvas')].map((canvas) => canvas.width * canvas.height)")
    assert sizes and all(size > 0 for size in sizes), sizes
    assert tab.evaluate("() => getComputedStyle(document.getElementById('cy')).position") == "relative"


def test_no_page_violates_the_content_security_policy(tab: Tab, seeded: Seeded) -> None:
    """Every kind of page, with its diagram or explorer drawn and its fetches made, raises no violation."""
    tab.open("/graphs")
    assert tab.page.locator(".cards .card").count() >= 4
    for path in library_graphs():
        tab.open(f"/graphs/{path.stem}")
        _assert_diagram_drawn(tab, path.stem)

    tab.open("/runs")
    assert tab.page.locator(f'#runs a[href^="/runs/{seeded.run_id}"]').count() == 1
    tab.open(f"/runs/{seeded.run_id}?namespace={NAMESPACE}")
    tab.page.wait_for_selector("#diagram svg .node.visited")
    _assert_diagram_drawn(tab, "run")

    tab.open(f"/memory?namespace={NAMESPACE}")
    assert tab.page.locator("#records tbody tr").count() >= 10
    tab.open(f"/memory?namespace={NAMESPACE}&q=salt+caravans&mode=keyword")
    assert tab.page.locator("#results tbody tr").count() >= 1

    tab.open(f"/memory/record?namespace={NAMESPACE}&id={seeded.hub_id}")
    _assert_explorer_drawn(tab)
    before = _node_count(tab)
    tab.page.locator("#explorer-more").click()  # one more page of /api/memory/neighbours, fetched under connect-src
    tab.page.wait_for_function(f"() => window.mnemoflowExplorer.nodeCount() > {before}")

    tab.open("/login")
    assert tab.page.locator('form[action="/login"] input[name="token"]').is_visible()
    tab.open("/graphs/no-such-graph", status=404)
    assert tab.page.locator("h1").text_content() == "404"
    tab.assert_clean()


def test_signing_in_does_not_violate_the_content_security_policy(browser: Browser, guarded_site: str) -> None:
    """The sign-in form posts to /login and is redirected back (form-action), then the page works."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        signed = Tab(page, guarded_site)
        signed.open("/graphs/text-stats")  # sent on to /login?next=/graphs/text-stats
        assert page.url.startswith(f"{guarded_site}/login?")
        page.fill('input[name="token"]', TOKEN)
        with page.expect_navigation(wait_until="networkidle"):
            page.click('button[type="submit"]')
        assert page.url == f"{guarded_site}/graphs/text-stats"
        _assert_diagram_drawn(signed, "text-stats")
        signed.assert_clean()
    finally:
        context.close()


def test_no_page_may_frame_the_ui(tab: Tab, site: str) -> None:
    """frame-ancestors 'none' (and X-Frame-Options DENY): a page that frames the UI, even one of its own origin
    (served here by the browser itself, without the policy), gets an empty frame."""
    tab.page.route(f"{site}/framing", lambda route: route.fulfill(
        content_type="text/html", body=f'<iframe id="ui" src="{site}/graphs"></iframe>'
    ))
    tab.page.goto(f"{site}/framing", wait_until="networkidle")
    assert tab.page.frame_locator("#ui").locator(".cards .card").count() == 0
    assert any("frame-ancestors 'none'" in error for error in tab.errors), tab.errors
