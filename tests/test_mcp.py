"""``mnemoflow mcp`` held to its contract by the MCP SDK's own client, as an outsider would use it: a real child
process over stdio (one server for the module's tool tests) and over streamable HTTP (on loopback, and beyond it
with and without a token), on a SQLite store in a temporary folder and the scripted model."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, TextResourceContents

from mnemoflow.graphs import load_graph
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import NodeRecord, stable_id
from mnemoflow.nodes.comorag.model import book_record_id
from tests.conftest import EMBEDDER, cli_environment, new_store
from tests.support.mcp_server import (
    ANSWER,
    BOOK_TEXT,
    LESSON,
    MNEMOFLOW,
    PAST_TASK,
    HeldClient,
    HttpServer,
    http_servers,
    mechanism_reply,
    seed_team_memory,
    structured,
    text_of,
)
from tests.support.openai_server import ScriptedOpenAIServer
from tests.support.web_server import free_port

pytestmark = [pytest.mark.subprocess, pytest.mark.slow]

TOOLS = {
    "comorag_ingest": (["namespace", "book_id", "text"], ["title"]),
    "comorag_ask": (["namespace", "book_id", "question"], []),
    "tme_turn": (["namespace", "session", "message"], []),
    "tme_tree": (["namespace", "session"], []),
    "gmemory_retrieve": (["namespace", "task"], []),
    "memory_search": (["namespace", "query"], ["kinds", "k"]),
    "memory_read": (["namespace", "id"], ["links"]),
}
"""Each tool's required arguments, in order (``namespace`` first), and its optional ones."""
TEMPLATES = {"mnemoflow://{namespace}/records/{id}", "mnemoflow://{namespace}/kinds"}
BOOKS = "team a/b"
"""The ComoRAG namespace: a space and a slash, so a resource URI must percent-encode it."""
CHAT, TEAM, NOBODY, LONG = "chat", "team-memory", "nobody-here", "long-texts"
LONG_TEXT = " ".join(f"word{number}" for number in range(400))
"""The text of a record longer than a search hit shows."""
BOOK_ID, TITLE = "lighthouse", "The Lighthouse"
QUESTION = "Who kept the lighthouse at Skerry Point?"
INGEST_NODES = list(load_graph("comorag-ingest").spec.nodes)
CHAT_TIMEOUT = 120.0


def valid_arguments(namespace: str) -> dict[str, dict[str, Any]]:
    """Arguments each tool accepts but for the namespace (no call gets past a bad one)."""
    return {
        "comorag_ingest": {"namespace": namespace, "book_id": "other", "text": "A short text."},
        "comorag_ask": {"namespace": namespace, "book_id": BOOK_ID, "question": QUESTION},
        "tme_turn": {"namespace": namespace, "session": "trip", "message": "I am going to Lisbon"},
        "tme_tree": {"namespace": namespace, "session": "trip"},
        "gmemory_retrieve": {"namespace": namespace, "task": PAST_TASK},
        "memory_search": {"namespace": namespace, "query": "lighthouse"},
        "memory_read": {"namespace": namespace, "id": "anything"},
    }


def chats(model: ScriptedOpenAIServer) -> list[list[dict[str, Any]]]:
    """The messages of every chat request the model received."""
    return [request["body"]["messages"] for request in model.requests if request["path"].endswith("/chat/completions")]


def prompt_of(model: ScriptedOpenAIServer, system: str, user: str = "") -> str:
    """The user message of the one chat request whose system text holds ``system`` and user text ``user``."""
    found = [m[-1]["content"] for m in chats(model) if system in m[0]["content"] and user in m[-1]["content"]]
    assert len(found) == 1, (system, user, len(found))
    return str(found[0])


@dataclass
class Progress:
    """What a tool call's progress callback received."""

    updates: list[tuple[float, float | None, str | None]] = field(default_factory=list)

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.updates.append((progress, total, message))

    def check(self, nodes: list[str]) -> None:
        """Each notification further on than the last (the protocol's rule), and one naming each of ``nodes``."""
        values = [progress for progress, _, _ in self.updates]
        assert all(later > earlier for earlier, later in zip(values, values[1:], strict=False)), self.updates
        messages = [message or "" for _, _, message in self.updates]
        assert all(any(node in message for message in messages) for node in nodes), (nodes, self.updates)


# -- one stdio server for the tool tests ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def model() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer() as server:
        server.script(respond=mechanism_reply)
        yield server


@dataclass
class Stdio:
    """The module's stdio server: the connected client, the store file it serves (opened here too, for checks) and
    its stderr."""

    held: HeldClient
    client: Client
    store: GraphStore
    stderr: Path


@pytest.fixture(scope="module")
async def stdio(tmp_path_factory: pytest.TempPathFactory, model: ScriptedOpenAIServer) -> AsyncIterator[Stdio]:
    folder = tmp_path_factory.mktemp("mcp-stdio")
    store = new_store("sqlite", sqlite_path=folder / "memory.db")
    await store.setup()
    await seed_team_memory(store, EMBEDDER, TEAM)
    await store.upsert_nodes(
        [
            NodeRecord(
                id="long-record",
                namespace=LONG,
                kind="Chunk",
                text=LONG_TEXT,
                embedding=(await EMBEDDER.embed([LONG_TEXT]))[0],
                properties={"book_id": "long", "order": 0, "tags": ["a", "b"], "source": {"page": 3}},
            )
        ]
    )
    environment = cli_environment("sqlite", folder, namespace="default", model_url=model.base_url)
    parameters = StdioServerParameters(command=MNEMOFLOW, args=["mcp"], env=environment, cwd=folder)
    stderr = folder / "stderr.log"
    with stderr.open("w", encoding="utf-8") as errlog:
        held = HeldClient(stdio_client(parameters, errlog=errlog))
        try:
            client = await held.open()
            yield Stdio(held, client, store, stderr)
        finally:
            await held.close()
            await store.close()


async def call(stdio: Stdio, tool: str, **arguments: Any) -> dict[str, Any]:
    """A tool call that must succeed; its structured result."""
    return structured(await stdio.client.call_tool(tool, arguments, read_timeout_seconds=CHAT_TIMEOUT))


async def refused(stdio: Stdio, tool: str, **arguments: Any) -> str:
    """A tool call that must fail as a tool result (``isError``); its text."""
    result: CallToolResult = await stdio.client.call_tool(tool, arguments, read_timeout_seconds=CHAT_TIMEOUT)
    assert result.is_error, (tool, arguments, result)
    return text_of(result)


@dataclass
class Book:
    """The book ingested and asked about once for the module: the tools' results and their progress."""

    ingest: dict[str, Any]
    ingest_progress: Progress
    ask: dict[str, Any]
    ask_progress: Progress


@pytest.fixture(scope="module")
async def book(stdio: Stdio) -> Book:
    ingest_progress, ask_progress = Progress(), Progress()
    ingest = structured(
        await stdio.client.call_tool(
            "comorag_ingest",
            {"namespace": BOOKS, "book_id": BOOK_ID, "text": BOOK_TEXT, "title": TITLE},
            read_timeout_seconds=CHAT_TIMEOUT,
            progress_callback=ingest_progress,
        )
    )
    ask = structured(
        await stdio.client.call_tool(
            "comorag_ask",
            {"namespace": BOOKS, "book_id": BOOK_ID, "question": QUESTION},
            read_timeout_seconds=CHAT_TIMEOUT,
            progress_callback=ask_progress,
        )
    )
    return Book(ingest, ingest_progress, ask, ask_progress)


async def test_the_server_lists_the_contracts_tools_and_resource_templates(stdio: Stdio) -> None:
    info = stdio.client.server_info
    assert info is not None and info.name == "mnemoflow"
    tools = {tool.name: tool for tool in (await stdio.client.list_tools()).tools}
    assert set(tools) == set(TOOLS)
    for name, (required, optional) in TOOLS.items():
        schema = tools[name].input_schema
        assert list(schema["properties"])[: len(required)] == required, (name, schema)
        assert schema["properties"]["namespace"]["type"] == "string", (name, schema)
        assert sorted(schema["required"]) == sorted(required), (name, schema)
        assert set(schema["properties"]) == {*required, *optional}, (name, schema)
        assert tools[name].description, name
    templates = (await stdio.client.list_resource_templates()).resource_templates
    assert {template.uri_template for template in templates} == TEMPLATES
    assert {template.mime_type for template in templates} == {"application/json"}


async def test_ingest_indexes_the_text_with_progress_and_the_store_holds_it(
    stdio: Stdio, book: Book, model: ScriptedOpenAIServer
) -> None:
    assert book.ingest["book_id"] == BOOK_ID
    assert book.ingest["outputs"] == {
        "book_id": BOOK_ID,
        "title": TITLE,
        "facts": 1,
        "synonyms": 0,
        "semantic_levels": [1],
        "episodes": 1,
    }
    book.ingest_progress.check(INGEST_NODES)
    assert len(book.ingest_progress.updates) > len(INGEST_NODES)  # the nodes' own progress too
    assert BOOK_TEXT in prompt_of(model, "named entities from the given paragraph", "Skerry")  # the text reached the model
    run = await call(stdio, "memory_read", namespace=BOOKS, id=stable_id(BOOKS, "Run", book.ingest["run_id"]))
    assert run["record"]["kind"] == "Run"
    assert run["record"]["properties"]["graph"] == "comorag-ingest"
    assert run["record"]["properties"]["status"] == "completed"

    hits = (await call(stdio, "memory_search", namespace=BOOKS, query="ledger lighthouse", kinds=["Chunk"]))["hits"]
    assert [(hit["kind"], hit["text"]) for hit in hits] == [("Chunk", BOOK_TEXT)]
    chunk = hits[0]
    assert chunk["properties"]["book_id"] == BOOK_ID and chunk["properties"]["order"] == 0
    assert all(not isinstance(value, dict | list) for value in chunk["properties"].values()), chunk
    assert isinstance(chunk["score"], int | float) and chunk["score"] > 0
    assert (await call(stdio, "memory_search", namespace=CHAT, query="lighthouse"))["hits"] == []  # other namespace


async def test_ask_answers_from_the_ingested_book(book: Book, model: ScriptedOpenAIServer) -> None:
    assert book.ask["answer"] == ANSWER
    assert book.ask["outputs"]["final_answer"] == ANSWER and book.ask["outputs"]["status"] == "answered"
    assert isinstance(book.ask["run_id"], str) and book.ask["run_id"] != book.ingest["run_id"]
    book.ask_progress.check(["retrieve", "answer"])  # step 0 answered: no probing cycle
    answered = prompt_of(model, "careful reader", QUESTION)
    assert "thirty winters" in answered  # the chunk ingested through the other tool was retrieved for the answer


async def test_memory_read_pages_a_records_links(stdio: Stdio, book: Book) -> None:
    hit = (await call(stdio, "memory_search", namespace=BOOKS, query="ledger", kinds=["Chunk"], k=1))["hits"][0]
    read = await call(stdio, "memory_read", namespace=BOOKS, id=hit["id"])
    record = read["record"]
    assert (record["id"], record["kind"], record["text"]) == (hit["id"], "Chunk", BOOK_TEXT)
    assert record["properties"]["book_id"] == BOOK_ID
    assert set(record) == {"id", "kind", "text", "properties", "created_at", "updated_at"}
    links = {(link["type"], link["direction"], link["other_kind"]) for link in read["links"]}
    assert ("PART_OF", "out", "Book") in links and ("MENTIONS", "out", "Entity") in links, links
    assert read["more_links"] is False
    assert [link["other_id"] for link in read["links"] if link["type"] == "PART_OF"] == [book_record_id(BOOKS, BOOK_ID)]
    first = await call(stdio, "memory_read", namespace=BOOKS, id=hit["id"], links=1)
    assert len(first["links"]) == 1 and first["more_links"] is True
    assert first["links"][0] in read["links"]


async def test_search_checks_its_arguments_and_keeps_hits_short(stdio: Stdio) -> None:
    low = await refused(stdio, "memory_search", namespace=LONG, query="word7", k=0)
    high = await refused(stdio, "memory_search", namespace=LONG, query="word7", k=101)
    assert "greater than or equal to 1" in low and "less than or equal to 100" in high, (low, high)
    assert "'NoSuchKind'" in await refused(stdio, "memory_search", namespace=LONG, query="word7", kinds=["NoSuchKind"])
    assert len((await call(stdio, "memory_search", namespace=TEAM, query="figures report", k=1))["hits"]) == 1

    hits = (await call(stdio, "memory_search", namespace=LONG, query="word7", k=100))["hits"]
    assert [hit["id"] for hit in hits] == ["long-record"]
    assert len(hits[0]["text"]) <= 500 and hits[0]["text"][:400] == LONG_TEXT[:400]
    assert hits[0]["properties"] == {"book_id": "long", "order": 0}  # top-level scalars only


async def test_resources_read_a_record_and_the_kinds_of_an_encoded_namespace(stdio: Stdio, book: Book) -> None:
    hit = (await call(stdio, "memory_search", namespace=BOOKS, query="ledger", kinds=["Chunk"]))["hits"][0]
    read = await call(stdio, "memory_read", namespace=BOOKS, id=hit["id"])
    space = quote(BOOKS, safe="")
    assert space == "team%20a%2Fb"
    record = (await stdio.client.read_resource(f"mnemoflow://{space}/records/{quote(hit['id'], safe='')}")).contents
    assert len(record) == 1 and isinstance(record[0], TextResourceContents)
    assert record[0].mime_type == "application/json"
    assert json.loads(record[0].text) == read["record"]

    kinds = (await stdio.client.read_resource(f"mnemoflow://{space}/kinds")).contents
    assert len(kinds) == 1 and isinstance(kinds[0], TextResourceContents) and kinds[0].mime_type == "application/json"
    counted = await stdio.store.count_nodes_by_kind(BOOKS)
    assert json.loads(kinds[0].text) == {"namespace": BOOKS, "kinds": counted}
    assert counted["Book"] == 1 and counted["Chunk"] == 1 and counted["Run"] == 2  # the ingest's and the question's

    with pytest.raises(MCPError) as unknown:
        await stdio.client.read_resource(f"mnemoflow://{space}/records/no-such-record")
    assert "no-such-record" in unknown.value.message and BOOKS in unknown.value.message
    with pytest.raises(MCPError) as blank:
        await stdio.client.read_resource("mnemoflow://%20%20/kinds")
    assert "namespace '  '" in blank.value.message


async def test_a_tme_turn_updates_the_sessions_tree(stdio: Stdio, model: ScriptedOpenAIServer) -> None:
    empty = await call(stdio, "tme_tree", namespace=CHAT, session="trip")
    assert (empty["session"], empty["turns"]) == ("trip", 0) and "(no tasks yet)" in empty["tree"]
    first = await call(stdio, "tme_turn", namespace=CHAT, session="trip", message="I am going to Lisbon")
    assert first["reply"] == "Noted: you are going to Lisbon."
    assert first["not_applied"] == [] and first["stale"] == []
    assert "- plan a trip  v1\n  - destination: Lisbon  v1" in first["tree"]

    second = await call(stdio, "tme_turn", namespace=CHAT, session="trip", message="set the budget to 900 euros")
    assert second["not_applied"] == [
        "update 'budget': cannot update 'budget': no such task step (known: destination, plan a trip)"
    ]
    # the first turn's memory reached the second turn's answer
    assert prompt_of(model, "You are an assistant helping a user", "User: set the budget").startswith(
        "Task memory (current values):\nTask: plan a trip\n- destination: Lisbon\n"
    )
    tree = await call(stdio, "tme_tree", namespace=CHAT, session="trip")
    assert tree == {"session": "trip", "turns": 2, "tree": second["tree"]}
    assert (await call(stdio, "tme_tree", namespace=CHAT, session="other"))["turns"] == 0
    assert (await stdio.store.count_nodes_by_kind(CHAT))["TmeTurn"] == 2


async def test_turns_of_one_session_sent_at_once_are_both_taken(stdio: Stdio) -> None:
    """Two clients' turns of a session in flight together run one after the other, neither lost nor refused."""
    messages = ("I am going to Lisbon", "set the budget to 900 euros")
    turns = await asyncio.gather(*(call(stdio, "tme_turn", namespace=CHAT, session="pair", message=m) for m in messages))
    assert {turn["reply"] for turn in turns} == {"Noted: you are going to Lisbon."}
    assert (await call(stdio, "tme_tree", namespace=CHAT, session="pair"))["turns"] == 2


async def test_gmemory_retrieve_finds_stored_insights_and_nothing_in_an_empty_namespace(
    stdio: Stdio, model: ScriptedOpenAIServer
) -> None:
    before = len(chats(model))
    empty = await call(stdio, "gmemory_retrieve", namespace=NOBODY, task=PAST_TASK)
    assert empty["outputs"]["insights"] == [] and isinstance(empty["run_id"], str)
    assert len(chats(model)) == before  # nothing to rate: no model call

    task = "write a report on quarterly sales for the southern office"
    found = await call(stdio, "gmemory_retrieve", namespace=TEAM, task=task)
    assert [insight["text"] for insight in found["outputs"]["insights"]] == [LESSON]
    assert prompt_of(model, "You judge how useful past tasks are", task) == (
        f"New task: {task}\n\nPast tasks:\n[1] Task: {PAST_TASK}\nKey steps:\n  - collect the office figures"
    )


@pytest.mark.parametrize(
    ("namespace", "problem"), [("", "is empty"), ("   ", "is empty"), ("a\x07b", "contains control characters")]
)
async def test_a_bad_namespace_is_refused_by_every_tool_naming_it(
    stdio: Stdio, model: ScriptedOpenAIServer, namespace: str, problem: str
) -> None:
    before, spaces = len(chats(model)), await stdio.store.namespaces()
    for tool, arguments in valid_arguments(namespace).items():
        text = await refused(stdio, tool, **arguments)
        assert f"namespace {namespace!r} {problem}" in text, (tool, text)
    assert len(chats(model)) == before  # refused before any model call
    assert await stdio.store.namespaces() == spaces  # and before any write


async def test_an_unknown_record_is_an_error_naming_it(stdio: Stdio) -> None:
    text = await refused(stdio, "memory_read", namespace=CHAT, id="no-such-id")
    assert "no record 'no-such-id' in namespace 'chat'" in text


async def test_stdout_carried_only_protocol_and_stderr_no_traceback(stdio: Stdio) -> None:
    """Runs after the module's other stdio tests (file order): whatever they made the server do."""
    await refused(stdio, "memory_search", namespace="", query="x")  # at least one refusal, even when run alone
    assert stdio.held.stream_faults == []
    errors = stdio.stderr.read_text(encoding="utf-8")
    assert "Traceback" not in errors, errors


def test_stdio_ends_when_stdin_closes_and_writes_nothing_but_protocol(tmp_path: Path, model: ScriptedOpenAIServer) -> None:
    """A client that goes away without a word: the server leaves quietly, writing nothing to stdout."""
    result = subprocess.run(
        [MNEMOFLOW, "mcp"],
        input="",
        cwd=tmp_path,
        env=cli_environment("sqlite", tmp_path, namespace="default", model_url=model.base_url),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (result.returncode, result.stdout) == (0, ""), result
    assert "Traceback" not in result.stderr, result.stderr


# -- streamable HTTP ------------------------------------------------------------------------------------------

MCP_TOKEN, UI_TOKEN = secrets.token_hex(16), secrets.token_hex(16)


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory, model: ScriptedOpenAIServer) -> Iterator[dict[str, HttpServer]]:
    """Three HTTP servers: on loopback without a token; beyond loopback with MNEMOFLOW_MCP_TOKEN (and a UI token it
    must not take instead); beyond loopback with only MNEMOFLOW_UI_TOKEN."""
    folder = tmp_path_factory.mktemp("mcp-http")

    def environment(name: str, **extra: str) -> dict[str, str]:
        return cli_environment("sqlite", folder / name, namespace="default", model_url=model.base_url, **extra)

    servers = {
        "loopback": (environment("loopback"), "127.0.0.1"),
        "token": (environment("token", MNEMOFLOW_MCP_TOKEN=MCP_TOKEN, MNEMOFLOW_UI_TOKEN=UI_TOKEN), "0.0.0.0"),
        "ui_token": (environment("ui_token", MNEMOFLOW_UI_TOKEN=UI_TOKEN), "0.0.0.0"),
    }
    with http_servers(folder, servers) as started:
        yield started


@dataclass
class Statuses:
    """Status codes of the responses an SDK client's HTTP client received (the SDK turns them into errors)."""

    seen: list[int] = field(default_factory=list)

    async def __call__(self, response: httpx2.Response) -> None:
        self.seen.append(response.status_code)


def http_client(statuses: Statuses, token: str | None = None) -> httpx2.AsyncClient:
    """An HTTP client for the SDK's transport (its way to set headers): the token as a bearer header, the statuses
    recorded."""
    return httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {token}"} if token else None,
        timeout=httpx2.Timeout(30, read=CHAT_TIMEOUT),
        event_hooks={"response": [statuses]},
    )


async def list_and_call(server: HttpServer, token: str | None = None) -> tuple[set[str], dict[str, Any]]:
    """Over streamable HTTP with the SDK's client: the tools' names, and a search's result."""
    async with (
        http_client(Statuses(), token) as http,
        Client(streamable_http_client(server.url, http_client=http), cache=None) as client,
    ):
        names = {tool.name for tool in (await client.list_tools()).tools}
        result = structured(await client.call_tool("memory_search", {"namespace": "web", "query": "anything"}))
    return names, result


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}},
}


def post(server: HttpServer, **headers: str) -> httpx.Response:
    """A plain initialize request to the endpoint, with ``headers`` on top of those MCP asks for."""
    mcp_headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    return httpx.post(server.url, json=INITIALIZE, headers={**mcp_headers, **headers}, timeout=30)


async def test_http_on_loopback_needs_no_token_and_refuses_foreign_hosts(http: dict[str, HttpServer]) -> None:
    server = http["loopback"]
    names, result = await list_and_call(server)
    assert names == set(TOOLS) and result == {"hits": []}
    foreign = post(server, Host="evil.example")
    assert foreign.status_code == 400 and "error" in foreign.json()
    assert post(server, Host=f"localhost:{server.port}").status_code == 200
    # a page elsewhere cannot drive it through a browser either
    assert post(server, Origin="http://evil.example").status_code == 400
    assert post(server, Origin=f"http://127.0.0.1:{server.port}").status_code == 200
    assert "Traceback" not in server.errors()


def test_beyond_loopback_without_a_token_refuses_to_start(tmp_path: Path, model: ScriptedOpenAIServer) -> None:
    result = subprocess.run(
        [MNEMOFLOW, "mcp", "--transport", "http", "--host", "0.0.0.0", "--port", str(free_port())],
        cwd=tmp_path,
        env=cli_environment("sqlite", tmp_path, namespace="default", model_url=model.base_url),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result
    assert "MNEMOFLOW_MCP_TOKEN" in result.stderr and "MNEMOFLOW_UI_TOKEN" in result.stderr, result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr


async def test_a_token_guards_every_request_beyond_loopback(http: dict[str, HttpServer]) -> None:
    server = http["token"]
    statuses = Statuses()
    with pytest.RaisesGroup(MCPError, flatten_subgroups=True, allow_unwrapped=True):  # the SDK's task groups wrap it
        async with (
            http_client(statuses) as client_without_token,
            Client(streamable_http_client(server.url, http_client=client_without_token), cache=None) as client,
        ):
            await client.list_tools()
    assert statuses.seen and set(statuses.seen) == {401}, statuses.seen

    assert post(server, Host="evil.example").status_code == 400  # the host is checked before the token
    missing = post(server)
    assert missing.status_code == 401 and "MNEMOFLOW_MCP_TOKEN" in missing.json()["error"]
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    for wrong in (f"{MCP_TOKEN}x", UI_TOKEN):  # the server's own token replaces the UI's
        refused = post(server, Authorization=f"Bearer {wrong}")
        assert refused.status_code == 401 and "error" in refused.json()

    names, result = await list_and_call(server, MCP_TOKEN)
    assert names == set(TOOLS) and result == {"hits": []}

    # wrong tokens are throttled per client: two so far; the tenth is still refused, the eleventh must wait
    answers = [post(server, Authorization=f"Bearer wrong-{attempt}") for attempt in range(9)]
    assert [answer.status_code for answer in answers] == [401] * 8 + [429]
    assert int(answers[-1].headers["Retry-After"]) >= 1
    assert "Traceback" not in server.errors()


async def test_the_ui_token_guards_the_server_when_it_has_no_token_of_its_own(http: dict[str, HttpServer]) -> None:
    server = http["ui_token"]
    missing = post(server)
    assert missing.status_code == 401 and "MNEMOFLOW_UI_TOKEN" in missing.json()["error"]  # the variable to set
    assert post(server, Authorization=f"Bearer {MCP_TOKEN}").status_code == 401
    names, _ = await list_and_call(server, UI_TOKEN)
    assert names == set(TOOLS)
