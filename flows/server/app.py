"""The FastAPI app of ``mnemoflow serve``: the webhook receiver and the web UI, over one store.

The store, the embedder and the hooks are opened when the app starts and closed when it stops; nothing is
process-global, so tests build as many apps as they like.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse

from mnemoflow.errors import ConfigError
from mnemoflow.flows.server.hooks.config import HookSpec, load_hooks, secret_of
from mnemoflow.flows.server.hooks.deliveries import DeliveryLog
from mnemoflow.flows.server.hooks.routes import router as hooks_router
from mnemoflow.flows.server.state import TOKEN_COOKIE, ServerState
from mnemoflow.flows.server.ui.routes import mount_ui
from mnemoflow.graphs.parts import open_run_parts
from mnemoflow.settings import Settings

__all__ = ["check_bind", "create_app", "is_loopback"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _load_hooks(settings: Settings) -> tuple[dict[str, HookSpec], dict[str, bytes]]:
    if settings.hooks.file is None:
        return {}, {}
    hooks = load_hooks(settings.hooks.file)
    return hooks, {name: secret_of(hook, os.environ) for name, hook in hooks.items()}


def create_app(settings: Settings) -> FastAPI:
    """The app for ``settings``; raises ``ConfigError`` for a bad hooks file or a hook whose secret is unset."""
    hooks, secrets = _load_hooks(settings)
    token = settings.ui.token.get_secret_value() if settings.ui.token else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_run_parts(settings, checkpointer=False) as parts:
            deliveries = DeliveryLog(parts.store, namespace=settings.hooks.namespace, retention_days=settings.hooks.retention_days)
            app.state.mnemoflow = ServerState(settings, parts.store, parts.embedder, deliveries, hooks, secrets)
            parts.log.info("server.start", store=settings.store.backend, hooks=sorted(hooks))
            yield

    app = FastAPI(title="mnemoflow", summary="Webhooks that trigger runs, and a UI for graphs, runs and memory.", lifespan=lifespan)
    app.include_router(hooks_router)
    mount_ui(app)
    if token is not None:
        app.middleware("http")(_token_guard(token))
    return app


def _token_guard(token: str) -> Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]:
    """Ask every page and API for the token (hooks carry their own signatures); pages send people to /login."""
    expected = token.encode("utf-8")

    def presented(request: Request) -> bytes:
        header = request.headers.get("authorization", "")
        value = header[len("Bearer ") :] if header.startswith("Bearer ") else request.cookies.get(TOKEN_COOKIE, "")
        return value.encode("utf-8")

    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        path = request.url.path
        if path.startswith("/hooks/") or path == "/login" or path.startswith("/static/") or path.startswith("/vendor/"):
            return await call_next(request)
        if hmac.compare_digest(presented(request), expected):
            return await call_next(request)
        if path.startswith("/api/") or request.method != "GET":
            body: dict[str, Any] = {"error": "this server asks for MNEMOFLOW_UI_TOKEN: send it as 'Authorization: Bearer <token>'"}
            return JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        target = path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?{urlencode({'next': target})}", status_code=303)

    return guard


def check_bind(host: str, settings: Settings) -> None:
    """Refuse to serve beyond loopback without a token."""
    if not is_loopback(host) and settings.ui.token is None:
        raise ConfigError(
            f"--host {host} serves beyond this machine: set MNEMOFLOW_UI_TOKEN so that pages and APIs ask for a token"
        )
