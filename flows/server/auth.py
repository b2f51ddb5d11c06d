"""Signing in to ``mnemoflow serve``: the token guard, signed sessions and the throttling of wrong tokens.

A browser signs in at ``/login`` with ``MNEMOFLOW_UI_TOKEN`` and gets a session cookie that holds an expiry and
an HMAC of it under a key derived from the token, never the token itself: a stolen cookie stops working when it
expires or the token changes. Scripts send the token itself as ``Authorization: Bearer``. Each client may get
the token wrong :data:`MAX_FAILURES` times in :data:`FAILURE_WINDOW_S` seconds; after that its tokens are
answered 429 until the window has passed (a valid session still works: it cannot be guessed, and a neighbour's
wrong guesses must not lock its owner out).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections import deque
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "FAILURE_WINDOW_S",
    "MAX_FAILURES",
    "SESSION_COOKIE",
    "FailureThrottle",
    "Sessions",
    "TokenGuard",
    "bearer_token",
    "client_of",
    "retry_after_s",
    "too_many",
]

SESSION_COOKIE = "mnemoflow_session"
"""The cookie of a browser that signed in at ``/login``."""
MAX_FAILURES = 10
FAILURE_WINDOW_S = 60.0
OPEN_PATHS = ("/hooks/", "/static/", "/vendor/")
"""Paths that need no token: hooks carry their own signatures, static files hold nothing private."""


class Sessions:
    """Session values for one token: ``<expiry>.<HMAC-SHA256(key, expiry)>``, the key derived from the token."""

    def __init__(self, token: str, lifetime_s: float) -> None:
        self._key = hmac.new(token.encode("utf-8"), b"mnemoflow session key", hashlib.sha256).digest()
        self._token_digest = _digest(token.encode("utf-8"))
        self.lifetime_s = lifetime_s

    def issue(self, now: float | None = None) -> str:
        """A new session value, valid for ``lifetime_s`` from ``now``."""
        expiry = str(int((time.time() if now is None else now) + self.lifetime_s))
        return f"{expiry}.{self._sign(expiry)}"

    def valid(self, value: str, now: float | None = None) -> bool:
        """Whether ``value`` is a session this server issued and it has not expired."""
        expiry, _, signature = value.partition(".")
        if not _EXPIRY.fullmatch(expiry):
            return False
        if not hmac.compare_digest(signature.encode("utf-8", "replace"), self._sign(expiry).encode("ascii")):
            return False
        return int(expiry) > (time.time() if now is None else now)

    def is_token(self, given: str) -> bool:
        """Whether ``given`` is the token, in a time that tells nothing of it (not even its length)."""
        return hmac.compare_digest(_digest(given.encode("utf-8", "surrogateescape")), self._token_digest)

    def _sign(self, expiry: str) -> str:
        return hmac.new(self._key, expiry.encode("ascii"), hashlib.sha256).hexdigest()


_EXPIRY = re.compile(r"[0-9]{1,12}", re.ASCII)


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


class FailureThrottle:
    """Wrong tokens per client: at most ``limit`` in any ``window_s`` seconds before the client must wait."""

    def __init__(self, limit: int = MAX_FAILURES, window_s: float = FAILURE_WINDOW_S, max_clients: int = 10_000) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_clients = max_clients
        self._failures: dict[str, deque[float]] = {}

    def wait_s(self, client: str, now: float | None = None) -> float:
        """Seconds ``client`` must wait before trying again; 0 when it may try now."""
        if client not in self._failures:
            return 0.0
        moment = time.monotonic() if now is None else now
        failures = self._recent(client, moment)
        if len(failures) < self.limit:
            return 0.0
        return max(failures[0] + self.window_s - moment, 0.0)

    def failed(self, client: str, now: float | None = None) -> None:
        """Count one wrong token from ``client``."""
        moment = time.monotonic() if now is None else now
        if client not in self._failures and len(self._failures) >= self.max_clients:
            self._forget_quiet(moment)
        self._recent(client, moment).append(moment)

    def _recent(self, client: str, now: float) -> deque[float]:
        failures = self._failures.setdefault(client, deque(maxlen=self.limit))
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        return failures

    def _forget_quiet(self, now: float) -> None:
        """Make room for a new client: forget those with no failure in the window, else the longest quiet."""
        for client in [
            client for client, failures in self._failures.items() if not failures or failures[-1] <= now - self.window_s
        ]:
            del self._failures[client]
        if len(self._failures) >= self.max_clients:
            by_last_failure = sorted(self._failures, key=lambda client: self._failures[client][-1])
            for client in by_last_failure[: len(by_last_failure) // 10 + 1]:
                del self._failures[client]


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header (the scheme in any case), or None."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def client_of(request: Request) -> str:
    """The client's address: the peer, or what a trusted proxy said it is (``MNEMOFLOW_UI_TRUSTED_PROXIES``)."""
    return request.client.host if request.client else "unknown"


def retry_after_s(wait_s: float) -> int:
    """Whole seconds to tell a throttled client (``Retry-After``)."""
    return max(int(wait_s) + 1, 1)


def too_many(wait_s: float) -> JSONResponse:
    """The answer to a client that got the token wrong too often."""
    seconds = retry_after_s(wait_s)
    return JSONResponse(
        {"error": f"too many wrong tokens from this address: try again in {seconds} s"},
        status_code=429,
        headers={"Retry-After": str(seconds)},
    )


class TokenGuard:
    """ASGI middleware: ask every page and API for the token or a session; pages send people to /login."""

    def __init__(self, app: ASGIApp, *, sessions: Sessions, throttle: FailureThrottle) -> None:
        self.app = app
        self.sessions = sessions
        self.throttle = throttle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path == "/login" or path.startswith(OPEN_PATHS):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie is not None and self.sessions.valid(cookie):  # a signed session is no guess: never throttled
            await self.app(scope, receive, send)
            return
        client = client_of(request)
        wait_s = self.throttle.wait_s(client)
        bearer = bearer_token(request)
        if wait_s == 0 and bearer is not None:
            if self.sessions.is_token(bearer):
                await self.app(scope, receive, send)
                return
            self.throttle.failed(client)
        await self._refusal(request, wait_s)(scope, receive, send)

    @staticmethod
    def _refusal(request: Request, wait_s: float) -> Response:
        if wait_s > 0:
            return too_many(wait_s)
        path = request.url.path
        if path.startswith("/api/") or request.method != "GET":
            body = {"error": "this server asks for MNEMOFLOW_UI_TOKEN: send it as 'Authorization: Bearer <token>'"}
            return JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        target = path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?{urlencode({'next': target})}", status_code=303)
