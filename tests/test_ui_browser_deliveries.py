"""The webhook deliveries page and the memory explorer's legend in a real headless Chromium (Debian's, through
Playwright, as ``tests/test_ui_browser.py``): pages load without console errors or Content-Security-Policy violations;
a signed delivery sent through the app is listed with its dates, its outcome and a link to the run it started, and
stored markup stays text; /memory shows each kind's colour and count, the explorer a legend of the kinds it shows
in the colours of their nodes (those of /memory's legend), and its labels stay readable with 50 nodes. Screenshots: ``deliveries.png`` and
``explorer.png``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

from mnemoflow.flows.server.app import create_app
from mnemoflow.settings import HooksSettings
from tests.support.web_server import serve
from tests.test_ui import NAMESPACE, Seeded, event, open_store, run_async, seed, settings_at, write_run
from tests.test_ui_browser import Tab
from tests.test_ui_browser import browser as browser  # the module's Chromium, shared with this module's tests
from tests.test_ui_browser import tab as tab  # a fresh page per test, on this module's site
from tests.test_ui_deliveries import (
    GENERIC_SECRET,
    GITHUB_SECRET,
    HOOKS_YAML,
    HOSTILE_EVENT,
    StandInPrefect,
    send_generic,
    send_github,
)

DATE = re.compile(r"^\d{4}-\d{2}-\d{2}\n\d{2}:\d{2}:\d{2} UTC$")


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    return seed(tmp_path_factory.mktemp("ui-browser-deliveries") / "memory.db")


@pytest.fixture(scope="module")
def prefect() -> Iterator[StandInPrefect]:
    stand_in = StandInPrefect()
    with serve(stand_in.app()) as url:
        stand_in.url = url
        yield stand_in


@pytest.fixture(scope="module")
def site(seeded: Seeded, prefect: StandInPrefect) -> Iterator[str]:
    """The app on the seeded store, serving the hooks of tests/test_ui_deliveries.py against the stand-in Prefect."""
    hooks_file = seeded.path.parent / "hooks.yaml"
    hooks_file.write_text(HOOKS_YAML)
    hooks = HooksSettings(file=hooks_file, max_body_bytes=64 * 1024)
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("TEST_DELIVERIES_GENERIC_SECRET", GENERIC_SECRET)
        environment.setenv("TEST_DELIVERIES_GITHUB_SECRET", GITHUB_SECRET)
        with (
            temporary_settings({PREFECT_API_URL: f"{prefect.url}/api"}, restore_defaults={PREFECT_UI_URL}),
            serve(create_app(settings_at(seeded.path, hooks=hooks))) as url,
        ):
            yield url


def kind_counts(path: Path) -> dict[str, int]:
    async def count() -> dict[str, int]:
        store = open_store(path)
        await store.setup()
        try:
            return await store.count_nodes_by_kind(NAMESPACE)
        finally:
            await store.close()

    return run_async(count)


def test_the_deliveries_page_after_a_signed_delivery(tab: Tab, site: str, seeded: Seeded, prefect: StandInPrefect) -> None:
    triggered = send_generic(site, "Memory that lasts.")
    assert triggered.status_code == 202, triggered.text
    flow_run_id = triggered.json()["flow_run_id"]
    write_run(seeded.path, NAMESPACE, "hooked-run", "completed", [event("split")], thread_id=flow_run_id)  # as run_graph names it
    assert send_github(site, HOSTILE_EVENT, "Not an issue").status_code == 200

    tab.open("/deliveries")
    page = tab.page
    rows = page.locator("#deliveries tr.delivery")
    assert rows.count() == 2
    ignored, started = rows.nth(0), rows.nth(1)
    assert ignored.locator(".hook").text_content() == "issues" and ignored.locator(".status").text_content() == "ignored"
    assert (ignored.locator(".event").text_content() or "").startswith(HOSTILE_EVENT)  # shown as text, never markup
    assert page.locator("#deliveries img").count() == 0
    assert HOSTILE_EVENT in (ignored.locator(".reason").text_content() or "")
    for cell in (".received", ".updated", ".expires"):
        assert DATE.match(started.locator(cell).inner_text()), cell
    assert started.locator(".status").first.text_content() == "triggered"
    assert started.locator("a.prefect-link").get_attribute("href") == f"{prefect.url}/runs/flow-run/{flow_run_id}"
    tab.shoot("deliveries")

    started.locator("a.run-link").click()
    page.wait_for_url(re.compile(r"/runs/hooked-run\?namespace=ui-test$"))
    assert "hooked-run" in (page.locator("h1").first.text_content() or "")

    tab.open("/deliveries")
    page.select_option("#delivery-filters select[name=outcome]", "ignored")
    page.locator("#delivery-filters button[type=submit]").click()
    page.wait_for_url(re.compile(r"outcome=ignored"))
    assert [row.get_attribute("data-outcome") for row in page.locator("#deliveries tr.delivery").all()] == ["ignored"]
    tab.assert_clean()


def test_the_explorer_shows_the_kinds_their_colours_and_counts(tab: Tab, seeded: Seeded) -> None:
    counts = kind_counts(seeded.path)
    tab.open(f"/memory?namespace={NAMESPACE}")
    page = tab.page
    legend = page.locator("#kind-legend .legend-item")
    assert {item.get_attribute("data-kind"): int(item.get_attribute("data-count") or 0) for item in legend.all()} == counts
    assert [int(item.locator(".legend-count").text_content() or 0) for item in legend.all()] == sorted(
        counts.values(), reverse=True
    )
    swatch = (
        "(kind) => getComputedStyle(document.querySelector(`#kind-legend .kind-swatch[data-kind='${kind}']`)).backgroundColor"
    )
    colours = {kind: tab.evaluate(swatch, kind) for kind in counts}
    assert len(set(colours.values())) == len(colours)  # a namespace's kinds never share a colour
    rows = "() => [...document.querySelectorAll('#records td.kind .kind-swatch')].map((swatch) => [swatch.dataset.kind, getComputedStyle(swatch).backgroundColor])"
    in_rows = tab.evaluate(rows)
    assert in_rows and all(colour == colours[kind] for kind, colour in in_rows)  # the table's swatches are the legend's

    tab.open(f"/memory/record?namespace={NAMESPACE}&id={seeded.hub_id}")
    page.wait_for_selector('#explorer[data-ready="true"]')
    page.locator("#explorer-more").click()
    page.wait_for_function("() => window.mnemoflowExplorer.nodeCount() === 51")
    shown = page.locator("#explorer-legend .legend-item")
    assert [(item.get_attribute("data-kind"), item.locator(".legend-count").text_content()) for item in shown.all()] == [
        ("Chunk", f"50 shown of {counts['Chunk']}"),
        ("Document", f"1 shown of {counts['Document']}"),
    ]
    node_colour = "(kind) => window.mnemoflowExplorer.cy.nodes().filter((node) => node.data('kind') === kind).first().style('background-color')"
    legend_colour = (
        "(kind) => getComputedStyle(document.querySelector(`#explorer-legend .kind-swatch[data-kind='${kind}']`)).backgroundColor"
    )
    for kind in ("Chunk", "Document"):  # the colours of /memory's legend; cytoscape writes rgb() without spaces
        assert (
            tab.evaluate(node_colour, kind)
            == tab.evaluate(legend_colour, kind).replace(" ", "")
            == colours[kind].replace(" ", "")
        )

    # 51 nodes: every label is drawn (the zoom keeps them above cytoscape's smallest readable size) and none covers another
    labels = tab.evaluate(
        """() => {
          const cy = window.mnemoflowExplorer.cy;
          const boxes = cy.nodes().map((node) => node.renderedBoundingBox({ includeNodes: false, includeEdges: false, includeLabels: true }));
          let overlaps = 0;
          boxes.forEach((a, i) => boxes.slice(i + 1).forEach((b) => {
            if (a.x1 < b.x2 && b.x1 < a.x2 && a.y1 < b.y2 && b.y1 < a.y2) overlaps += 1;
          }));
          const smallest = Math.min(...cy.nodes().map((node) => parseFloat(node.style('font-size')) * cy.zoom()));
          return { overlaps, drawn: smallest >= parseFloat(cy.nodes().first().style('min-zoomed-font-size')), empty: boxes.filter((box) => box.w === 0).length };
        }"""
    )
    assert labels == {"overlaps": 0, "drawn": True, "empty": 0}
    # the hub's 50 relationships are highlighted, not named along their edges; a spoke's two are named
    assert tab.evaluate("() => window.mnemoflowExplorer.cy.edges('.named').length") == 0
    spoke = seeded.spoke_ids[0]
    box = page.locator("#cy").bounding_box()
    position = tab.evaluate("(id) => window.mnemoflowExplorer.cy.getElementById(id).renderedPosition()", spoke)
    assert box is not None
    page.mouse.click(box["x"] + position["x"], box["y"] + position["y"])
    page.wait_for_function(f"() => document.getElementById('explorer').dataset.selected === {spoke!r}")
    page.wait_for_function("() => window.mnemoflowExplorer.nodeCount() === 52")
    assert tab.evaluate("() => window.mnemoflowExplorer.cy.edges('.named').map((edge) => edge.data('type'))") == [
        "PART_OF",
        "PART_OF",
    ]
    page.mouse.move(box["x"] + 5, box["y"] + 5)  # off the node: its hover label goes
    page.wait_for_function("() => window.mnemoflowExplorer.cy.nodes('.hovered').length === 0")
    tab.shoot("explorer")
    tab.assert_clean()
