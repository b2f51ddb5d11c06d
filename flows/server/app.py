"""The FastAPI app of ``mnemoflow serve``: the webhook receiver and the web UI, over one store.

The store, the embedder and the hooks are opened when the app starts and closed when it stops; nothing is
process-global, so tests build as many apps as they like.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from mnemoflow.errors import ConfigError
from mnemoflow.flows.server.auth import FailureThrottle, Sessions, TokenGuard
from mnemoflow.flows.server.headers import SecurityHeaders
from mnemoflow.flows.server.hooks.config import HookSecrets, HookSpec, load_hooks, read_secrets
from mnemoflow.flows.server.hooks.deliveries import DeliveryLog
from mnemoflow.flows.server.hooks.routes import router as hooks_router
from mnemoflow.flows.server.hosts import HostCheck, is_loopback, own_names
from mnemoflow.flows.server.launcher import RunLauncher
from mnemoflow.flows.server.limits import BodyLimits
from mnemoflow.flows.server.state import ServerState
from mnemoflow.flows.server.ui.actions import ACTION_MAX_BODY_BYTES, is_action_path
from mnemoflow.flows.server.ui.routes import mount_ui
from mnemoflow.graphs.parts import open_run_parts
from mnemoflow.settings import MIN_TOKEN_CHARS, Settings

__all__ = ["check_bind", "create_app", "shared_secrets"]


def _load_hooks(settings: Settings) -> tuple[dict[str, HookSpec], HookSecrets]:
    """The enabled hooks (a disabled one is not served: it answers 404 like an unknown hook) and their secrets."""
    if settings.hooks.file is None:
        return {}, HookSecrets({}, {})
    hooks = load_hooks(settings.hooks.file)
    read = read_secrets(hooks, os.environ)
    return {name: hook for name, hook in hooks.items() if name in read.secrets}, read


def create_app(settings: Settings, *, host: str = "127.0.0.1") -> FastAPI:
    """The app for ``settings``, served on ``host``; raises ``ConfigError`` for a bad hooks file or a hook marked
    required whose secret is unset. Other hooks whose secret is unset are disabled, with one warning at start."""
    hooks, hook_secrets = _load_hooks(settings)
    secrets = dict(hook_secrets.secrets)
    token = settings.ui.token.get_secret_value() if settings.ui.token is not None else None
    if token is not None and len(token.strip()) < MIN_TOKEN_CHARS:  # settings built without validation
        raise ConfigError(f"MNEMOFLOW_UI_TOKEN must be at least {MIN_TOKEN_CHARS} characters")
    sessions = Sessions(token, settings.ui.session_hours * 3600) if token is not None else None
    throttle = FailureThrottle()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_run_parts(settings) as parts:  # with the checkpointer: the UI starts, resumes and forks runs
            deliveries = DeliveryLog(
                parts.store, namespace=settings.hooks.namespace, retention_days=settings.hooks.retention_days
            )
            launcher = RunLauncher(parts, max_runs=settings.ui.max_runs)
            state = app.state.mnemoflow = ServerState(
                settings, parts.store, parts.embedder, deliveries, hooks, secrets, sessions, throttle, launcher=launcher
            )
            parts.log.info("server.start", store=settings.store.backend, hooks=sorted(hooks))
            disabled = hook_secrets.warning()
            if disabled is not None:
                parts.log.warning("hooks.disabled", message=disabled, secret_env=dict(hook_secrets.disabled))
            for names in shared_secrets(secrets):
                parts.log.warning("hooks.shared_secret", hooks=names, advice="give each hook its own secret")
            try:
                yield
            finally:
                await launcher.close()  # runs under way are recorded as interrupted; their threads can be resumed
                await state.trigger.aclose()  # the Prefect client, opened by the first delivery

    # no /docs or /redoc: their pages load scripts from a CDN into this origin; the schema stays at /openapi.json
    app = FastAPI(
        title="mnemoflow",
        summary="Webhooks that trigger runs, and a UI for graphs, runs and memory.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.include_router(hooks_router)
    mount_ui(app)
    # the last added runs first: proxy headers, headers on every answer, body bounds, Host, then the token
    if sessions is not None:
        app.add_middleware(TokenGuard, sessions=sessions, throttle=throttle)
    app.add_middleware(HostCheck, bound_to=host, allowed=[*settings.ui.allowed_host_names, *own_names(host)])
    app.add_middleware(BodyLimits, limit_for=_body_limit(settings), timeout_s=settings.ui.body_timeout_s)
    app.add_middleware(SecurityHeaders)
    if settings.ui.trusted_proxy_addresses:
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.ui.trusted_proxy_addresses)
    return app


LOGIN_MAX_BODY_BYTES = 16 * 1024
"""The largest body of a request that is not a webhook delivery or a run's start, resume or fork (the sign-in form)."""


def _body_limit(settings: Settings) -> Callable[[str], tuple[int, str]]:
    def limit_for(path: str) -> tuple[int, str]:
        if path.startswith("/hooks/"):
            return settings.hooks.max_body_bytes, "MNEMOFLOW_HOOKS_MAX_BODY_BYTES"
        if is_action_path(path):
            return ACTION_MAX_BODY_BYTES, "the limit of a run's start, resume or fork"
        return LOGIN_MAX_BODY_BYTES, "the limit of every route but /hooks and the run actions"

    return limit_for


def shared_secrets(secrets: dict[str, bytes]) -> list[list[str]]:
    """Groups of hooks that share one secret: a delivery signed for one of them is valid for the others."""
    by_secret: dict[bytes, list[str]] = {}
    for name, secret in secrets.items():
        by_secret.setdefault(secret, []).append(name)
    return [sorted(names) for names in by_secret.values() if len(names) > 1]


def check_bind(host: str, settings: Settings) -> None:
    """Refuse to serve beyond loopback without a token."""
    if not is_loopback(host) and settings.ui.token is None:
        raise ConfigError(
            f"--host {host} serves beyond this machine: set MNEMOFLOW_UI_TOKEN so that pages and APIs ask for a token"
        )
