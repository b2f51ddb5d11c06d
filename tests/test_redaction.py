"""Credentials inside URLs (``scheme://user:password@host``) never reach settings output, errors, logs or run records."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import structlog
from neo4j import exceptions as neo4j_errors

from mnemoflow.errors import ConfigError, MnemoflowError
from mnemoflow.graphs import load_graph, run_graph
from mnemoflow.llm import LLM, OpenAIBackend
from mnemoflow.llm.endpoint import Endpoint, resolve_endpoint
from mnemoflow.logging import configure_logging, get_logger
from mnemoflow.memory import SQLiteStore
from mnemoflow.memory.neo4j.checkpoints import Neo4jCheckpointSaver
from mnemoflow.memory.neo4j.connection import Neo4jConnection
from mnemoflow.nodes import NoConfig, RunContext, node
from mnemoflow.nodes.text import TextState
from mnemoflow.redaction import redact_url, redact_urls
from mnemoflow.settings import EvalSettings, LLMSettings, LogSettings, Neo4jSettings, OpenAISettings, Settings, StoreSettings
from tests.conftest import EMBEDDER, new_store

SECRET = "hunter2secret"
NEO4J_URI = f"bolt://neo4j:{SECRET}@127.0.0.1:7687"
MODEL_URL = f"http://user:{SECRET}@127.0.0.1:9/v1"
UNREACHABLE_MODEL_URL = f"http://user:{SECRET}@127.0.0.1:1/v1"  # nothing listens on port 1: refused at once


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (MODEL_URL, "http://***@127.0.0.1:9/v1"),
        (NEO4J_URI, "bolt://***@127.0.0.1:7687"),
        (f"neo4j+s://neo4j:{SECRET}@db.example.com", "neo4j+s://***@db.example.com"),
        (f"https://{SECRET}@github.com/org/repo.git", "https://***@github.com/org/repo.git"),
        ("http://user:@127.0.0.1/", "http://***@127.0.0.1/"),
        (f"http://user:{SECRET}%2F%23@127.0.0.1:9/v1?x=1#top", "http://***@127.0.0.1:9/v1?x=1#top"),
        (f"http://user:hunter2@{SECRET}@127.0.0.1:9/v1", "http://***@127.0.0.1:9/v1"),
    ],
)
def test_the_userinfo_of_a_url_is_hidden_and_the_rest_kept(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    before, after = urlsplit(url), urlsplit(shown)
    assert (after.hostname, after.port, after.path, after.query, after.fragment) == (
        before.hostname,
        before.port,
        before.path,
        before.query,
        before.fragment,
    )


@pytest.mark.parametrize("separator", ["/", "#", "?"])
def test_a_password_holding_a_delimiter_is_hidden_whole(separator: str) -> None:
    """urllib ends the authority at the first '/', '?' or '#', so it would take ``user`` for the host and leave the
    rest of the password in the path; the password is hidden all the same."""
    url = f"http://user:hunter2{separator}{SECRET}@127.0.0.1:9/v1"
    assert urlsplit(url).hostname == "user"
    assert redact_url(url) == "http://***@127.0.0.1:9/v1"
    assert redact_urls(f"calling {url!r} failed") == "calling 'http://***@127.0.0.1:9/v1' failed"


@pytest.mark.parametrize(
    "text",
    [
        "http://127.0.0.1:9/v1",
        "https://registry.npmjs.org/@types/node",
        "https://registry.npmjs.org:443/@types/node",
        "http://example.com/search?from=someone@example.com",
        "mailto:someone@example.com",
        "someone@example.com wrote http://example.com:80/",
        '{"url": "http://127.0.0.1:8000/v1", "owner": "someone@example.com"}',
        "git@github.com:org/repo.git",
        "",
    ],
)
def test_text_without_credentials_is_unchanged(text: str) -> None:
    assert redact_urls(text) == text


def test_every_url_in_a_text_is_redacted() -> None:
    text = f"tried {MODEL_URL} and then\n{NEO4J_URI!r}, then http://127.0.0.1:2/v1"
    assert (
        redact_urls(text) == "tried http://***@127.0.0.1:9/v1 and then\n'bolt://***@127.0.0.1:7687', then http://127.0.0.1:2/v1"
    )
    assert redact_url(None) is None


def test_settings_as_json_hide_url_credentials_but_connect_with_them() -> None:
    judge = EvalSettings(judge_base_url=MODEL_URL, judge_api_key=SECRET)  # type: ignore[arg-type]
    settings = Settings(neo4j=Neo4jSettings(uri=NEO4J_URI), openai=OpenAISettings(base_url=MODEL_URL), eval=judge)
    text = settings.model_dump_json(indent=2)
    shown = json.loads(text)
    assert (shown["neo4j"]["uri"], shown["openai"]["base_url"]) == ("bolt://***@127.0.0.1:7687", "http://***@127.0.0.1:9/v1")
    assert shown["eval"]["judge_base_url"] == "http://***@127.0.0.1:9/v1" and SECRET not in text
    assert (settings.neo4j.uri, settings.openai.base_url) == (NEO4J_URI, MODEL_URL)
    assert settings.model_dump()["neo4j"]["uri"] == NEO4J_URI
    assert resolve_endpoint(settings).base_url == MODEL_URL


def test_an_endpoint_is_described_and_shown_without_credentials() -> None:
    endpoint = Endpoint("openai", "gpt-4o-mini", MODEL_URL, api_key=f"sk-{SECRET}")
    assert endpoint.describe() == "gpt-4o-mini on an OpenAI-compatible server at http://***@127.0.0.1:9/v1"
    assert SECRET not in repr(endpoint)
    assert endpoint.base_url == MODEL_URL and endpoint.api_key == f"sk-{SECRET}"


def test_a_neo4j_uri_with_credentials_is_refused_without_showing_them() -> None:
    with pytest.raises(ConfigError) as store_error:
        new_store("neo4j", neo4j_uri=f"bolt://neo4j:{SECRET}@127.0.0.1:1")
    with pytest.raises(ConfigError) as saver_error:
        Neo4jCheckpointSaver(f"neo4j://neo4j:{SECRET}@127.0.0.1:1")
    for caught in (store_error, saver_error):
        message = str(caught.value)
        assert SECRET not in message and "NEO4J_URI" in message and "NEO4J_PASSWORD" in message
        assert "://***@127.0.0.1:1" in message


def test_a_url_whose_password_reads_as_a_port_is_refused_without_showing_a_piece_of_it() -> None:
    """urllib takes ``hunter2`` in ``user:hunter2/...@host`` for a port, and the clients' errors quote it."""
    with pytest.raises(ConfigError) as model_error:
        OpenAIBackend(base_url=f"http://user:hunter2/{SECRET}@127.0.0.1:9/v1", api_key="test", timeout=1.0)
    with pytest.raises(ConfigError) as neo4j_error:
        Neo4jConnection(f"bolt://neo4j:hunter2/{SECRET}@127.0.0.1:1")
    assert "OPENAI_BASE_URL http://***@127.0.0.1:9/v1" in str(model_error.value)
    assert "NEO4J_URI bolt://***@127.0.0.1:1" in str(neo4j_error.value)
    assert all("hunter2" not in str(caught.value) for caught in (model_error, neo4j_error))


@pytest.mark.parametrize(
    "driver_error",
    [
        neo4j_errors.ServiceUnavailable(f"Couldn't connect to {NEO4J_URI}"),
        neo4j_errors.AuthError(f"refused at {NEO4J_URI}"),
        neo4j_errors.SessionExpired(f"session to {NEO4J_URI} expired"),
        neo4j_errors.ConfigurationError(f"bad option for {NEO4J_URI}"),
        ConnectionRefusedError(f"connect to {NEO4J_URI} refused"),
    ],
)
async def test_neo4j_driver_errors_are_shown_without_credentials(driver_error: Exception) -> None:
    connection = Neo4jConnection("bolt://127.0.0.1:1")
    try:
        with pytest.raises(MnemoflowError) as caught, connection.translate():
            raise driver_error
        assert SECRET not in str(caught.value) and "bolt://***@127.0.0.1:7687" in str(caught.value)
    finally:
        await connection.close()


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """JSON log lines of structlog and the stdlib, written here for the test."""
    stream = io.StringIO()
    configure_logging(LogSettings(format="json", level="debug"), stream=stream, force=True)
    try:
        yield stream
    finally:
        structlog.reset_defaults()
        configure_logging(LogSettings(), force=True)


def test_log_lines_hide_url_credentials_in_every_field(log_stream: io.StringIO) -> None:
    log = get_logger("test").bind(bound=MODEL_URL)
    log.warning(
        f"calling {MODEL_URL}",
        url=MODEL_URL,
        nested={"urls": [NEO4J_URI, ("kept", 3, NEO4J_URI)]},
        error=ConnectionError(f"refused by {MODEL_URL}"),
        count=3,
    )
    try:
        raise ConnectionError(f"refused by {MODEL_URL}")
    except ConnectionError:
        log.exception("model.failed")
    output = log_stream.getvalue()
    assert SECRET not in output
    first, second = (json.loads(line) for line in output.splitlines())
    assert first["event"] == "calling http://***@127.0.0.1:9/v1" and first["url"] == first["bound"] == "http://***@127.0.0.1:9/v1"
    assert first["nested"] == {"urls": ["bolt://***@127.0.0.1:7687", ["kept", 3, "bolt://***@127.0.0.1:7687"]]}
    assert first["error"] == "refused by http://***@127.0.0.1:9/v1" and first["count"] == 3
    assert "ConnectionError: refused by http://***@127.0.0.1:9/v1" in second["exception"]


def test_readable_log_lines_hide_url_credentials() -> None:
    stream = io.StringIO()
    configure_logging(LogSettings(format="console", level="info"), stream=stream, force=True)
    try:
        get_logger("test").warning("model.unreachable", url=MODEL_URL, error=ConnectionError(f"refused by {MODEL_URL}"))
    finally:
        structlog.reset_defaults()
        configure_logging(LogSettings(), force=True)
    output = stream.getvalue()
    assert "model.unreachable" in output and "http://***@127.0.0.1:9/v1" in output and SECRET not in output


def test_stdlib_log_lines_hide_url_credentials(log_stream: io.StringIO) -> None:
    logging.getLogger("httpx").warning("HTTP Request: POST %s/chat/completions", MODEL_URL)
    try:
        raise ConnectionError(f"refused by {MODEL_URL}")
    except ConnectionError:
        logging.getLogger("driver").exception("cannot connect to %s", NEO4J_URI)
    output = log_stream.getvalue()
    assert "HTTP Request: POST http://***@127.0.0.1:9/v1/chat/completions" in output
    assert "cannot connect to bolt://***@127.0.0.1:7687" in output and "refused by http://***@127.0.0.1:9/v1" in output
    assert SECRET not in output


@node("testing.redaction_calls_model", state=TextState, reads=set(), writes=set())
async def calls_model(state: TextState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """Ask the model something (its endpoint is unreachable)."""
    await context.llm.text([{"role": "user", "content": "Anyone there?"}])
    return {}


@node("testing.redaction_refused", state=TextState, reads=set(), writes=set())
async def refused(state: TextState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """Fail the way a foreign client does: its own error, naming the URL it was given."""
    raise ConnectionError(f"refused by {UNREACHABLE_MODEL_URL}")


def unreachable_model() -> LLM:
    backend = OpenAIBackend(base_url=UNREACHABLE_MODEL_URL, api_key="test", timeout=5.0)
    return LLM(backend, LLMSettings(cache=False, max_attempts=1, deadline=30.0))


@pytest.mark.parametrize("use", ["testing.redaction_calls_model", "testing.redaction_refused"])
async def test_a_failed_runs_error_text_record_and_logs_carry_no_credentials(
    use: str, tmp_path: Path, log_stream: io.StringIO
) -> None:
    store = SQLiteStore(tmp_path / "memory.db", embedding_model=EMBEDDER.model, embedding_dimension=EMBEDDER.dimension)
    await store.setup()
    path = tmp_path / "graph.yaml"
    path.write_text(
        "name: probe\nstate: text.TextState\ninput: [text]\nnodes:\n  only: {use: " + use + "}\n"
        "edges:\n  - {from: START, to: only}\n  - {from: only, to: END}\n"
    )
    settings = Settings(store=StoreSettings(sqlite_path=tmp_path / "memory.db"))
    try:
        with pytest.raises(Exception) as caught:
            await run_graph(
                load_graph(path),
                {"text": "x"},
                store=store,
                embedder=EMBEDDER,
                llm=unreachable_model(),
                settings=settings,
                checkpointer=None,
                namespace="redaction",
            )
        [record] = await store.list_nodes("redaction", kind="Run")
    finally:
        await store.close()
    if use == "testing.redaction_calls_model":
        assert SECRET not in str(caught.value) and "http://***@127.0.0.1:1/v1" in str(caught.value)
    error = record.properties["events"][-1]["error"]
    assert SECRET not in error and "http://***@127.0.0.1:1/v1" in error
    logged = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    assert any(line["event"] == "node.error" for line in logged)
    assert SECRET not in log_stream.getvalue()
