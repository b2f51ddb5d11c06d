"""Attacks on ``mnemoflow serve`` over real HTTP: tokens, bodies, hosts, numbers, sign-in, trickled bodies and
Prefect replies that are not what they should be. Each test is one defence; none needs a service beyond SQLite
(the Prefect API is a stand-in that answers what a broken proxy or server might)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prefect.settings import PREFECT_API_URL, temporary_settings
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient
from structlog.testing import capture_logs

from mnemoflow.errors import ConfigError
from mnemoflow.flows.server.app import create_app, shared_secrets
from mnemoflow.flows.server.auth import MAX_FAILURES, SESSION_COOKIE, FailureThrottle, Sessions
from mnemoflow.flows.server.headers import SecurityHeaders
from mnemoflow.flows.server.hooks.providers import MAX_DEPTH, sign_generic
from mnemoflow.memory import SQLiteStore
from mnemoflow.memory.records import NodeRecord
from mnemoflow.settings import EmbeddingSettings, HooksSettings, OpenAISettings, Settings, StoreSettings, UISettings
from tests.conftest import EMBEDDER

TOKEN = "a-token-long-enough-for-the-tests"
SECRET = "generic-secret-for-the-tests"
HOOKS_YAML = """
hooks:
  - name: stats
    provider: generic
    secret_env: TEST_SECURITY_SECRET
    deployment: run_graph/text-stats
    parameters:
      input: "{text: text}"
"""


def settings_for(tmp_path: Path, *, hooks: bool = False, **ui: Any) -> Settings:
    hooks_settings = HooksSettings(file=tmp_path / "hooks.yaml", max_body_bytes=64 * 1024) if hooks else HooksSettings()
    return Settings(store=StoreSettings(backend="sqlite", sqlite_path=tmp_path / "memory.db"), hooks=hooks_settings, ui=UISettings(**ui))


@pytest.fixture
def hooks_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SECURITY_SECRET", SECRET)
    (tmp_path / "hooks.yaml").write_text(HOOKS_YAML)


async def seed(path: Path, embedding_model: str = EMBEDDER.model) -> None:
    """Two records in namespace ``ns``, so that reads get past "no such namespace"."""
    store = SQLiteStore(path, embedding_model=embedding_model, embedding_dimension=EMBEDDER.dimension)
    await store.setup()
    try:
        await store.upsert_nodes([NodeRecord(id=name, namespace="ns", kind="Document", text=f"note {name}") for name in ("x", "y")])
    finally:
        await store.close()


@pytest.fixture
def open_site(tmp_path: Path, hooks_env: None) -> Iterator[str]:
    """A loopback server without a token, with one generic hook and two records in namespace ``ns``."""
    from tests.support.web_server import serve

    asyncio.run(seed(tmp_path / "memory.db"))
    with serve(create_app(settings_for(tmp_path, hooks=True))) as url:
        yield url


@pytest.fixture
def guarded_site(tmp_path: Path) -> Iterator[str]:
    from tests.support.web_server import serve

    with serve(create_app(settings_for(tmp_path, token=SecretStr(TOKEN), trusted_proxies="127.0.0.1"))) as url:
        yield url


def raw_request(url: str, request: bytes, *, then: bytes = b"", pause_s: float = 0.0, timeout_s: float = 30.0) -> bytes:
    """Send ``request`` on a plain socket (``then`` after ``pause_s``) and read the answer until the server closes."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout_s) as connection:
        connection.sendall(request)
        if then:
            time.sleep(pause_s)
            with contextlib.suppress(OSError):  # the server may have answered and closed already
                connection.sendall(then)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer and len(answer) > answer.index(b"\r\n\r\n") + 4:
                break
        return answer


# -- 1. a token too short to be one ----------------------------------------------------------------------


@pytest.mark.parametrize("token", ["", " ", "fifteen-chars-x"])
def test_an_empty_or_short_ui_token_is_refused_at_start(token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MNEMOFLOW_UI_TOKEN", token)
    with pytest.raises(ConfigError) as info:
        Settings.load()
    message = str(info.value)
    assert "MNEMOFLOW_UI_TOKEN" in message and "16 characters" in message
    assert repr(token) not in message or token == ""  # a token's value is never repeated


def test_create_app_refuses_a_short_token_even_in_unchecked_settings(tmp_path: Path) -> None:
    unchecked = settings_for(tmp_path).model_copy(update={"ui": UISettings.model_construct(token=SecretStr(""))})
    with pytest.raises(ConfigError, match="16 characters"):
        create_app(unchecked)


# -- 2, 12. bodies bounded in size and in time -----------------------------------------------------------


def test_login_bounds_a_chunked_body_while_reading_it(guarded_site: str) -> None:
    sent = 0

    def endless() -> Iterator[bytes]:
        nonlocal sent
        while sent < 64 * 1_048_576:
            sent += 65536
            yield b"token=" + b"x" * 65530

    with httpx.Client(base_url=guarded_site, timeout=60) as http:
        try:
            reply = http.post("/login", content=endless(), headers={"Content-Type": "application/x-www-form-urlencoded"})
            assert reply.status_code == 413 and "larger than" in reply.json()["error"]
        except httpx.HTTPError:
            pass  # the server answered 413 and closed while the body was still being sent
        assert sent < 64 * 1_048_576  # it stopped reading long before the end
        assert http.get("/login").status_code == 200


@pytest.mark.parametrize("path", ["/login", "/api/graphs", "/hooks/stats", "/graphs"])
def test_a_declared_length_over_the_limit_is_refused_before_reading(open_site: str, path: str) -> None:
    answer = raw_request(open_site, f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 999999999\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_a_trickled_body_is_cut_off(tmp_path: Path, hooks_env: None) -> None:
    from tests.support.web_server import serve

    with serve(create_app(settings_for(tmp_path, hooks=True, body_timeout_s=1))) as url:
        head = b"POST /hooks/stats HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        answer = raw_request(url, head, then=b'"a', pause_s=3)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"not sent within 1 s" in answer


@pytest.mark.parametrize("path", ["/api/graphs", "/hooks/nope", "/static/app.css"])
def test_an_answer_before_the_body_is_read_closes_the_connection(open_site: str, path: str) -> None:
    """Else the server would read and drop the rest of the body, however long, to keep the connection."""
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    chunk = b"4000\r\n" + b"x" * 0x4000 + b"\r\n"
    parts = urlsplit(open_site)
    sent, limit = 0, 256 * 1_048_576
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as connection:
        connection.sendall(head + chunk)
        answer = connection.recv(65536)
        with contextlib.suppress(OSError):  # the server closed: the sender's writes fail
            while sent < limit:
                connection.sendall(chunk)
                sent += len(chunk)
    assert answer.startswith(b"HTTP/1.1 4") and b"connection: close" in answer.lower(), answer[:300]
    assert sent < limit


# -- 5. DNS rebinding ------------------------------------------------------------------------------------


def test_only_this_servers_hosts_are_answered(tmp_path: Path) -> None:
    from tests.support.web_server import serve

    with serve(create_app(settings_for(tmp_path, allowed_hosts="memory.internal, *.corp.example"))) as url:
        port = urlsplit(url).port
        with httpx.Client(base_url=url, timeout=30) as http:
            for host in (f"127.0.0.1:{port}", f"localhost:{port}", "[::1]", "memory.internal", "ui.corp.example:443"):
                assert http.get("/api/graphs", headers={"Host": host}).status_code == 200, host
            for host in (f"evil.example:{port}", "rebind.attacker.test", "corp.example.evil.test", "localhost.evil.test", "", "a b"):
                reply = http.get("/api/graphs", headers={"Host": host})
                assert reply.status_code == 400, host
                assert "MNEMOFLOW_UI_ALLOWED_HOSTS" in reply.json()["error"]
                assert reply.headers["x-frame-options"] == "DENY"  # refusals carry the hardening headers too


# -- 9. numbers in range ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/memory/records", {"namespace": "ns", "offset": 10**20}),
        ("/api/memory/records", {"namespace": "ns", "offset": 2**63}),
        ("/api/memory/neighbours", {"namespace": "ns", "id": "x", "offset": 10**19}),
        ("/api/memory/neighbours", {"namespace": "ns", "id": "x", "limit": 10**19}),
        ("/memory", {"namespace": "ns", "offset": 10**19}),
        ("/api/runs", {"limit": 10**19}),
    ],
)
def test_out_of_range_numbers_are_422_not_500(open_site: str, path: str, params: dict[str, Any]) -> None:
    reply = httpx.get(open_site + path, params=params, timeout=30)
    assert reply.status_code == 422, (reply.status_code, reply.text[:300])


def test_every_numeric_query_parameter_has_an_upper_bound(tmp_path: Path) -> None:
    app = create_app(settings_for(tmp_path))
    routes = [inner for route in app.routes for inner in getattr(getattr(route, "original_router", None), "routes", [route])]
    numeric, unbounded = [], []
    for route in routes:
        dependant = getattr(route, "dependant", None)
        for param in dependant.query_params if dependant is not None else []:
            if param.field_info.annotation in (int, float):
                numeric.append(param.name)
                if not any(hasattr(meta, "le") or hasattr(meta, "lt") for meta in param.field_info.metadata):
                    unbounded.append(f"{getattr(route, 'path', route)}: {param.name}")
    assert {"limit", "offset", "k"} <= set(numeric)  # the walk found the routes
    assert unbounded == []


# -- 11. sign-in: signed sessions, throttling, Secure behind a trusted proxy --------------------------------


def test_the_session_cookie_is_signed_and_expires() -> None:
    sessions = Sessions(TOKEN, lifetime_s=3600)
    value = sessions.issue(now=1_000_000)
    assert TOKEN not in value
    assert sessions.valid(value, now=1_000_000 + 3599)
    assert not sessions.valid(value, now=1_000_000 + 3600)  # expired
    expiry, _, signature = value.partition(".")
    assert not sessions.valid(f"{int(expiry) + 10**6}.{signature}", now=1_000_000)  # a longer life is not signed
    assert not Sessions(TOKEN + "-changed", lifetime_s=3600).valid(value, now=1_000_000)  # a new token ends sessions
    for forged in ("", ".", "x.y", f"{expiry}.", "9" * 40 + "." + signature, f"{expiry}.{signature}\u00e9", "\u00b2\u00b3.abc"):
        assert not sessions.valid(forged, now=1_000_000), forged


def test_login_gives_a_session_not_the_token_and_it_works(guarded_site: str) -> None:
    with httpx.Client(base_url=guarded_site, timeout=30) as http:
        reply = http.post("/login", data={"token": TOKEN, "next": "/runs"})
        assert reply.status_code == 303
        cookie = reply.headers["set-cookie"]
        assert TOKEN not in cookie and f"{SESSION_COOKIE}=" in cookie and "Max-Age=43200" in cookie
        assert "secure" not in cookie.lower()  # plain HTTP, no proxy said otherwise
        assert http.get("/api/namespaces").status_code == 200
        http.cookies.set(SESSION_COOKIE, TOKEN)  # the raw token is not a session
        assert http.get("/api/namespaces").status_code == 401


def test_a_cookie_that_is_no_session_is_refused_not_a_500(guarded_site: str) -> None:
    for cookie in (b"\xb2.abc", b"\xb2\xb3" * 4 + b".00", b"1" * 13 + b".x", b"."):
        request = b"GET /api/graphs HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nCookie: " + SESSION_COOKIE.encode()
        answer = raw_request(guarded_site, request + b"=" + cookie + b"\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 401"), (cookie, answer[:200])


def test_a_login_form_of_many_fields_is_no_500(guarded_site: str) -> None:
    form = "&".join(f"f{index}=x" for index in range(2000)) + f"&token={TOKEN}"
    reply = httpx.post(guarded_site + "/login", content=form, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert reply.status_code == 303


def test_the_bearer_scheme_is_case_insensitive(guarded_site: str) -> None:
    for scheme in ("Bearer", "bearer", "BEARER"):
        assert httpx.get(guarded_site + "/api/graphs", headers={"Authorization": f"{scheme} {TOKEN}"}).status_code == 200


def test_tokens_with_spaces_or_beyond_ascii_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    for token in (" " + "x" * 20, "\u00e9" * 20, "x" * 19 + "\n"):
        monkeypatch.setenv("MNEMOFLOW_UI_TOKEN", token)
        with pytest.raises(ConfigError, match="printable ASCII"):
            Settings.load()


def test_wrong_tokens_are_throttled_per_client(guarded_site: str) -> None:
    with httpx.Client(base_url=guarded_site, timeout=30) as http:
        for _ in range(MAX_FAILURES):
            assert http.post("/login", data={"token": "wrong"}).status_code == 401
        throttled = http.post("/login", data={"token": TOKEN})
        assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) > 0
        assert http.get("/api/graphs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 429
        # a signed session is no guess: a neighbour's wrong tokens do not lock its owner out
        session = Sessions(TOKEN, lifetime_s=3600).issue()
        assert http.get("/api/graphs", headers={"Cookie": f"{SESSION_COOKIE}={session}"}).status_code == 200
        # another client (as a trusted proxy reports it) is not held back by this one's failures
        other = {"X-Forwarded-For": "203.0.113.9"}
        assert http.get("/api/graphs", headers={"Authorization": f"Bearer {TOKEN}", **other}).status_code == 200


def test_bearer_failures_count_too() -> None:
    throttle = FailureThrottle(limit=3, window_s=60)
    for moment in (0.0, 1.0, 2.0):
        assert throttle.wait_s("a", now=moment) == 0
        throttle.failed("a", now=moment)
    assert throttle.wait_s("a", now=3.0) == pytest.approx(57.0)
    assert throttle.wait_s("b", now=3.0) == 0
    assert throttle.wait_s("a", now=60.5) == 0  # the first failure left the window


def test_the_cookie_is_secure_when_a_trusted_proxy_says_https(guarded_site: str) -> None:
    with httpx.Client(base_url=guarded_site, timeout=30) as http:
        reply = http.post("/login", data={"token": TOKEN}, headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.7"})
        assert reply.status_code == 303 and "secure" in reply.headers["set-cookie"].lower()


def test_proxy_headers_are_ignored_unless_the_proxy_is_trusted(tmp_path: Path) -> None:
    from tests.support.web_server import serve

    with serve(create_app(settings_for(tmp_path, token=SecretStr(TOKEN)))) as url, httpx.Client(base_url=url, timeout=30) as http:
        reply = http.post("/login", data={"token": TOKEN}, headers={"X-Forwarded-Proto": "https"})
        assert reply.status_code == 303 and "secure" not in reply.headers["set-cookie"].lower()
        for index in range(MAX_FAILURES):  # a forged X-Forwarded-For does not give each guess a fresh address
            http.post("/login", data={"token": "wrong"}, headers={"X-Forwarded-For": f"192.0.2.{index}"})
        assert http.post("/login", data={"token": TOKEN}, headers={"X-Forwarded-For": "192.0.2.200"}).status_code == 429


# -- 7, 12. hook answers: unknown hooks, deep bodies, Prefect replies that are not Prefect's ----------------


def signed(body: bytes) -> dict[str, str]:
    return sign_generic(SECRET.encode(), body, int(time.time()))


def test_an_unknown_hook_is_404_without_naming_the_others(open_site: str) -> None:
    reply = httpx.post(open_site + "/hooks/nope", content=b"{}", timeout=30)
    assert reply.status_code == 404 and reply.json()["error"] == "unknown hook"
    assert "stats" not in reply.text


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 300, 5000])
def test_a_deeply_nested_signed_body_is_422(open_site: str, depth: int) -> None:
    body = ('{"text": ' + "[" * depth + "]" * depth + "}").encode()
    reply = httpx.post(open_site + "/hooks/stats", content=body, headers=signed(body), timeout=30)
    assert reply.status_code == 422 and "nested" in reply.json()["error"], reply.text[:300]


def stand_in_prefect(reply: Response) -> Starlette:
    async def anything(request: Request) -> Response:
        return reply

    return Starlette(routes=[Route("/{path:path}", anything, methods=["GET", "POST", "PATCH", "PUT", "DELETE"])])


@pytest.mark.parametrize(
    "reply",
    [
        HTMLResponse("<html><body>502 Bad Gateway</body></html>"),
        JSONResponse({"unexpected": True}),
        JSONResponse([1, 2, 3]),
        HTMLResponse("<html>maintenance</html>", status_code=500),
    ],
    ids=["html", "unexpected-fields", "a-list", "html-500"],
)
def test_a_prefect_reply_that_cannot_be_read_is_a_deliberate_503(tmp_path: Path, hooks_env: None, reply: Response) -> None:
    from tests.support.web_server import serve

    body = json.dumps({"text": "Memory that lasts."}).encode()
    with (
        serve(stand_in_prefect(reply)) as prefect,
        temporary_settings({PREFECT_API_URL: prefect + "/api"}),
        serve(create_app(settings_for(tmp_path, hooks=True))) as site,
    ):
        answer = httpx.post(site + "/hooks/stats", content=body, headers=signed(body), timeout=60)
    assert answer.status_code == 503, answer.text[:500]
    assert answer.headers["retry-after"] and "Prefect" in answer.json()["error"]


def test_the_503_body_carries_no_credentials_of_the_prefect_url(tmp_path: Path, hooks_env: None) -> None:
    from tests.support.web_server import free_port, serve

    body = json.dumps({"text": "Memory that lasts."}).encode()
    closed = f"127.0.0.1:{free_port()}"
    with (
        temporary_settings({PREFECT_API_URL: f"http://admin:hunter2secret@{closed}/api"}),
        serve(create_app(settings_for(tmp_path, hooks=True))) as site,
    ):
        answer = httpx.post(site + "/hooks/stats", content=body, headers=signed(body), timeout=60)
    assert answer.status_code == 503 and closed in answer.text, answer.text
    assert "hunter2secret" not in answer.text and "admin" not in answer.text


# -- 8. hooks sharing a secret ---------------------------------------------------------------------------


def test_hooks_sharing_a_secret_are_found_and_warned_about(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support.web_server import serve

    assert shared_secrets({"a": b"s", "b": b"t", "c": b"s"}) == [["a", "c"]]
    assert shared_secrets({"a": b"s", "b": b"t"}) == []
    monkeypatch.setenv("TEST_SECURITY_SECRET", SECRET)
    (tmp_path / "hooks.yaml").write_text(HOOKS_YAML + HOOKS_YAML.split("hooks:\n", 1)[1].replace("name: stats", "name: stats-copy"))
    with capture_logs() as logs, serve(create_app(settings_for(tmp_path, hooks=True))):
        pass
    warnings = [entry for entry in logs if entry["event"] == "hooks.shared_secret"]
    assert [entry["hooks"] for entry in warnings] == [["stats", "stats-copy"]]


def test_a_signature_first_seen_on_another_hook_never_runs_whatever_became_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first copy could not run (no Prefect: 503, kept for a retry); a copy sent to another hook with the same
    secret is a replay all the same, and the first hook's retry is still its own."""
    from tests.support.web_server import serve

    monkeypatch.setenv("TEST_SECURITY_SECRET", SECRET)
    (tmp_path / "hooks.yaml").write_text(HOOKS_YAML + HOOKS_YAML.split("hooks:\n", 1)[1].replace("name: stats", "name: stats-copy"))
    body = json.dumps({"text": "Memory that lasts."}).encode()
    headers = signed(body)
    with serve(create_app(settings_for(tmp_path, hooks=True))) as site, httpx.Client(base_url=site, timeout=30) as http:
        assert http.post("/hooks/stats", content=body, headers=headers).status_code == 503
        elsewhere = http.post("/hooks/stats-copy", content=body, headers=headers)
        assert elsewhere.status_code == 200 and elsewhere.json()["status"] == "replay", elsewhere.text
        retry = http.post("/hooks/stats", content=body, headers=headers)
        assert retry.status_code == 503 and "PREFECT_API_URL" in retry.json()["error"]


def test_a_model_error_shown_over_http_carries_no_credentials(tmp_path: Path) -> None:
    from tests.support.web_server import free_port, serve

    asyncio.run(seed(tmp_path / "memory.db", embedding_model="text-embedding-3-small"))
    base_url = f"http://bob:hunter2secret@127.0.0.1:{free_port()}/v1"
    settings = settings_for(tmp_path).model_copy(
        update={"embedding": EmbeddingSettings(provider="openai", dimension=EMBEDDER.dimension), "openai": OpenAISettings(base_url=base_url)}
    )
    with serve(create_app(settings)) as site:
        params = {"namespace": "ns", "q": "note", "mode": "vector", "kind": "Chunk"}
        for path in ("/api/memory/search", "/memory"):
            reply = httpx.get(site + path, params=params, timeout=60)
            assert reply.status_code == 503 and "embedding model" in reply.text, (path, reply.status_code, reply.text[:300])
            assert "hunter2secret" not in reply.text and "bob" not in reply.text, path


def test_an_unexpected_error_is_a_500_with_the_hardening_headers() -> None:
    async def broken(request: Request) -> Response:
        raise RuntimeError("a bug")

    app = SecurityHeaders(Starlette(routes=[Route("/", broken)]))
    with TestClient(app, raise_server_exceptions=False) as client:
        reply = client.get("/")
    assert reply.status_code == 500 and reply.headers["x-frame-options"] == "DENY" and "a bug" not in reply.text


# -- fuzz: sign-in and the memory API's parameters never answer 500 ----------------------------------------

NUMBERS = st.one_of(st.integers(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=True), st.text(max_size=12))
TEXTS = st.one_of(st.text(max_size=60), st.text(alphabet=st.characters(codec="utf-8"), max_size=300), st.just("\x00"), st.just("'\"--;"))


def test_random_query_parameters_of_the_memory_api_never_answer_500(open_site: str) -> None:
    paths = ["/api/memory/records", "/api/memory/search", "/api/memory/record", "/api/memory/neighbours", "/api/runs", "/memory", "/runs"]
    with httpx.Client(base_url=open_site, timeout=30) as http:

        @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
        @given(
            path=st.sampled_from(paths),
            params=st.fixed_dictionaries(
                {},
                optional={
                    "namespace": TEXTS, "kind": TEXTS, "q": TEXTS, "id": TEXTS, "mode": st.sampled_from(["keyword", "vector", "x"]),
                    "limit": NUMBERS, "offset": NUMBERS, "k": NUMBERS,
                },
            ),
        )
        def check(path: str, params: dict[str, Any]) -> None:
            reply = http.get(path, params={key: str(value) for key, value in params.items()})
            assert reply.status_code < 500, (path, params, reply.status_code, reply.text[:300])

        check()


def test_random_login_requests_never_answer_500(guarded_site: str) -> None:
    with httpx.Client(base_url=guarded_site, timeout=30) as http:

        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
        @given(
            body=st.one_of(st.binary(max_size=4096), TEXTS.map(lambda text: text.encode("utf-8", "surrogatepass"))),
            content_type=st.sampled_from(["application/x-www-form-urlencoded", "application/json", "text/plain", "", "multipart/form-data"]),
            forwarded=st.one_of(st.none(), st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)),
        )
        def check(body: bytes, content_type: str, forwarded: str | None) -> None:
            headers = {"Content-Type": content_type} if content_type else {}
            if forwarded is not None:
                headers["X-Forwarded-For"] = forwarded.strip() or "-"
            reply = http.post("/login", content=body, headers=headers)
            assert reply.status_code in {303, 401, 413, 429}, (reply.status_code, reply.text[:300])

        check()
