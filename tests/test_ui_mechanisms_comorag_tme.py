"""The ComoRAG and TME views over real HTTP, on memory their own graphs made against the scripted model.

A book is indexed by ``comorag-ingest`` and asked one question by ``comorag-qa`` (an impasse, one probe, then an
answer); TME's four paper scenarios run turn by turn through ``tme-turn`` (the trip one re-deriving stale steps), plus
a conversation whose values are markup. The app serves the store under uvicorn. The tests check the workspace against
what the run's state says it wrote, the forest after every turn against the scenarios' expected forests, the 404s,
and that stored markup comes back escaped. Plain sync functions, so the browser tests can share the seeding.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from mnemoflow.flows.server.app import create_app
from mnemoflow.flows.server.ui.mechanisms import comorag, tme
from mnemoflow.graphs import GraphRunner, load_graph, run_graph
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.nodes.comorag.agents import EPISODIC_SYSTEM, NER_SYSTEM, SEMANTIC_SYSTEM, TRIPLES_SYSTEM
from mnemoflow.nodes.comorag.model import book_record_id, chunk_id, question_id
from mnemoflow.nodes.comorag.state import Unit
from mnemoflow.nodes.tme.agents import ANSWER_SYSTEM, CLASSIFY_SYSTEM, DECOMPOSE_SYSTEM
from mnemoflow.nodes.tme.conversation import save_turn
from mnemoflow.nodes.tme.forest import Forest, node_key, slot_key
from mnemoflow.nodes.tme.model import session_record_id, task_node_id, turn_record_id
from mnemoflow.settings import Settings
from tests.conftest import EMBEDDER, new_store, settings_for
from tests.support.comorag_book import BOOK as BOOK_FIXTURE
from tests.support.comorag_book import answer, build_book, script
from tests.support.openai_server import Rule, ScriptedOpenAIServer
from tests.support.tme_scenarios import SCENARIOS, TRIP, F, H, Scenario, expected_forests, play, script_scenario, turn_graph
from tests.support.web_server import serve
from tests.test_comorag_ingest import ENTITIES, TRIPLES, opening
from tests.test_comorag_qa import small_graph
from tests.test_ui import run_async

NAMESPACE = "mechanisms-ui"
BOOK = "salt"
HOSTILE = '<img src=x onerror="window.__pwned=1">'
SCRIPT = "<script>window.__pwned=1</script>"
TRIP_TASK = "plan a trip"
QUESTION = f"Who was the guardian of Tobin Orsk {SCRIPT}?"
PROBE = "Who looked after the Orsk children?"
FINAL = "Corvin Ashe <b>the guardian</b>"
QA_THREAD = "qa-thread"
HOSTILE_SESSION = "markup"
SEEDED_SESSION = "seeded"
LAYER_KINDS = {"veridical": "Chunk", "semantic": "SemanticSummary", "episodic": "EpisodicSummary"}


@dataclass(frozen=True)
class Made:
    """What the seeding wrote, in ``namespace``."""

    namespace: str
    settings: Settings
    question_id: str
    qa_run_id: str
    qa_state: dict[str, Any]
    ingest_run_id: str
    ingest_state: dict[str, Any]
    scenarios: tuple[Scenario, ...]


# -- making the memory with the mechanisms' graphs -----------------------------------------------------------------


def script_comorag(server: ScriptedOpenAIServer) -> None:
    """Replies for ingestion (as ``tests/test_comorag_ingest.py``) and for one question: an impasse, one probe, an
    answer; every cue holds markup."""
    server.script(
        Rule(system=NER_SYSTEM, json={"named_entities": ENTITIES}),
        Rule(system=TRIPLES_SYSTEM, json={"triples": TRIPLES}),
        Rule(system=SEMANTIC_SYSTEM, replies=[f"Summary {i}: Nima Orsk counts the years in Hollin Pan." for i in range(200)]),
        Rule(system=EPISODIC_SYSTEM, replies=[f"Episode {i}: the caravan returns and the debt is read out." for i in range(200)]),
        Rule(system="recognition memory", json={"keep": [1, 2]}),
        Rule(system="narrative analyst", json={"findings": [f"The guardian {HOSTILE} was Corvin Ashe."]}),
        Rule(system="regulation agent", json={"probes": [PROBE]}),
        Rule(system="integration agent", json={"narrative": f"Fused narrative {SCRIPT}: Corvin Ashe became guardian."}),
        Rule(system="careful reader", replies=[answer("*"), answer(FINAL)]),
    )


def _ends_with(prefix: str, utterance: str) -> re.Pattern[str]:
    return re.compile(re.escape(f"{prefix}{utterance}") + r"\Z")


HOSTILE_TURNS = (
    (
        f"destination: {HOSTILE}",
        [
            {"intent": "new", "slot": "destination", "value": HOSTILE, "parent": SCRIPT},
            {"intent": "new", "slot": "hotel", "value": "Hotel Ritz", "parent": SCRIPT, "depends_on": ["destination"]},
        ],
    ),
    ("go to Rome instead", [{"intent": "update", "slot": "destination", "value": "Rome"}]),
)
"""A conversation whose task root is a script tag and whose first destination is markup; the update makes the hotel
stale."""


def script_hostile_turns(server: ScriptedOpenAIServer) -> None:
    for utterance, operations in HOSTILE_TURNS:
        server.script(
            Rule(
                system=DECOMPOSE_SYSTEM[:30],
                user=_ends_with("Message: ", utterance),
                json={"task": "plan a trip", "substeps": []},
            ),
            Rule(system=CLASSIFY_SYSTEM[:30], user=_ends_with("Message: ", utterance), json={"operations": operations}),
            Rule(system=ANSWER_SYSTEM[:30], user=_ends_with("User: ", utterance), text=f"{SCRIPT} noted"),
        )


async def make_comorag(
    store: GraphStore, settings: Settings, server: ScriptedOpenAIServer, namespace: str, folder: Path
) -> dict[str, Any]:
    """Index the book and ask the question; the runs' ids and states."""
    llm = server.gateway()
    common: dict[str, Any] = {
        "store": store,
        "embedder": EMBEDDER,
        "llm": llm,
        "settings": settings,
        "checkpointer": None,
        "namespace": namespace,
    }
    try:
        ingest = await run_graph(
            load_graph("comorag-ingest"),
            {"book_id": BOOK, "title": "The Salt Road <b>bold</b>", "text": opening(500), "chunk_tokens": 96},
            **common,
        )
        qa = await run_graph(
            load_graph(small_graph(folder)),
            {"book_id": BOOK, "question": QUESTION, "max_cycles": 2},
            thread_id=QA_THREAD,
            **common,
        )
    finally:
        await llm.aclose()
    assert ingest.status == "completed" and qa.status == "completed", (ingest.status, qa.status)
    return {"ingest": ingest, "qa": qa}


async def make_tme(
    store: GraphStore,
    settings: Settings,
    server: ScriptedOpenAIServer,
    namespace: str,
    folder: Path,
    scenarios: tuple[Scenario, ...],
) -> None:
    """Play each scenario as the conversation named after it, then the conversation with markup, then a conversation
    whose turns were saved without their operations."""
    llm = server.gateway()
    try:
        for scenario in scenarios:
            runner = GraphRunner(
                turn_graph(scenario, folder), store=store, embedder=EMBEDDER, llm=llm, settings=settings, checkpointer=None
            )
            async with runner:
                await play(scenario, runner, namespace, scenario.name, server=server)
        async with GraphRunner(
            load_graph("tme-turn"), store=store, embedder=EMBEDDER, llm=llm, settings=settings, checkpointer=None
        ) as runner:
            for utterance, _ in HOSTILE_TURNS:
                result = await runner.run({"session": HOSTILE_SESSION, "utterance": utterance}, namespace=namespace)
                assert result.status == "completed"
    finally:
        await llm.aclose()
    seeded = Forest()
    seeded.add("destination", "Lisbon", parent=None, depends_on=[], turn=1)
    await save_turn(store, namespace, SEEDED_SESSION, expected_turns=0, forest=seeded, turn={"utterance": "seed"})
    seeded.update("destination", "Porto", turn=2)
    await save_turn(store, namespace, SEEDED_SESSION, expected_turns=1, forest=seeded, turn={"utterance": "seed again"})


def make_memory(
    backend: str,
    folder: Path,
    *,
    neo4j_uri: str | None = None,
    comorag_views: bool = True,
    scenarios: tuple[Scenario, ...] = SCENARIOS,
) -> Made:
    """Seed a store of ``backend`` (the SQLite file ``folder/memory.db``, or the Neo4j at ``neo4j_uri``)."""
    settings = settings_for(backend, neo4j_uri=neo4j_uri, sqlite_path=folder / "memory.db")

    async def work() -> dict[str, Any]:
        store = new_store(backend, neo4j_uri=neo4j_uri, sqlite_path=folder / "memory.db")
        await store.setup()
        made: dict[str, Any] = {}
        try:
            with ScriptedOpenAIServer() as server:
                script_comorag(server)
                for scenario in scenarios:
                    script_scenario(server, scenario)
                script_hostile_turns(server)
                if comorag_views:
                    made = await make_comorag(store, settings, server, NAMESPACE, folder)
                await make_tme(store, settings, server, NAMESPACE, folder, scenarios)
        finally:
            await store.close()
        return made

    runs = run_async(work)
    qa, ingest = runs.get("qa"), runs.get("ingest")
    return Made(
        namespace=NAMESPACE,
        settings=settings,
        question_id=str(qa.state["question_id"]) if qa else "",
        qa_run_id=qa.run_id if qa else "",
        qa_state=qa.state if qa else {},
        ingest_run_id=ingest.run_id if ingest else "",
        ingest_state=ingest.state if ingest else {},
        scenarios=scenarios,
    )


# -- reading the views' JSON -----------------------------------------------------------------------------------------


def workspace_units(workspace: dict[str, Any]) -> list[dict[str, Any]]:
    """Every unit the workspace shows: the probes' units and the fusions."""
    units = [unit for attempt in workspace["attempts"] for probe in attempt["probes"] for unit in probe["units"]]
    return units + [attempt["fusion"] for attempt in workspace["attempts"] if attempt["fusion"]]


def check_workspace(workspace: dict[str, Any], made: Made) -> None:
    """The workspace is what the run's state says it wrote: an impasse on the question's evidence, then an answer after
    one probe and a fusion of half the pool; each layer unit read one record of its layer."""
    written = [Unit.model_validate(unit) for unit in made.qa_state["units"]]
    assert workspace["id"] == made.question_id and workspace["question"] == QUESTION and workspace["book_id"] == BOOK
    assert workspace["status"] == "answered" and workspace["final_answer"] == FINAL and workspace["cycles"] == 1
    first, second = workspace["attempts"]
    assert (first["index"], first["status"], first["prediction"]) == (0, "impasse", "*")
    assert (second["index"], second["status"], second["prediction"]) == (1, "answered", FINAL)
    [asked] = first["probes"]
    assert asked["is_question"] and asked["text"] == QUESTION
    [probed] = second["probes"]
    assert not probed["is_question"] and probed["text"] == PROBE
    assert first["fusion"] is None
    for probe in (asked, probed):
        assert [unit["layer"] for unit in probe["units"]] == ["veridical", "semantic", "episodic"][: len(probe["units"])]
        for unit in probe["units"]:
            assert unit["cue"] == f"Key Finding: The guardian {HOSTILE} was Corvin Ashe."
            [evidence] = unit["evidence"]  # the small graph retrieves one item per layer
            assert evidence["kind"] == LAYER_KINDS[unit["layer"]] and evidence["layer"] == unit["layer"] and evidence["rank"] == 0
            assert evidence["text"] and evidence["url"].startswith("/memory/record?")
    assert len(asked["units"]) == 3 and all(unit["in_pool"] for unit in asked["units"])
    assert probed["units"] and not any(unit["in_pool"] for unit in probed["units"])
    fusion = second["fusion"]
    assert fusion["layer"] == "fusion" and fusion["cue"] == f"Fused narrative {SCRIPT}: Corvin Ashe became guardian."
    assert len(fusion["fused_from"]) == math.ceil(len(asked["units"]) * 0.5)
    assert set(fusion["fused_from"]) <= {unit["id"] for unit in asked["units"]} and set(fusion["fused_from"]) <= set(
        workspace["units"]
    )
    shown = {unit["id"]: unit for unit in workspace_units(workspace)}
    assert sorted(shown) == sorted(unit.id for unit in written)
    for unit in written:
        assert (shown[unit.id]["layer"], shown[unit.id]["cycle"], shown[unit.id]["cue"]) == (unit.layer, unit.cycle, unit.cue)
        if unit.layer != "fusion":
            assert [item["id"] for item in shown[unit.id]["evidence"]] == unit.evidence


def flat_steps(forest: dict[str, Any]) -> list[dict[str, Any]]:
    def walk(steps: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for step in steps:
            yield step
            yield from walk(step["children"])

    return [*walk(forest["roots"]), *forest["removed"]]


def forest_views(forest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The forest JSON in the shape of the scenarios' expected forests (``tests/support/tme_scenarios.py``)."""
    return {
        step["key"]: {
            "slot": step["slot"],
            "task": step["key"].rpartition("/")[0] or None,
            "value": step["value"],
            "parent": step["parent"],
            "depends_on": tuple(dependency["key"] for dependency in step["depends_on"]),
            "status": step["status"],
            "stale": step["stale_reason"] if step["stale"] else None,
            "version": step["version"],
            "history": tuple(H(entry["value"], entry["reason"], entry["turn"]) for entry in step["history"]),
            "flags": tuple(F(flag["child"], flag["cause"], flag["turn"]) for flag in step["changed_children"]),
        }
        for step in flat_steps(forest)
    }


def check_every_turn(client: httpx.Client, namespace: str, scenario: Scenario) -> None:
    """The forest the view shows after each turn is the one the scenario expects after it."""
    for number, expected in enumerate(expected_forests(scenario), start=1):
        shown = client.get(
            "/api/mechanisms/tme/session", params={"namespace": namespace, "session": scenario.name, "turn": number}
        ).json()
        assert shown["turn"] == number and shown["history"] == {"rebuilt": True, "reason": ""}
        assert forest_views(shown["forest"]) == expected, f"{scenario.name}, after turn {number}"
        assert shown["chosen"]["utterance"] == scenario.turns[number - 1].utterance
        stale = [step["slot"] for step in flat_steps(shown["forest"]) if step["stale"] and step["status"] == "active"]
        assert sorted(mark["slot"] for mark in shown["forest"]["stale"]) == sorted(stale)


# -- fixtures ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Made:
    return make_memory("sqlite", tmp_path_factory.mktemp("mechanisms-ui"))


@pytest.fixture(scope="module")
def site(made: Made) -> Iterator[str]:
    with serve(create_app(made.settings)) as url:
        yield url


@pytest.fixture
def client(site: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=site, timeout=30) as http:
        yield http


# -- links from runs -----------------------------------------------------------------------------------------------


def test_a_question_run_links_to_its_workspace_and_its_book() -> None:
    run: dict[str, Any] = {
        "graph": "comorag-qa",
        "namespace": "ns",
        "thread_id": "t1",
        "run_id": "r1",
        "input": {"question": "Who?", "book_id": "b"},
    }
    expected = question_id("ns", "b", "Who?", "t1")
    assert [link["url"] for link in comorag.run_links(run)] == [comorag.question_url("ns", expected), comorag.book_url("ns", "b")]
    run["outputs"] = {"question_id": "recorded-id", "status": "answered"}
    assert comorag.run_links(run)[0]["url"] == "/mechanisms/comorag/question?namespace=ns&id=recorded-id"
    # a long question is recorded previewed (a marker, not the text): without outputs only the book can be linked
    previewed = {**run, "input": {"question": {"$text": "Who", "$chars": 5000}, "book_id": "b"}, "outputs": None}
    assert [link["url"] for link in comorag.run_links(previewed)] == [comorag.book_url("ns", "b")]
    assert comorag.run_links({**run, "input": None, "outputs": None}) == []


def test_an_ingest_run_links_to_its_book_and_other_runs_to_nothing() -> None:
    ingest = {"graph": "comorag-ingest", "namespace": "ns", "input": {"book_id": "b&c", "text": {"$text": "...", "$chars": 9}}}
    assert comorag.run_links(ingest) == [
        {"label": "ComoRAG book b&c: its index and questions", "url": "/mechanisms/comorag/book?namespace=ns&book=b%26c"}
    ]
    assert comorag.run_links({"graph": "text-stats", "namespace": "ns", "input": {"book_id": "b"}}) == []
    assert tme.run_links({"graph": "text-stats", "namespace": "ns", "input": {"session": "s"}}) == []


def test_a_turn_run_links_to_its_conversation_at_its_turn() -> None:
    run = {"graph": "tme-turn", "namespace": "ns", "run_id": "r 1", "input": {"session": "trip", "utterance": "hi"}}
    assert tme.run_links(run) == [
        {
            "label": "TME conversation trip: the task forest after this turn",
            "url": "/mechanisms/tme/session?namespace=ns&session=trip&run=r+1",
        }
    ]
    assert tme.run_links({**run, "input": None}) == []  # a resumed run records no input


def test_run_pages_link_to_the_views_of_their_memory(client: httpx.Client, made: Made) -> None:
    ns = made.namespace
    qa = client.get(f"/api/runs/{made.qa_run_id}", params={"namespace": ns}).json()
    assert [link["url"] for link in qa["links"]] == [comorag.question_url(ns, made.question_id), comorag.book_url(ns, BOOK)]
    ingest = client.get(f"/api/runs/{made.ingest_run_id}", params={"namespace": ns}).json()
    assert [link["url"] for link in ingest["links"]] == [comorag.book_url(ns, BOOK)]
    page = client.get(f"/runs/{made.qa_run_id}", params={"namespace": ns})
    assert f'href="{comorag.question_url(ns, made.question_id)}"'.replace("&", "&amp;") in page.text
    turn = client.get("/api/mechanisms/tme/session", params={"namespace": ns, "session": "trip", "turn": 5}).json()["chosen"]
    run = client.get(f"/api/runs/{turn['run_id']}", params={"namespace": ns}).json()
    [link] = run["links"]
    assert link["url"] == tme.session_url(ns, "trip", run=turn["run_id"])
    followed = client.get(link["url"])
    assert followed.status_code == 200 and "Task forest after turn 5" in followed.text


def test_records_link_to_the_views_they_belong_to(client: httpx.Client, made: Made) -> None:
    """``record_links`` of each mechanism, on records as the record API gives them; every link serves its view."""
    ns = made.namespace

    def links(module: Any, record_id: str) -> list[str]:
        node = client.get("/api/memory/record", params={"namespace": ns, "id": record_id}).json()
        found = [link["url"] for link in module.record_links(node)]
        assert all(client.get(url).status_code == 200 for url in found), found
        return found

    workspace, book = comorag.question_url(ns, made.question_id), comorag.book_url(ns, BOOK)
    assert links(comorag, made.question_id) == [workspace, book]
    assert links(comorag, Unit.model_validate(made.qa_state["units"][0]).id) == [workspace]
    assert links(comorag, book_record_id(ns, BOOK)) == [book]
    assert links(comorag, chunk_id(ns, BOOK, 0, made.ingest_state["generation"])) == [book]
    assert links(tme, session_record_id(ns, "trip")) == [tme.session_url(ns, "trip")]
    flights = node_key(TRIP_TASK, "flight search")
    assert links(tme, task_node_id(ns, "trip", flights)) == [tme.session_url(ns, "trip", step=flights)]
    assert links(tme, turn_record_id(ns, "trip", 5)) == [tme.session_url(ns, "trip", turn=5)]
    assert links(comorag, session_record_id(ns, "trip")) == [] and links(tme, made.question_id) == []


# -- ComoRAG -------------------------------------------------------------------------------------------------------


def test_books_list_the_indexed_book_with_its_index_and_questions(client: httpx.Client, made: Made) -> None:
    state = made.ingest_state
    [book] = client.get("/api/mechanisms/comorag/books", params={"namespace": made.namespace}).json()
    chunks = len(state["chunks"])
    assert (book["book_id"], book["title"], book["generation"], book["chunks"], book["window"]) == (
        BOOK,
        "The Salt Road <b>bold</b>",
        state["generation"],
        chunks,
        state["window"],
    )
    assert book["episodes"] == state["episodes"] == math.ceil(chunks / state["window"]) and book["questions"] == 1
    assert any(listed["book_id"] == BOOK for listed in client.get("/api/mechanisms/comorag/books").json())  # every namespace
    page = client.get("/mechanisms/comorag", params={"namespace": made.namespace})
    assert page.status_code == 200 and f'href="{comorag.book_url(made.namespace, BOOK)}"'.replace("&", "&amp;") in page.text
    assert "The Salt Road &lt;b&gt;bold&lt;/b&gt;" in page.text and "<b>bold</b>" not in page.text


def test_book_counts_its_index_and_lists_its_question(client: httpx.Client, made: Made) -> None:
    state = made.ingest_state
    book = client.get("/api/mechanisms/comorag/book", params={"namespace": made.namespace, "book": BOOK}).json()
    assert book["index"] == {
        "Chunk": len(state["chunks"]),
        "Entity": len(state["entity_ids"]),
        "Fact": state["facts"],
        "SemanticSummary": sum(state["semantic_levels"]),
        "EpisodicSummary": state["episodes"],
    }
    assert book["index_scope"] == "namespace" and book["books_in_namespace"] == 1
    [question] = book["questions"]
    assert (question["id"], question["question"], question["status"], question["final_answer"]) == (
        made.question_id,
        QUESTION,
        "answered",
        FINAL,
    )
    assert question["url"] == comorag.question_url(made.namespace, made.question_id)
    page = client.get("/mechanisms/comorag/book", params={"namespace": made.namespace, "book": BOOK})
    assert page.status_code == 200 and 'id="book-index"' in page.text
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in page.text and SCRIPT not in page.text


def test_workspace_shows_each_attempt_its_probes_units_evidence_fusion_and_answer(client: httpx.Client, made: Made) -> None:
    workspace = client.get(
        "/api/mechanisms/comorag/question", params={"namespace": made.namespace, "id": made.question_id}
    ).json()
    check_workspace(workspace, made)
    assert workspace["book_url"] == comorag.book_url(made.namespace, BOOK)


def test_workspace_page_shows_stored_markup_as_text(client: httpx.Client, made: Made) -> None:
    page = client.get("/mechanisms/comorag/question", params={"namespace": made.namespace, "id": made.question_id})
    assert page.status_code == 200
    html = page.text
    assert 'id="attempt-0"' in html and 'id="attempt-1"' in html and 'id="fusion-1"' in html
    assert html.count('class="cr-unit"') == len(made.qa_state["units"]) - 1  # the fusion is shown apart
    assert '<script type="module" src="/static/comorag.js"></script>' in html
    assert HOSTILE not in html and SCRIPT not in html and "<b>the guardian</b>" not in html
    assert (
        "&lt;img src=x onerror=&#34;window.__pwned=1&#34;&gt;" in html and "Corvin Ashe &lt;b&gt;the guardian&lt;/b&gt;" in html
    )


async def test_the_first_impasse_is_kept_when_the_question_is_encoded_after_it(
    sqlite_store: GraphStore, namespace: str, tmp_path: Path
) -> None:
    """In the paper's order (``encode_first`` off) the question's evidence is encoded after the first impasse: cycle
    0's record keeps the impasse it answered, and the view shows that attempt failed."""
    await build_book(sqlite_store, EMBEDDER, namespace)
    with ScriptedOpenAIServer() as server:
        script(server, [answer("*"), answer("Corvin Ashe")], [{"probes": [PROBE]}])
        llm = server.gateway()
        try:
            result = await run_graph(
                load_graph(small_graph(tmp_path)),
                {"book_id": BOOK_FIXTURE, "question": "Who was the guardian of Tobin Orsk?", "encode_first": False},
                store=sqlite_store, embedder=EMBEDDER, llm=llm, settings=settings_for("sqlite", sqlite_path=tmp_path / "memory.db"),
                checkpointer=None, namespace=namespace,
            )  # fmt: skip
        finally:
            await llm.aclose()
    workspace = await comorag.question_view(sqlite_store, namespace, result.state["question_id"])
    first, second = workspace["attempts"]
    assert first["prediction"] == "*" and first["failed"]  # encoding the cycle afterwards kept what it answered
    assert (first["status"], second["status"]) == ("impasse", "answered")
    assert [probe["text"] for probe in first["probes"]] == ["Who was the guardian of Tobin Orsk?"] and first["probes"][0]["units"]


def test_an_unknown_question_or_book_is_404(client: httpx.Client, made: Made) -> None:
    ns = made.namespace
    for path, params in (
        ("/api/mechanisms/comorag/question", {"namespace": ns, "id": "no-such-question"}),
        ("/api/mechanisms/comorag/question", {"namespace": ns, "id": book_record_id(ns, BOOK)}),  # a record, not a question
        ("/api/mechanisms/comorag/question", {"namespace": "elsewhere", "id": made.question_id}),
        ("/api/mechanisms/comorag/book", {"namespace": ns, "book": "no-such-book"}),
    ):
        response = client.get(path, params=params)
        assert response.status_code == 404 and "no ComoRAG" in response.json()["error"], (path, params)
    page = client.get("/mechanisms/comorag/question", params={"namespace": ns, "id": "no-such-question"})
    assert page.status_code == 404 and "no ComoRAG question" in page.text
    assert client.get("/api/mechanisms/comorag/question", params={"namespace": ns}).status_code == 422


# -- TME -----------------------------------------------------------------------------------------------------------


def test_conversations_are_listed(client: httpx.Client, made: Made) -> None:
    sessions = {s["session"]: s for s in client.get("/api/mechanisms/tme/sessions", params={"namespace": made.namespace}).json()}
    assert set(sessions) == {scenario.name for scenario in made.scenarios} | {HOSTILE_SESSION, SEEDED_SESSION}
    for scenario in made.scenarios:
        assert sessions[scenario.name]["turns"] == len(scenario.turns)
        assert sessions[scenario.name]["steps"] == len(expected_forests(scenario)[-1])
    page = client.get("/mechanisms/tme", params={"namespace": made.namespace})
    assert page.status_code == 200 and 'href="/mechanisms/tme/session?namespace=mechanisms-ui&amp;session=trip"' in page.text


@pytest.mark.parametrize("name", [scenario.name for scenario in SCENARIOS])
def test_the_forest_after_every_turn_is_the_one_the_scenario_expects(client: httpx.Client, made: Made, name: str) -> None:
    check_every_turn(client, made.namespace, next(scenario for scenario in made.scenarios if scenario.name == name))


def test_a_turn_shows_its_operations_changes_reply_and_run(client: httpx.Client, made: Made) -> None:
    shown = client.get("/api/mechanisms/tme/session", params={"namespace": made.namespace, "session": "trip", "turn": 5}).json()
    turn = shown["chosen"]
    assert turn["operations"] == list(TRIP.turns[4].operations)
    assert [change["op"] for change in turn["changes"]] == ["update", "rederive", "rederive"]
    assert turn["stale"] == list(TRIP.turns[4].stale) and turn["response"] == TRIP.turns[4].answer
    assert "Task memory (current values):" in turn["prompt"] and "June 10-14" not in turn["prompt"]
    assert [step["slot"] for step in flat_steps(shown["forest"]) if step["changed"]] == [
        "travel dates",
        "flight search",
    ]  # hotel re-derived to its old value
    run = client.get(f"/api/runs/{turn['run_id']}", params={"namespace": made.namespace}).json()
    assert run["graph"] == "tme-turn" and turn["run_url"] == f"/runs/{turn['run_id']}?namespace={made.namespace}"
    assert len(shown["turn_list"]) == len(TRIP.turns) and shown["turn_list"][4]["run_id"] == turn["run_id"]
    by_run = client.get(
        "/api/mechanisms/tme/session", params={"namespace": made.namespace, "session": "trip", "run": turn["run_id"]}
    ).json()
    assert by_run["turn"] == 5 and by_run["note"] == ""
    unknown = client.get(
        "/api/mechanisms/tme/session", params={"namespace": made.namespace, "session": "trip", "run": "no-such-run"}
    ).json()
    assert unknown["turn"] == len(TRIP.turns) and "saved no turn" in unknown["note"]


def test_a_step_shows_its_value_history(client: httpx.Client, made: Made) -> None:
    params = {"namespace": made.namespace, "session": "trip", "step": node_key(TRIP_TASK, "flight search")}
    history = client.get("/api/mechanisms/tme/step", params=params).json()
    assert [
        (v["version"], v["value"], v["from_turn"], v["until_turn"], v["ended_by"], v["current"]) for v in history["versions"]
    ] == [
        (1, "New York to Paris, June 10", 4, 5, "re-derived", False),
        (2, "New York to Paris, June 17", 5, 6, "re-derived", False),
        (3, "New York to Rome, June 17", 6, 7, "re-derived", False),
        (4, "New York to Paris, June 17", 7, None, None, True),
    ]
    assert history["shown_version"] == 4
    assert client.get("/api/mechanisms/tme/step", params={**params, "turn": 6}).json()["shown_version"] == 3
    assert client.get("/api/mechanisms/tme/step", params={**params, "turn": 3}).json()["shown_version"] is None  # not yet a step
    page = client.get("/mechanisms/tme/session", params={**params, "turn": 6})
    assert page.status_code == 200 and 'id="versions"' in page.text and 'class="tme-version-shown"' in page.text
    assert page.text.count("<tr class=") == 4


def test_stale_marks_come_with_their_reasons(client: httpx.Client, made: Made) -> None:
    shown = client.get(
        "/api/mechanisms/tme/session", params={"namespace": made.namespace, "session": "cooking", "turn": 5}
    ).json()
    assert {mark["slot"]: mark["reason"] for mark in shown["forest"]["stale"]} == {
        "soup": "'shared vegetable' was updated at turn 5",
        "dumplings": "'shared vegetable' was updated at turn 5",
    }
    page = client.get("/mechanisms/tme/session", params={"namespace": made.namespace, "session": "cooking", "turn": 5})
    assert 'id="stale-list"' in page.text and "&#39;shared vegetable&#39; was updated at turn 5" in page.text


def test_a_forest_that_cannot_be_rebuilt_is_not_guessed(client: httpx.Client, made: Made) -> None:
    last = client.get("/api/mechanisms/tme/session", params={"namespace": made.namespace, "session": SEEDED_SESSION}).json()
    assert (
        last["turn"] == 2
        and last["history"]["rebuilt"] is False
        and "does not give the stored forest" in last["history"]["reason"]
    )
    assert [(step["slot"], step["value"], step["version"]) for step in flat_steps(last["forest"])] == [
        ("destination", "Porto", 2)
    ]
    first = client.get(
        "/api/mechanisms/tme/session", params={"namespace": made.namespace, "session": SEEDED_SESSION, "turn": 1}
    ).json()
    assert first["forest"] is None and first["chosen"]["utterance"] == "seed"
    page = client.get("/mechanisms/tme/session", params={"namespace": made.namespace, "session": SEEDED_SESSION, "turn": 1})
    assert page.status_code == 200 and 'id="forest-unknown"' in page.text


def test_a_conversation_page_shows_stored_markup_as_text(client: httpx.Client, made: Made) -> None:
    shown = client.get("/api/mechanisms/tme/session", params={"namespace": made.namespace, "session": HOSTILE_SESSION}).json()
    [root] = shown["forest"]["roots"]
    assert root["slot"] == SCRIPT and [child["slot"] for child in root["children"]] == ["destination", "hotel"]
    hotel = node_key(slot_key(SCRIPT), "hotel")
    assert shown["forest"]["stale"] == [{"key": hotel, "slot": "hotel", "reason": "'destination' was updated at turn 2"}]
    for turn in (1, 2):
        page = client.get(
            "/mechanisms/tme/session",
            params={"namespace": made.namespace, "session": HOSTILE_SESSION, "turn": turn, "step": node_key(slot_key(SCRIPT), "destination")},
        )
        assert page.status_code == 200
        assert HOSTILE not in page.text and SCRIPT not in page.text
        assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in page.text and "&lt;img src=x onerror=" in page.text


def test_an_unknown_conversation_turn_or_step_is_404(client: httpx.Client, made: Made) -> None:
    ns = made.namespace
    for path, params, message in (
        ("/api/mechanisms/tme/session", {"namespace": ns, "session": "no-such-session"}, "no TME conversation"),
        ("/api/mechanisms/tme/session", {"namespace": "elsewhere", "session": "trip"}, "no TME conversation"),
        ("/api/mechanisms/tme/session", {"namespace": ns, "session": "trip", "turn": 12}, "turns 1 to 11, not turn 12"),
        ("/api/mechanisms/tme/step", {"namespace": ns, "session": "trip", "step": "budget"}, "no step 'budget'"),
        ("/api/mechanisms/tme/step", {"namespace": ns, "session": "no-such-session", "step": "hotel"}, "no TME conversation"),
    ):
        response = client.get(path, params=params)
        assert response.status_code == 404 and message in response.json()["error"], (path, params)
    page = client.get("/mechanisms/tme/session", params={"namespace": ns, "session": "trip", "step": "budget"})
    assert page.status_code == 404 and "no step" in page.text
    assert client.get("/api/mechanisms/tme/session", params={"namespace": ns, "session": "trip", "turn": 0}).status_code == 422


# -- on Neo4j ------------------------------------------------------------------------------------------------------


def test_comorag_views_on_neo4j(empty_neo4j: str, tmp_path: Path) -> None:
    made = make_memory("neo4j", tmp_path, neo4j_uri=empty_neo4j, scenarios=())
    with serve(create_app(made.settings)) as url, httpx.Client(base_url=url, timeout=30) as client:
        workspace = client.get(
            "/api/mechanisms/comorag/question", params={"namespace": made.namespace, "id": made.question_id}
        ).json()
        check_workspace(workspace, made)
        book = client.get("/api/mechanisms/comorag/book", params={"namespace": made.namespace, "book": BOOK}).json()
        assert book["index"]["Chunk"] == len(made.ingest_state["chunks"]) and [q["id"] for q in book["questions"]] == [
            made.question_id
        ]
        page = client.get("/mechanisms/comorag/question", params={"namespace": made.namespace, "id": made.question_id})
        assert page.status_code == 200 and HOSTILE not in page.text and 'id="attempt-1"' in page.text


def test_tme_view_on_neo4j(empty_neo4j: str, tmp_path: Path) -> None:
    made = make_memory("neo4j", tmp_path, neo4j_uri=empty_neo4j, comorag_views=False, scenarios=(TRIP,))
    with serve(create_app(made.settings)) as url, httpx.Client(base_url=url, timeout=30) as client:
        check_every_turn(client, made.namespace, TRIP)
        history = client.get(
            "/api/mechanisms/tme/step", params={"namespace": made.namespace, "session": "trip", "step": node_key(TRIP_TASK, "hotel")}
        ).json()
        assert [v["value"] for v in history["versions"]] == ["Hotel du Louvre", "Hotel Artemide", "Hotel du Louvre"]
        page = client.get("/mechanisms/tme/session", params={"namespace": made.namespace, "session": HOSTILE_SESSION})
        assert page.status_code == 200 and SCRIPT not in page.text
