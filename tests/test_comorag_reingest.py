"""Re-ingesting a changed book leaves exactly the records the new text makes, on both stores (issue 28, case 1).

The scripted model answers every index call from the prompt alone (names and triples found in the passage, summaries
made of its words), so two ingests of one text write the same records whatever the order of the calls, and a
fresh ingest in an empty namespace is the yardstick of what a re-ingest must leave. The answer agent answers only
when the keeper's name is in its context: an answer is proof of what was retrieved.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from mnemoflow.errors import LLMError
from mnemoflow.graphs import RunResult, load_graph, run_graph
from mnemoflow.llm import LLM
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.nodes.comorag.agents import (
    ANSWER_SYSTEM,
    EPISODIC_SYSTEM,
    FACT_FILTER_SYSTEM,
    NER_SYSTEM,
    SEMANTIC_SYSTEM,
    TRIPLES_SYSTEM,
)
from mnemoflow.nodes.comorag.chunking import chunk_text
from mnemoflow.settings import Settings, StoreSettings
from tests.conftest import EMBEDDER, cli_environment, new_store
from tests.support.comorag_book import CHUNKS, build_book
from tests.support.openai_server import Rule, ScriptedOpenAIServer
from tests.test_comorag_ingest import cached_gateway

BOOK = "harbour"
KEEPER = "Oren Vask"
"""The answer to the question, told only by text A."""
HARBOUR_MASTER = "Tamsin Holt"
"""Named only by text B."""
QUESTION = "Who kept the lighthouse of Skerry Point?"
COMMON = [
    "The fishing town of Lowmere sat at the mouth of the grey river, where the boats came in at dusk.",
    "Every spring the salt traders of Lowmere sailed north along the coast to the markets of Varn.",
    "The old ferry crossed the river twice a day, and the ferryman Bran Coll knew every family by name.",
    "In the long winter the river froze, and the children of Lowmere skated from bank to bank.",
]
TEXT_A = "\n\n".join(
    [
        *COMMON,
        f"The lighthouse of Skerry Point was kept by {KEEPER}, who trimmed its wick every night for forty years.",
        f"When storms came, {KEEPER} rang the bell of Skerry Point until the last boat was home.",
        "The market of Lowmere sold herring, rope and tar, and the traders paid their dues in salt.",
    ]
)
TEXT_B = "\n\n".join([*COMMON[:3], f"The new harbour master of Lowmere was {HARBOUR_MASTER}, who kept the tide tables."])
TOKENS_A, TOKENS_B = 40, 70
NAMES = [KEEPER, HARBOUR_MASTER, "Bran Coll", "Lowmere", "Skerry Point", "Varn"]
TRIPLES = [
    (KEEPER, "kept the lighthouse of", "Skerry Point"),
    (HARBOUR_MASTER, "was harbour master of", "Lowmere"),
    ("Bran Coll", "was ferryman of", "Lowmere"),
    ("Lowmere", "traded with", "Varn"),
]
MNEMOFLOW = str(Path(sys.executable).with_name("mnemoflow"))


def user_text(body: dict[str, Any]) -> str:
    return "\n".join(str(message.get("content", "")) for message in body["messages"] if message.get("role") == "user")


def summary(body: dict[str, Any]) -> str:
    """A summary made of words of the prompt's end (the passages): the same prompt, the same summary."""
    return "Summary: " + " ".join(user_text(body).split()[-40:][:16])


def rules() -> list[Rule]:
    """Every index call and the QA calls of a plain retrieval-augmented run, answered from the prompt alone."""
    return [
        Rule(system=NER_SYSTEM, respond=lambda body: {"named_entities": [n for n in NAMES if n in user_text(body)]}),
        Rule(
            system=TRIPLES_SYSTEM,
            respond=lambda body: {"triples": [list(t) for t in TRIPLES if t[0] in user_text(body) and t[2] in user_text(body)]},
        ),
        Rule(system=SEMANTIC_SYSTEM, respond=summary),
        Rule(system=EPISODIC_SYSTEM, respond=summary),
        Rule(system=FACT_FILTER_SYSTEM, json={"keep": [1, 2, 3]}),
        Rule(
            system=ANSWER_SYSTEM,
            respond=lambda body: {"analysis": "read", "final_answer": KEEPER if KEEPER in user_text(body) else "*"},
        ),
    ]


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer() as running:
        running.script(*rules())
        yield running


@pytest.fixture
async def llm(server: ScriptedOpenAIServer, tmp_path: Path) -> AsyncIterator[LLM]:
    """The gateway with its reply cache in the test's folder."""
    gateway = cached_gateway(server, tmp_path)
    try:
        yield gateway
    finally:
        await gateway.aclose()


def chats(server: ScriptedOpenAIServer) -> int:
    return server.count("/chat/completions")


async def completed(store: GraphStore, llm: LLM, namespace: str, graph: str, values: dict[str, Any]) -> RunResult:
    result = await run_graph(
        load_graph(graph),
        values,
        store=store,
        embedder=EMBEDDER,
        llm=llm,
        settings=Settings(store=StoreSettings(sqlite_path=Path("unused.db"))),
        checkpointer=None,
        namespace=namespace,
    )
    assert result.status == "completed"
    return result


async def ingest(store: GraphStore, llm: LLM, namespace: str, text: str, chunk_tokens: int) -> RunResult:
    values = {"book_id": BOOK, "title": "Lowmere", "text": text, "chunk_tokens": chunk_tokens}
    return await completed(store, llm, namespace, "comorag-ingest", values)


async def ask(store: GraphStore, llm: LLM, namespace: str) -> RunResult:
    """The question by plain retrieval-augmented answering (one retrieval, one answer call)."""
    values = {"question": QUESTION, "book_id": BOOK, "max_cycles": 0, "encode_first": False}
    return await completed(store, llm, namespace, "comorag-qa", values)


def retrieved(result: RunResult) -> str:
    """Every text the question's retrieval gave and the context its answer read."""
    texts = [item.text for items in result.state["evidence"].values() for item in items]
    return "\n".join([*texts, result.state["last_context"]])


INDEX = ("Book", "Chunk", "Entity", "Fact", "SemanticSummary", "EpisodicSummary")


async def snapshot(store: GraphStore, namespace: str, *, ids: bool) -> tuple[list[str], list[str]]:
    """The book's records and the relationships leaving them, as sorted JSON lines: with ``ids`` (and timestamps),
    exactly what is stored; without, what the records say (kind, text, properties), comparable across namespaces."""
    listed = await store.list_nodes(namespace, where={"book_id": BOOK}, limit=1000)  # one query: these are few
    nodes = {record.id: record for record in listed if record.kind in INDEX}

    def key(record_id: str) -> Any:
        record = nodes[record_id]
        if ids:
            return [record.id, record.kind, record.text, record.properties, str(record.updated_at)]
        return [record.kind, record.text, record.properties]

    links = await store.neighbours_of(namespace, list(nodes), direction="out") if nodes else {}
    relationships = [
        [link.relationship.type, key(source), key(link.node.id), link.relationship.properties]
        + ([link.relationship.id] if ids else [])
        for source, found in links.items()
        for link in found
        if link.node.id in nodes
    ]
    as_lines = lambda rows: sorted(json.dumps(row, sort_keys=True, default=str) for row in rows)  # noqa: E731
    return as_lines([key(record_id) for record_id in nodes]), as_lines(relationships)


@pytest.mark.subprocess
async def test_a_changed_book_replaces_its_index_in_one_switch_that_a_kill_cannot_leave_half_done(
    backend: str, server: ScriptedOpenAIServer, llm: LLM, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Text A, then a real ``mnemoflow ingest`` of text B (fewer chunks, another chunk size) SIGKILLed while its
    timeline summary hangs: QA reads all of A and nothing of B. B again: the store holds what a fresh ingest of B
    makes, and the question only A answers is not answered. B once more: no request, not one record rewritten."""
    assert len(chunk_text(TEXT_B, TOKENS_B)) < len(chunk_text(TEXT_A, TOKENS_A))
    uri = request.getfixturevalue("empty_neo4j") if backend == "neo4j" else None
    store = new_store(backend, neo4j_uri=uri, sqlite_path=tmp_path / "memory.db")
    await store.setup()
    episodic = next(rule for rule in server.rules if rule.system == EPISODIC_SYSTEM)
    book = tmp_path / "lowmere.txt"
    book.write_text(TEXT_B, encoding="utf-8")
    command = [MNEMOFLOW, "ingest", "comorag", str(book), "--book", BOOK, "--title", "Lowmere", "--chunk-tokens", str(TOKENS_B)]
    environment = cli_environment(backend, tmp_path, namespace="shelf", neo4j_uri=uri, model_url=server.base_url)
    killed: subprocess.Popen[str] | None = None
    try:
        await ingest(store, llm, "shelf", TEXT_A, TOKENS_A)
        a_nodes, _ = await snapshot(store, "shelf", ids=False)
        assert (await ask(store, llm, "shelf")).state["final_answer"] == KEEPER  # A tells it, and QA finds it

        episodic.latency = 60.0
        start = len(server.requests)
        killed = subprocess.Popen(
            command, env=environment, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 60
        while not any(EPISODIC_SYSTEM in json.dumps(r["body"]) for r in server.requests[start:]):  # in flight
            assert killed.poll() is None, killed.communicate()[1]
            assert time.monotonic() < deadline, "the ingest never reached the timeline"
            await asyncio.sleep(0.05)
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
        assert killed.returncode == -signal.SIGKILL
        episodic.latency = None
        answered = await ask(store, llm, "shelf")
        assert answered.state["final_answer"] == KEEPER and HARBOUR_MASTER not in retrieved(answered)
        nodes, _ = await snapshot(store, "shelf", ids=False)
        assert HARBOUR_MASTER in "".join(nodes) and set(a_nodes) < set(nodes)  # B half-written beside A, A untouched

        await ingest(store, llm, "shelf", TEXT_B, TOKENS_B)
        await ingest(store, llm, "fresh", TEXT_B, TOKENS_B)
        nodes, relationships = await snapshot(store, "shelf", ids=False)
        assert (nodes, relationships) == await snapshot(store, "fresh", ids=False)
        assert KEEPER not in "".join(nodes) + "".join(relationships)
        answered = await ask(store, llm, "shelf")
        assert KEEPER not in retrieved(answered) and answered.state["final_answer"] == "*"

        before, requests = await snapshot(store, "shelf", ids=True), chats(server)
        again = await ingest(store, llm, "shelf", TEXT_B, TOKENS_B)
        assert chats(server) == requests and again.llm_usage["cache_hits"] == again.llm_calls > 0
        assert await snapshot(store, "shelf", ids=True) == before
    finally:
        episodic.latency = None
        if killed is not None and killed.poll() is None:
            killed.kill()
        await store.close()


async def test_a_book_indexed_before_generations_answers_until_its_reingest_publishes_then_is_replaced(
    sqlite_store: GraphStore, llm: LLM, server: ScriptedOpenAIServer
) -> None:
    """A store written before generations (records without one, the ids without one): an ingest of B that fails
    before its switch leaves that index answering, and nothing of B is retrieved though its records match the book;
    B again replaces every old record. (The filtering is the same code on both stores: SQLite only.)"""
    await build_book(sqlite_store, EMBEDDER, "old", BOOK)
    legacy = await snapshot(sqlite_store, "old", ids=True)
    with ScriptedOpenAIServer() as failing:
        failing.script(*[rule for rule in rules() if rule.system != EPISODIC_SYSTEM])  # the timeline call fails
        gateway = failing.gateway()
        try:
            with pytest.raises(LLMError):
                await ingest(sqlite_store, gateway, "old", TEXT_B, TOKENS_B)
        finally:
            await gateway.aclose()
    assert HARBOUR_MASTER in "".join((await snapshot(sqlite_store, "old", ids=False))[0])  # B half-written
    answered = await ask(sqlite_store, llm, "old")
    assert CHUNKS[1] in retrieved(answered) and HARBOUR_MASTER not in retrieved(answered)

    result = await ingest(sqlite_store, llm, "old", TEXT_B, TOKENS_B)
    nodes, _ = await snapshot(sqlite_store, "old", ids=True)
    assert result.state["superseded"] == len(legacy[0]) - 1  # every old record but the Book, rewritten in place
    assert not set(nodes) & set(legacy[0]) and all(result.state["generation"] in node for node in nodes)
