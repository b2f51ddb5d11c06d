"""A Neo4j server that is not there, or that dies in the middle of a batch."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mnemoflow.errors import StoreUnavailableError
from mnemoflow.flows.server.app import create_app
from mnemoflow.flows.server.hooks import sign_generic
from mnemoflow.memory import NodeRecord
from mnemoflow.memory.neo4j import queries
from mnemoflow.settings import HooksSettings
from tests.conftest import EMBEDDER, neo4j_required, new_store, settings_for
from tests.support.neo4j_server import Neo4jServer, Neo4jStartError
from tests.support.web_server import serve


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_unreachable_server_names_the_setting_and_address() -> None:
    port = unused_port()
    store = new_store("neo4j", neo4j_uri=f"bolt://127.0.0.1:{port}", max_transaction_retry_time=1.0, connection_timeout=2.0)
    try:
        with pytest.raises(StoreUnavailableError, match=rf"NEO4J_URI.*|127\.0\.0\.1:{port}") as caught:
            await store.setup()
        assert "NEO4J_URI" in str(caught.value) and f"127.0.0.1:{port}" in str(caught.value)
    finally:
        await store.close()


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Neo4jServer]:
    """A server of this module's own, not the session's: its tests kill it. One start serves them all."""
    server = Neo4jServer(tmp_path_factory.mktemp("neo4j-home"))
    yield server
    server.stop()


@pytest.fixture
def private_server(own_server: Neo4jServer) -> Neo4jServer:
    """The module's server, running, which the test may kill: started, on its port, if the test before killed it."""
    try:
        own_server.start(port=int(own_server.uri.rsplit(":", 1)[1]) if own_server.uri else 0)  # a running one stays
    except Neo4jStartError as exc:
        if neo4j_required():
            pytest.fail(str(exc), pytrace=False)
        pytest.skip(str(exc))
    return own_server


BATCH_ROWS, CHUNK_ROWS = 2_000, 500
"""The batch is sent in four statements of one transaction; the server dies before the third."""


@pytest.mark.neo4j
@pytest.mark.slow
async def test_server_killed_mid_batch_writes_all_or_nothing(private_server: Neo4jServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server is killed inside the batch's transaction, once two of its statements have written their rows: none
    of the batch is stored after the restart, and the same batch then writes whole.

    The kill comes from the store's own sequence of statements, not from a timer, which needs a batch big enough to
    outlast it on a fast machine (and then written twice) and may still land before the transaction or in its
    commit."""
    uri = private_server.uri
    port = int(uri.rsplit(":", 1)[1])
    batch = [
        NodeRecord(id=f"n{index}", namespace="crash", kind="Chunk", text=f"passage {index}", embedding=EMBEDDER.embed_one(f"passage {index}"))
        for index in range(BATCH_ROWS)
    ]
    statements = 0
    upsert = queries.upsert_nodes

    def kill_before_the_third_statement(kind: str) -> str:
        nonlocal statements
        statements += 1
        if statements == 3:
            private_server.kill()
        return upsert(kind)

    monkeypatch.setattr(queries, "upsert_nodes", kill_before_the_third_statement)
    store = new_store("neo4j", neo4j_uri=uri, max_transaction_retry_time=1.0, connection_timeout=2.0, write_chunk_rows=CHUNK_ROWS)
    await store.setup()
    try:
        with pytest.raises(StoreUnavailableError, match="NEO4J_URI"):
            await store.upsert_nodes(batch)
    finally:
        await store.close()
    assert statements >= 3, f"the batch ended after {statements} statements, before the server was killed"
    monkeypatch.setattr(queries, "upsert_nodes", upsert)

    private_server.stop()
    private_server.start(port=port)
    store = new_store("neo4j", neo4j_uri=uri)
    await store.setup()
    try:
        assert await store.count_nodes("crash") == 0
        assert await store.upsert_nodes(batch) == len(batch)
        assert await store.count_nodes("crash") == len(batch)
    finally:
        await store.close()


@pytest.mark.neo4j
@pytest.mark.slow
def test_serve_answers_503_when_the_store_goes_away(private_server: Neo4jServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A delivery, and the UI's APIs, while Neo4j is gone: 503 with a retry hint and the reason, never a 500."""
    monkeypatch.setenv("TEST_HOOK_SECRET", "s3cret")
    hooks = tmp_path / "hooks.yaml"
    hooks.write_text(
        "hooks:\n  - {name: stats, provider: generic, secret_env: TEST_HOOK_SECRET, deployment: run_graph/text-stats,\n"
        "     parameters: {input: '{text: text}'}}\n"
    )
    settings = settings_for("neo4j", neo4j_uri=private_server.uri)
    settings = settings.model_copy(
        update={
            "hooks": HooksSettings(file=hooks),
            "neo4j": settings.neo4j.model_copy(update={"max_transaction_retry_time": 1.0, "connection_timeout": 2.0}),
        }
    )
    body = json.dumps({"text": "Memory that lasts."}).encode()
    with serve(create_app(settings)) as url, httpx.Client(base_url=url, timeout=60) as http:
        assert http.get("/api/namespaces").status_code == 200
        private_server.kill()
        reply = http.post("/hooks/stats", content=body, headers=sign_generic(b"s3cret", body, int(time.time())))
        assert reply.status_code == 503, reply.text
        assert reply.headers["Retry-After"] == "30" and "store" in reply.json()["error"]
        assert http.get("/api/namespaces").status_code == 503
