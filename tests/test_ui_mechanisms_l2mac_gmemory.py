"""The L2MAC project view and the G-Memory namespace view over real HTTP, on data made by the mechanisms' own graphs.

``l2mac`` builds a two-instruction project through the scripted OpenAI server (real HTTP): a module written, then
edited, a file deleted, a README holding hostile markup. ``gmemory-task`` runs eleven tasks (three failed) through
the same server: the revision at task 5 adds three insights (one holding hostile markup), tasks 6 to 11 are given
them, which supports and contradicts them, and the revision at task 10 agrees with one and removes another. The views are read on SQLite (a module's store, shared
with ``tests/test_ui_browser_mechanisms_l2mac_gmemory.py``) and, one test per view, on Neo4j. Plain sync tests, as in
``tests/test_ui.py``: seeding runs its coroutine in a thread.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from mnemoflow.flows.server.app import create_app
from mnemoflow.flows.server.ui import pages, runs
from mnemoflow.flows.server.ui.mechanisms import gmemory, l2mac
from mnemoflow.graphs import load_graph, run_graph, with_node_config
from mnemoflow.llm import LLM
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.nodes.gmemory.model import insight_id, query_id
from mnemoflow.settings import Settings
from tests.conftest import EMBEDDER, new_store, settings_for, wipe_neo4j
from tests.support.graph_variants import library_variant
from tests.support.l2mac_model import instruction_turn
from tests.support.openai_server import Calls, Reply, Rule, ScriptedOpenAIServer
from tests.support.web_server import serve
from tests.test_ui import run_async, settings_at

HOSTILE = '<script>window.__pwned = 1</script><img src="x" onerror="window.__pwned = 2">'
"""Markup stored as text by both mechanisms; no page may run it."""

L2_NAMESPACE = "ui-l2mac"
L2_THREAD = "greet-project"
L2_TASK = f"Build greet, a tiny greeting module. {HOSTILE}"
L2_INSTRUCTIONS = [
    "Write greet/hello.py with hello(name), a README.md and notes/todo.txt.",
    "Make the greeting polite, and delete notes/todo.txt.",
]
HELLO_1 = 'def hello(name):\n    return "hi " + name\n\n\nGREETING = "hi"\n'
HELLO_2 = 'def hello(name):\n    return "Good day, " + name + "."\n\n\nGREETING = "hi"\n'
README = f"# greet\n\n{HOSTILE}\n"
TODO = "polish the greeting\n"

GM_NAMESPACE = "ui-gmemory"
GM_TASK = "Compute the answer to the question."
RULE_CHECK = f"Check the figures twice, because {HOSTILE}"
RULE_GOAL = "Restate the goal first, because it avoids drift."
RULE_GUESS = "Guess when unsure, because speed matters."
MISTAKE = f"It guessed the number. {HOSTILE}"
FAILED_KEYS = {"t3", "t7", "t11"}
GM_KEYS = [f"t{n}" for n in range(1, 12)]


@dataclass(frozen=True)
class Made:
    """What the mechanisms' graphs made: the runs' ids."""

    l2mac_run: str
    gmemory_runs: dict[str, str]
    """Task key -> run id."""


def l2mac_model(body: dict[str, Any]) -> Reply:
    """The scripted L2MAC model: instruction 1 writes three files, instruction 2 edits one and deletes another."""
    if not body.get("tools"):
        index, _, _ = instruction_turn(body["messages"])
        return f"Instruction {index + 1} did what it asked."
    index, _, turn = instruction_turn(body["messages"])
    write = {"files": [{"path": "greet/hello.py", "content": HELLO_1}, {"path": "README.md", "content": README},
                       {"path": "notes/todo.txt", "content": TODO}]}  # fmt: skip
    edit = {"path": "greet/hello.py", "old": 'return "hi " + name', "new": 'return "Good day, " + name + "."'}
    steps = (
        [Calls(("write_files", write))]
        if index == 0
        else [Calls(("edit_file", edit), ("delete_files", {"paths": ["notes/todo.txt"]}))]
    )
    return steps[turn] if turn < len(steps) else Calls(("step_complete", {}))


def revision_model(body: dict[str, Any]) -> Reply:
    """The revision's replies: with no rules listed, add three; with rules listed, agree with the first rule and
    remove the third wherever they are listed, so that the scores differ."""
    listed = body["messages"][-1]["content"].split("Existing rules:\n", 1)[-1]
    if "(none yet)" in listed:
        return {"operations": [{"op": "ADD", "insight": None, "text": text} for text in (RULE_CHECK, RULE_GOAL, RULE_GUESS)]}
    numbers = {text: int(number) for number, text in re.findall(r"^(\d+)\. (.+)$", listed, re.MULTILINE)}
    operations = []
    if RULE_CHECK in numbers:
        operations.append({"op": "AGREE", "insight": numbers[RULE_CHECK], "text": RULE_CHECK})
    if RULE_GUESS in numbers:
        operations.append({"op": "REMOVE", "insight": numbers[RULE_GUESS], "text": "Guessing fails the check."})
    return {"operations": operations}


def script_gmemory(server: ScriptedOpenAIServer) -> None:
    """Replies for every gmemory-task call: the solver answers 42 (the check decides success), the revision at task 5
    works as :func:`revision_model` says, and no task learns a lesson of its own (an empty one), so the revision's
    three insights are the namespace's (``tests/test_gmemory_insight_graph.py`` shows lessons in the view)."""
    server.script(
        Rule(system="You improve a list of rules", respond=revision_model),
        Rule(system="You are the solver", text="The answer is 42."),
        Rule(system="You are the critic", json={"approve": True, "feedback": "Looks right."}),
        Rule(system="You summarize how a team", json={"steps": ["Work out the answer", "State it"]}),
        Rule(system="A team of agents failed", json={"reason": MISTAKE}),
        Rule(system="You consolidate rules", json={"insights": []}),
        Rule(system="You judge how useful past tasks are", json={"ratings": []}),
        Rule(system="You condense the record", json={"keep": [1]}),
        Rule(system="You distil one lesson", json={"text": ""}),
    )


async def make(store: GraphStore, settings: Settings, tmp_path: Path) -> Made:
    """Run l2mac once and gmemory-task eleven times into ``store``, through scripted servers."""
    with ScriptedOpenAIServer() as server:
        server.script(Rule(respond=l2mac_model))
        loaded = library_variant("l2mac", tmp_path, {"tests: true": "tests: false", "checker: pylint": "checker: compile"})  # syntax checks only
        built = await run_graph(
            loaded, {"task": L2_TASK, "instructions": L2_INSTRUCTIONS}, store=store, embedder=EMBEDDER,
            llm=server.gateway(), settings=settings, checkpointer=None, namespace=L2_NAMESPACE, thread_id=L2_THREAD,
        )  # fmt: skip
    assert built.state["status"] == "done", built.state
    runs = {}
    with ScriptedOpenAIServer() as server:
        script_gmemory(server)
        llm: LLM = server.gateway()
        # each revision call compares its sampled task alone, so the rules it lists are those that task supports
        graph = with_node_config(load_graph("gmemory-task"), {"revise": {"successes": 0, "failures": 0}})
        for key in GM_KEYS:
            values = {"task": GM_TASK, "task_key": key, "expected": "43" if key in FAILED_KEYS else "42", "max_rounds": 1}
            result = await run_graph(
                graph, values, store=store, embedder=EMBEDDER, llm=llm, settings=settings,
                checkpointer=None, namespace=GM_NAMESPACE,
            )  # fmt: skip
            runs[key] = result.run_id
    return Made(l2mac_run=built.run_id, gmemory_runs=runs)


def make_sqlite(path: Path) -> Made:
    async def write() -> Made:
        store = new_store("sqlite", sqlite_path=path)
        await store.setup()
        try:
            return await make(store, settings_at(path), path.parent)
        finally:
            await store.close()

    return run_async(write)


@dataclass(frozen=True)
class Site:
    """The app serving a store the mechanisms' graphs wrote."""

    url: str
    made: Made
    path: Path


@contextmanager
def serving(folder: Path) -> Iterator[Site]:
    """Make the mechanisms' data in ``memory.db`` in ``folder`` and serve the app over it."""
    path = folder / "memory.db"
    made = make_sqlite(path)
    with serve(create_app(settings_at(path))) as url:
        yield Site(url, made, path)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with serving(tmp_path_factory.mktemp("ui-mechanisms")) as served:
        yield served


@pytest.fixture
def client(site: Site) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=site.url, timeout=30) as http:
        yield http


# -- what both backends must show ---------------------------------------------------------------------------


def check_l2mac(client: httpx.Client) -> None:
    """The project, a file at each version, a diff, and the page with a diff, as the l2mac run left them."""
    project = client.get("/api/mechanisms/l2mac/project", params={"namespace": L2_NAMESPACE, "thread": L2_THREAD}).json()
    assert (project["task"], project["status"]) == (L2_TASK, "done")
    assert [(i["number"], i["text"], i["status"]) for i in project["instructions"]] == [
        (1, L2_INSTRUCTIONS[0], "done"),
        (2, L2_INSTRUCTIONS[1], "done"),
    ]
    assert all(i["summary"] and i["turns"] >= 1 and i["checks"] >= 1 for i in project["instructions"])
    assert project["files"] == {"existing": 2, "deleted": 1, "versions": 5}
    names = [(e["name"], e["folder"], e["deleted"]) for e in project["tree"]]
    assert names == [("greet", True, False), ("notes", True, True), ("README.md", False, False)]
    [hello] = project["tree"][0]["children"]
    assert (hello["path"], hello["versions"], hello["deleted"]) == ("greet/hello.py", 2, False)

    params = {"namespace": L2_NAMESPACE, "thread": L2_THREAD, "path": "greet/hello.py"}
    head = client.get("/api/mechanisms/l2mac/file", params=params).json()
    assert (head["version"]["n"], head["version"]["action"], head["version"]["instruction"], head["version"]["content"]) == (
        2, "edit", 1, HELLO_2,
    )  # fmt: skip
    assert [(v["n"], v["action"], v["instruction"]) for v in head["versions"]] == [(1, "write", 0), (2, "edit", 1)]
    assert all("content" not in v for v in head["versions"])
    first = client.get("/api/mechanisms/l2mac/file", params={**params, "version": 1}).json()
    assert first["version"]["content"] == HELLO_1

    diff = client.get("/api/mechanisms/l2mac/diff", params={**params, "from": 1, "to": 2}).json()
    assert (diff["added"], diff["removed"]) == (1, 1)
    assert [line["kind"] for line in diff["lines"]][:3] == ["header", "header", "hunk"]
    changed = [(line["kind"], line["text"]) for line in diff["lines"] if line["kind"] in ("added", "removed")]
    assert changed == [("removed", '-    return "hi " + name'), ("added", '+    return "Good day, " + name + "."')]
    assert {line["text"] for line in diff["lines"] if line["kind"] == "context"} >= {" def hello(name):"}

    deleted = client.get("/api/mechanisms/l2mac/file", params={**params, "path": "notes/todo.txt"}).json()
    assert deleted["deleted"] and deleted["version"]["action"] == "delete" and deleted["version"]["content"] == ""
    gone = client.get("/api/mechanisms/l2mac/diff", params={**params, "path": "notes/todo.txt", "from": 1}).json()
    assert [(line["kind"], line["text"]) for line in gone["lines"] if line["kind"] == "removed"] == [
        ("removed", "-polish the greeting")
    ]

    page = client.get("/mechanisms/l2mac/project", params={**params, "version": 2, "against": 1})
    assert page.status_code == 200
    assert 'class="diff-line diff-removed">-    return &#34;hi &#34; + name</span>' in page.text
    assert 'class="diff-line diff-added">+    return &#34;Good day, &#34; + name + &#34;.&#34;</span>' in page.text
    assert '<option value="1" selected>version 1' in page.text


def check_gmemory(client: httpx.Client) -> None:
    """The namespace's insights by score with their support and contradictions, and its queries, as the eleven
    gmemory-task runs left them."""
    view = client.get("/api/mechanisms/gmemory", params={"namespace": GM_NAMESPACE}).json()
    counts = view["counts"]
    assert (counts["GQuery"], counts["GInsight"], counts["GMilestone"]) == (11, 3, 2) and counts["GUtterance"] >= 11 + 3  # a failed task hears the critic too
    assert {m["name"]: m["status"] for m in view["milestones"]} == {"revision-5": "done", "revision-10": "done"}
    assert sorted(q["order"] for q in view["queries"]["items"]) == list(range(1, 12))  # numbered from claims, no gap
    insights = view["insights"]["items"]
    # added by the revision at task 5 (+2 each), given to tasks 6-11 (+1 solved, -2 failed); the revision at task 10
    # agreed with the first rule (+1 per call that listed it) and removed the third (-1 per call), which pruned it
    assert [i["text"] for i in insights] == [RULE_CHECK, RULE_GOAL, RULE_GUESS] and view["insights"]["total"] == 3
    assert [i["status"] for i in insights] == ["active", "active", "pruned"]
    scores = [i["score"] for i in insights]
    assert scores[0] > scores[1] > scores[2] and scores[2] <= 0
    q = {key: query_id(GM_NAMESPACE, key) for key in GM_KEYS}
    for insight in insights:
        assert {s["id"] for s in insight["supported_by"]} >= {q["t6"], q["t8"], q["t9"], q["t10"]}
        assert {c["id"] for c in insight["contradicted_by"]} >= {q["t7"], q["t11"]}
        assert [s["order"] for s in insight["supported_by"]] == sorted(
            (s["order"] for s in insight["supported_by"]), reverse=True
        )
        assert insight["used_by"] == 6
        assert sum(c["delta"] for c in insight["credits"]) == insight["score"]
        assert {c["query"]["order"] for c in insight["credits"] if c["query"]} == set(range(6, 12))  # each task's credit
        assert all(c["source"].startswith("revision-") for c in insight["credits"] if not c["query"])
    assert "agree" in {c["reason"] for c in insights[0]["credits"]} and "remove" in {c["reason"] for c in insights[2]["credits"]}
    queries = view["queries"]["items"]
    assert sorted(query["order"] for query in queries) == list(range(1, 12))
    by_key = {query["task_key"]: query for query in queries}
    assert by_key["t3"]["status"] == "failed" and by_key["t3"]["fail_reason"] == MISTAKE
    assert by_key["t1"]["status"] == "resolved" and by_key["t1"]["key_steps"] == ["Work out the answer", "State it"]
    assert "solver -> critic: The answer is 42." in by_key["t1"]["trajectory"]
    for status, texts in (("pruned", [RULE_GUESS]), ("active", [RULE_CHECK, RULE_GOAL]), ("merged", [])):
        filtered = client.get("/api/mechanisms/gmemory", params={"namespace": GM_NAMESPACE, "status": status}).json()
        assert [i["text"] for i in filtered["insights"]["items"]] == texts, status

    query = client.get("/api/mechanisms/gmemory/query", params={"namespace": GM_NAMESPACE, "id": q["t7"]}).json()
    assert (query["status"], query["task_key"], query["order"]) == ("failed", "t7", 7)
    assert [(u["order"], u["speaker"], u["addressee"]) for u in query["utterances"]][:2] == [
        (1, "solver", "critic"),
        (2, "critic", "solver"),
    ]
    assert query["utterances"][0]["message"] == "The answer is 42."
    assert {i["text"] for i in query["used_insights"]} == {RULE_CHECK, RULE_GOAL, RULE_GUESS}
    assert sorted(i["rank"] for i in query["used_insights"]) == [1, 2, 3]
    assert {i["text"] for i in query["contradicts"]} == {RULE_CHECK, RULE_GOAL, RULE_GUESS} and query["supports"] == []
    earlier = {s["order"] for s in query["similar"] if s["direction"] == "earlier"}
    later = {s["order"] for s in query["similar"] if s["direction"] == "later"}
    assert earlier and later and earlier <= set(range(1, 7)) and later <= set(range(8, 12))
    assert all(s["weight"] >= 0.85 for s in query["similar"])

    page = client.get("/mechanisms/gmemory", params={"namespace": GM_NAMESPACE})
    assert page.status_code == 200
    assert f'id="insight-{insight_id(GM_NAMESPACE, RULE_GOAL)}"' in page.text
    assert f'href="/mechanisms/gmemory/query?namespace={GM_NAMESPACE}&amp;id={q["t7"]}"' in page.text
    assert f'href="/memory/record?namespace={GM_NAMESPACE}&amp;id={q["t3"]}"' in page.text
    query_page = client.get("/mechanisms/gmemory/query", params={"namespace": GM_NAMESPACE, "id": q["t7"]})
    assert query_page.status_code == 200 and "solver → critic" in query_page.text


# -- SQLite ---------------------------------------------------------------------------------------------------


def test_the_l2mac_view_shows_the_projects_instructions_files_versions_and_diffs(client: httpx.Client) -> None:
    check_l2mac(client)
    listing = client.get("/api/mechanisms/l2mac/projects", params={"namespace": L2_NAMESPACE}).json()
    assert [(p["thread_id"], p["status"], p["instructions"], p["files"]) for p in listing] == [(L2_THREAD, "done", 2, 2)]
    assert [p["thread_id"] for p in client.get("/api/mechanisms/l2mac/projects").json()] == [L2_THREAD]
    page = client.get("/mechanisms/l2mac", params={"namespace": L2_NAMESPACE})
    assert page.status_code == 200 and f"thread={L2_THREAD}" in page.text


def test_the_l2mac_page_shows_a_file_whole_and_links_the_previous_version(client: httpx.Client) -> None:
    params = {"namespace": L2_NAMESPACE, "thread": L2_THREAD}
    page = client.get("/mechanisms/l2mac/project", params={**params, "path": "greet/hello.py", "against": ""})
    assert page.status_code == 200
    assert '<span class="code-line">    return &#34;Good day, &#34; + name + &#34;.&#34;</span>' in page.text
    assert 'id="diff-previous"' in page.text and "against=1" in page.text and 'id="diff"' not in page.text
    plain = client.get("/mechanisms/l2mac/project", params=params)
    assert (
        plain.status_code == 200 and "Pick a file in the tree" in plain.text and 'href="/mechanisms/l2mac/project?' in plain.text
    )
    same = client.get("/mechanisms/l2mac/project", params={**params, "path": "greet/hello.py", "version": 1, "against": 1})
    assert same.status_code == 200 and 'id="diff"' not in same.text and 'id="file-content"' in same.text


def test_the_gmemory_view_shows_insights_by_score_with_support_and_contradictions_and_the_queries(client: httpx.Client) -> None:
    check_gmemory(client)


def test_runs_link_to_their_mechanism_views(client: httpx.Client, site: Site) -> None:
    async def details() -> tuple[dict[str, Any], dict[str, Any]]:
        store = new_store("sqlite", sqlite_path=site.path)
        await store.setup()
        try:
            settings = settings_at(site.path)
            return (
                await runs.run_detail(store, settings, L2_NAMESPACE, site.made.l2mac_run),
                await runs.run_detail(store, settings, GM_NAMESPACE, site.made.gmemory_runs["t2"]),
            )
        finally:
            await store.close()

    l2_run, gm_run = run_async(details)
    project = f"/mechanisms/l2mac/project?namespace={L2_NAMESPACE}&thread={L2_THREAD}"
    assert l2mac.run_links(l2_run) == [{"label": "L2MAC project: instructions, files and versions", "url": project}]
    assert gmemory.run_links(l2_run) == [] and l2mac.run_links(gm_run) == []
    task = [
        f"/mechanisms/gmemory?namespace={GM_NAMESPACE}",
        f"/mechanisms/gmemory/query?namespace={GM_NAMESPACE}&id={query_id(GM_NAMESPACE, 't2')}",
    ]
    assert [link["url"] for link in gmemory.run_links(gm_run)] == task
    for url in (project, *task):
        assert client.get(url).status_code == 200, url
    # the run pages list them (runs.run_detail gathers every mechanism's links)
    assert project in [link["url"] for link in l2_run["links"]] and set(task) <= {link["url"] for link in gm_run["links"]}

    # without the query_id output (a run recorded before outputs were), the input's task key names the query
    no_outputs = gmemory.run_links({**gm_run, "outputs": None})
    assert [link["url"] for link in no_outputs] == task
    keyless = gmemory.run_links({**gm_run, "outputs": None, "input": {"task": GM_TASK}})
    assert keyless[1]["url"].endswith(f"&id={query_id(GM_NAMESPACE, gm_run['thread_id'])}")
    retrieve = {"graph": "gmemory-retrieve", "namespace": GM_NAMESPACE, "status": "completed", "thread_id": "x"}
    assert [link["url"] for link in gmemory.run_links(retrieve)] == [f"/mechanisms/gmemory?namespace={GM_NAMESPACE}"]
    assert len(gmemory.run_links({**gm_run, "status": "failed"})) == 1  # no query was recorded


def test_records_link_to_their_mechanism_views(client: httpx.Client) -> None:
    def records(namespace: str, kind: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = client.get("/api/memory/records", params={"namespace": namespace, "kind": kind}).json()
        return found

    project = f"/mechanisms/l2mac/project?namespace={L2_NAMESPACE}&thread={L2_THREAD}"
    for kind in ("L2Project", "L2Instruction"):
        assert {link["url"] for record in records(L2_NAMESPACE, kind) for link in l2mac.record_links(record)} == {project}
    versions = {link["url"] for record in records(L2_NAMESPACE, "L2FileVersion") for link in l2mac.record_links(record)}
    assert f"{project}&path=greet%2Fhello.py&version=2" in versions and len(versions) == 5
    for url in versions:
        assert client.get(url).status_code == 200, url

    [insight] = [r for r in records(GM_NAMESPACE, "GInsight") if r["text"] == RULE_GOAL]
    [link] = gmemory.record_links(insight)
    assert link["url"] == f"/mechanisms/gmemory?namespace={GM_NAMESPACE}#insight-{insight['id']}"
    credit = next(r for r in records(GM_NAMESPACE, "GCredit") if r["properties"]["insight_id"] == insight["id"])
    assert gmemory.record_links(credit) == [link]
    query = query_id(GM_NAMESPACE, "t4")
    [utterance] = [r for r in records(GM_NAMESPACE, "GUtterance") if r["properties"]["query_id"] == query][:1]
    [from_query] = gmemory.record_links({"kind": "GQuery", "namespace": GM_NAMESPACE, "id": query, "properties": {}})
    assert gmemory.record_links(utterance) == [from_query] and client.get(from_query["url"]).status_code == 200
    [number] = [r for r in records(GM_NAMESPACE, "GQueryOrder") if r["properties"]["query_id"] == query]
    assert gmemory.record_links(number) == [from_query]
    [milestone] = records(GM_NAMESPACE, "GMilestone")[:1]
    [claim] = records(GM_NAMESPACE, "GMilestoneClaim")[:1]
    assert {link["url"] for record in (milestone, claim) for link in gmemory.record_links(record)} == {
        f"/mechanisms/gmemory?namespace={GM_NAMESPACE}"
    }
    assert gmemory.record_links(records(L2_NAMESPACE, "L2Project")[0]) == [] and l2mac.record_links(insight) == []


def test_a_record_page_links_the_views_of_its_mechanism(client: httpx.Client) -> None:
    [project] = client.get("/api/memory/records", params={"namespace": L2_NAMESPACE, "kind": "L2Project"}).json()
    assert client.get("/api/memory/record", params={"namespace": L2_NAMESPACE, "id": project["id"]}).json()["links"] == [
        {"label": "L2MAC project: instructions, files and versions", "url": f"/mechanisms/l2mac/project?namespace={L2_NAMESPACE}&thread={L2_THREAD}"}
    ]
    page = client.get("/memory/record", params={"namespace": L2_NAMESPACE, "id": project["id"]}).text
    assert 'id="record-links"' in page and f"/mechanisms/l2mac/project?namespace={L2_NAMESPACE}&amp;thread={L2_THREAD}" in page
    [insight] = client.get("/api/memory/records", params={"namespace": GM_NAMESPACE, "kind": "GInsight", "limit": 1}).json()
    assert client.get("/api/memory/record", params={"namespace": GM_NAMESPACE, "id": insight["id"]}).json()["links"]


def test_the_views_work_without_scripts(client: httpx.Client, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without the front-end libraries the pages load no script: the pickers are plain forms with a button."""
    monkeypatch.setattr(pages, "VENDOR", tmp_path / "node_modules")
    file = {"namespace": L2_NAMESPACE, "thread": L2_THREAD, "path": "greet/hello.py"}
    for path, params, button in (
        ("/mechanisms/l2mac/project", file, 'id="version-show"'),
        ("/mechanisms/gmemory", {"namespace": GM_NAMESPACE}, 'id="gm-status-show"'),
        ("/mechanisms/gmemory/query", {"namespace": GM_NAMESPACE, "id": query_id(GM_NAMESPACE, "t1")}, ""),
        ("/mechanisms/l2mac", {}, ""),
    ):
        response = client.get(path, params=params)
        assert response.status_code == 200 and "<script" not in response.text and button in response.text, path


def test_stored_markup_is_shown_as_text(client: httpx.Client) -> None:
    escaped = "&lt;script&gt;window.__pwned = 1&lt;/script&gt;&lt;img src=&#34;x&#34; onerror=&#34;window.__pwned = 2&#34;&gt;"
    readme = client.get("/mechanisms/l2mac/project", params={"namespace": L2_NAMESPACE, "thread": L2_THREAD, "path": "README.md"})
    gm = client.get("/mechanisms/gmemory", params={"namespace": GM_NAMESPACE})
    for page in (readme, gm):
        assert page.status_code == 200
        assert escaped in page.text and "<script>window" not in page.text and "<img" not in page.text
    assert gm.text.count(escaped) >= 2  # the insight's text and the failed task's likely mistake


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/api/mechanisms/l2mac/project", {"namespace": L2_NAMESPACE, "thread": "no-such-thread"}, 404),
        ("/api/mechanisms/l2mac/project", {"namespace": GM_NAMESPACE, "thread": L2_THREAD}, 404),
        ("/api/mechanisms/l2mac/project", {"namespace": L2_NAMESPACE}, 422),
        ("/api/mechanisms/l2mac/file", {"namespace": L2_NAMESPACE, "thread": L2_THREAD, "path": "no/such.py"}, 404),
        (
            "/api/mechanisms/l2mac/file",
            {"namespace": L2_NAMESPACE, "thread": L2_THREAD, "path": "greet/hello.py", "version": 3},
            404,
        ),
        (
            "/api/mechanisms/l2mac/file",
            {"namespace": L2_NAMESPACE, "thread": L2_THREAD, "path": "greet/hello.py", "version": 0},
            422,
        ),
        (
            "/api/mechanisms/l2mac/diff",
            {"namespace": L2_NAMESPACE, "thread": L2_THREAD, "path": "greet/hello.py", "from": 9},
            404,
        ),
        ("/api/mechanisms/l2mac/diff", {"namespace": L2_NAMESPACE, "thread": L2_THREAD, "path": "greet/hello.py"}, 422),
        ("/api/mechanisms/gmemory", {"namespace": "no-such-namespace"}, 404),
        ("/api/mechanisms/gmemory", {"namespace": L2_NAMESPACE}, 404),
        ("/api/mechanisms/gmemory", {"namespace": GM_NAMESPACE, "status": "wobbly"}, 422),
        ("/api/mechanisms/gmemory", {"namespace": GM_NAMESPACE, "query_offset": -1}, 422),
        ("/api/mechanisms/gmemory/query", {"namespace": GM_NAMESPACE, "id": "no-such-query"}, 404),
        ("/api/mechanisms/gmemory/query", {"namespace": GM_NAMESPACE, "id": insight_id(GM_NAMESPACE, RULE_GOAL)}, 404),
    ],
)
def test_bad_api_input_is_a_client_error(client: httpx.Client, path: str, params: dict[str, Any], status: int) -> None:
    response = client.get(path, params=params)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/mechanisms/l2mac/project", {"namespace": L2_NAMESPACE, "thread": "no-such-thread"}, 404),
        ("/mechanisms/l2mac/project", {"namespace": L2_NAMESPACE, "thread": L2_THREAD, "path": "nope.txt"}, 404),
        ("/mechanisms/l2mac/project", {"namespace": L2_NAMESPACE, "thread": L2_THREAD, "path": "README.md", "against": "x"}, 422),
        ("/mechanisms/gmemory", {"namespace": "no-such-namespace"}, 404),
        ("/mechanisms/gmemory/query", {"namespace": GM_NAMESPACE, "id": "no-such-query"}, 404),
    ],
)
def test_bad_page_input_is_an_error_page(client: httpx.Client, path: str, params: dict[str, Any], status: int) -> None:
    response = client.get(path, params=params)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html") and f"<h1>{status}</h1>" in response.text


# -- Neo4j ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def neo4j_client(neo4j_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """The mechanisms' runs made once on the session's Neo4j (emptied first), and a client of the app serving it."""
    wipe_neo4j(neo4j_uri)
    settings = settings_for("neo4j", neo4j_uri=neo4j_uri)
    folder = tmp_path_factory.mktemp("ui-mechanisms-neo4j")

    async def write() -> Made:
        store = new_store("neo4j", neo4j_uri=neo4j_uri)
        await store.setup()
        try:
            return await make(store, settings, folder)
        finally:
            await store.close()

    run_async(write)
    with serve(create_app(settings)) as url, httpx.Client(base_url=url, timeout=30) as http:
        yield http


def test_the_l2mac_view_on_neo4j(neo4j_client: httpx.Client) -> None:
    check_l2mac(neo4j_client)
    response = neo4j_client.get("/api/mechanisms/l2mac/project", params={"namespace": L2_NAMESPACE, "thread": "no-such-thread"})
    assert response.status_code == 404


def test_the_gmemory_view_on_neo4j(neo4j_client: httpx.Client) -> None:
    check_gmemory(neo4j_client)
    response = neo4j_client.get("/api/mechanisms/gmemory/query", params={"namespace": GM_NAMESPACE, "id": "no-such-query"})
    assert response.status_code == 404
