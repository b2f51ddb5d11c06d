"""The MCP server's own pieces, in process: tool errors, progress routed to the calling request, resources, and the
HTTP app's host check and token guard (the subprocess tests over stdio and HTTP are in test_mcp.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from pydantic import SecretStr

from mnemoflow.errors import ConfigError
from mnemoflow.flows.mcp import check_bind, create_server, http_app
from mnemoflow.flows.mcp.access import McpToken, mcp_token
from mnemoflow.memory.neo4j.store import Neo4jStore
from mnemoflow.memory.sqlite.store import SQLiteStore
from mnemoflow.nodes import load_builtin_nodes
from mnemoflow.settings import LLMSettings, MCPSettings, Settings, UISettings
from tests.conftest import settings_for

TOKEN = "t" * 24
TME_STEPS = ["load", "decompose", "classify", "apply", "synthesize", "answer", "persist"]


@pytest.fixture
def settings(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """A fresh store of the backend and the offline model."""
    load_builtin_nodes()
    uri = request.getfixturevalue("empty_neo4j") if backend == "neo4j" else None
    chosen = settings_for(backend, neo4j_uri=uri, sqlite_path=tmp_path / "memory.db")
    return chosen.model_copy(update={"llm": LLMSettings(offline=True)})


@asynccontextmanager
async def connected(settings: Settings) -> AsyncIterator[Client]:
    """A client of a server over ``settings``, in process (entered and left in the test's own task, as the
    client's task group asks)."""
    async with Client(create_server(settings)) as client:
        yield client


def _text(result: Any) -> str:
    assert result.is_error, result
    return str(result.content[0].text)


async def test_errors_are_tool_errors_that_name_the_problem(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    async with connected(settings) as client:
        assert "namespace '' is empty" in _text(await client.call_tool("memory_search", {"namespace": "", "query": "x"}))
        assert "contains control characters" in _text(await client.call_tool("tme_tree", {"namespace": "a\x01", "session": "s"}))
        assert "no record 'nope' in namespace 'ns'" in _text(await client.call_tool("memory_read", {"namespace": "ns", "id": "nope"}))
        assert "'Nope' is not registered" in _text(
            await client.call_tool("memory_search", {"namespace": "ns", "query": "x", "kinds": ["Nope"]})
        )
        assert "greater than or equal to 1" in _text(await client.call_tool("memory_search", {"namespace": "ns", "query": "x", "k": 0}))
        asked = _text(await client.call_tool("comorag_ask", {"namespace": "ns", "book_id": "missing", "question": "Who?"}))
        assert "book 'missing' is not indexed in namespace 'ns'" in asked

        async def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError("internal detail the client must not see")

        for store_class in (SQLiteStore, Neo4jStore):
            monkeypatch.setattr(store_class, "keyword_search", broken)
        crashed = _text(await client.call_tool("memory_search", {"namespace": "ns", "query": "x"}))
        assert "memory_search failed unexpectedly (RuntimeError); the server's log has the details" in crashed
        assert "internal detail" not in crashed and "Traceback" not in crashed


async def test_progress_goes_to_the_request_that_started_the_run(settings: Settings) -> None:
    async with connected(settings) as client:
        notes: dict[str, list[tuple[float, str | None]]] = {"a": [], "b": []}

        async def turn(session: str) -> Any:
            async def heard(progress: float, total: float | None, message: str | None) -> None:
                notes[session].append((progress, message))

            arguments = {"namespace": "ns", "session": session, "message": "plan a trip to Rome"}
            return await client.call_tool("tme_turn", arguments, progress_callback=heard)

        first, second = await asyncio.gather(turn("a"), turn("b"))  # one runner serves both
        expected = [(float(count), f"step {step} finished") for count, step in enumerate(TME_STEPS, start=1)]
        assert notes == {"a": expected, "b": expected}
        assert first.structured_content["tree"] == second.structured_content["tree"] == "(no tasks yet)"
        assert first.structured_content["reply"].startswith("[offline model]")

        # each run left its record, as every run does (the UI lists them)
        kinds = json.loads((await client.read_resource("mnemoflow://ns/kinds")).contents[0].text)
        assert (kinds["kinds"]["Run"], kinds["kinds"]["TmeSession"]) == (2, 2)
        tree = await client.call_tool("tme_tree", {"namespace": "ns", "session": "a"})
        assert tree.structured_content == {"session": "a", "turns": 1, "tree": "(no tasks yet)"}


async def test_resources_read_records_and_kinds(settings: Settings) -> None:
    async with connected(settings) as client:
        namespace = "team/a b"
        ingested = await client.call_tool(
            "comorag_ingest", {"namespace": namespace, "book_id": "b1", "text": "Alice met Bob in Paris. " * 5, "title": "T"}
        )
        assert not ingested.is_error and ingested.structured_content["outputs"]["title"] == "T"
        kinds = json.loads((await client.read_resource("mnemoflow://team%2Fa%20b/kinds")).contents[0].text)
        assert kinds["namespace"] == namespace and kinds["kinds"]["Book"] == 1 and kinds["kinds"]["Run"] == 1
        hits = (await client.call_tool("memory_search", {"namespace": namespace, "query": "Paris", "kinds": ["Chunk"]})).structured_content
        [hit] = hits["hits"]
        record = json.loads((await client.read_resource(f"mnemoflow://team%2Fa%20b/records/{hit['id']}")).contents[0].text)
        assert (record["id"], record["kind"], record["text"]) == (hit["id"], "Chunk", hit["text"])
        with pytest.raises(MCPError, match="no record 'nope' in namespace 'team/a b'"):
            await client.read_resource("mnemoflow://team%2Fa%20b/records/nope")
        with pytest.raises(MCPError, match="namespace ' ' is empty"):
            await client.read_resource("mnemoflow://%20/kinds")


# -- HTTP: the host check and the token guard, in front of the SDK's app ---------------------------------------


def _http(settings: Settings, host: str = "127.0.0.1") -> httpx.AsyncClient:
    app = http_app(create_server(settings), settings, host=host)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8766")


async def test_http_asks_for_the_token_and_throttles_wrong_ones() -> None:
    async with _http(Settings(mcp=MCPSettings(token=SecretStr(TOKEN)))) as http:
        foreign = await http.post("/mcp", headers={"Host": "attacker.example"})
        assert foreign.status_code == 400  # before authentication
        foreign_page = await http.post("/mcp", headers={"Origin": "http://attacker.example", "Authorization": f"Bearer {TOKEN}"})
        assert foreign_page.status_code == 400
        missing = await http.post("/mcp")
        assert (missing.status_code, missing.headers["WWW-Authenticate"]) == (401, "Bearer")
        assert "MNEMOFLOW_MCP_TOKEN" in missing.json()["error"]
        assert (await http.get("/elsewhere", headers={"Authorization": f"Bearer {TOKEN}"})).status_code == 404  # let through
        wrong = [(await http.post("/mcp", headers={"Authorization": "Bearer wrong-token-wrong"})).status_code for _ in range(11)]
        assert wrong == [401] * 10 + [429]
        throttled = await http.post("/mcp", headers={"Authorization": f"Bearer {TOKEN}"})
        assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) >= 1


async def test_http_without_a_token_on_loopback_needs_none() -> None:
    async with _http(Settings()) as http:
        assert (await http.get("/elsewhere")).status_code == 404
        assert (await http.get("/elsewhere", headers={"Host": "attacker.example"})).status_code == 400


def test_serving_beyond_loopback_needs_a_token() -> None:
    with pytest.raises(ConfigError, match="MNEMOFLOW_MCP_TOKEN \\(or MNEMOFLOW_UI_TOKEN\\)"):
        check_bind("0.0.0.0", Settings())
    check_bind("127.0.0.1", Settings())
    ui_only = Settings(ui=UISettings(token=SecretStr("u" * 24)))
    check_bind("0.0.0.0", ui_only)
    assert mcp_token(ui_only) == McpToken("u" * 24, "MNEMOFLOW_UI_TOKEN")
    assert mcp_token(ui_only.model_copy(update={"mcp": MCPSettings(token=SecretStr(TOKEN))})) == McpToken(TOKEN, "MNEMOFLOW_MCP_TOKEN")
