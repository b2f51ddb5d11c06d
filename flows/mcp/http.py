"""The MCP server over streamable HTTP: the SDK's app at ``/mcp`` behind the web server's host check and a token.

As ``mnemoflow serve``: a request whose ``Host`` (or ``Origin``, when a browser sends one) names another server
gets 400 (:mod:`~mnemoflow.flows.server.hosts`, against DNS rebinding; it replaces the SDK's own check, which
knows only loopback names); with a token configured (``MNEMOFLOW_MCP_TOKEN``, else ``MNEMOFLOW_UI_TOKEN``) every
request needs ``Authorization: Bearer <token>`` (401 otherwise, 429 for a client that got it wrong too often);
without one the server refuses to listen beyond loopback.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from mnemoflow.flows.mcp.access import McpToken, mcp_token
from mnemoflow.flows.server.auth import FailureThrottle, Sessions, bearer_token, client_of, too_many
from mnemoflow.flows.server.hosts import HostCheck, host_allowed, own_names
from mnemoflow.settings import Settings

__all__ = ["MCP_PATH", "BearerGuard", "OriginCheck", "http_app"]

MCP_PATH = "/mcp"
"""Where the MCP endpoint answers (the SDK's default path)."""


class BearerGuard:
    """ASGI middleware: every HTTP request needs the token as ``Authorization: Bearer``; wrong tokens are throttled
    per client, as the web UI's are."""

    def __init__(self, app: ASGIApp, *, token: McpToken, throttle: FailureThrottle | None = None) -> None:
        self.app = app
        self.variable = token.variable
        self.sessions = Sessions(token.value, lifetime_s=0)  # only its constant-time comparison: MCP has no sign-in
        self.throttle = throttle or FailureThrottle()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        client = client_of(request)
        wait_s = self.throttle.wait_s(client)
        if wait_s > 0:
            await too_many(wait_s)(scope, receive, send)
            return
        given = bearer_token(request)
        if given is not None and self.sessions.is_token(given):
            await self.app(scope, receive, send)
            return
        if given is not None:  # a wrong token is a guess; a missing one is not
            self.throttle.failed(client)
        body = {"error": f"this server asks for a token: send {self.variable} as 'Authorization: Bearer <token>'"}
        await JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)


class OriginCheck:
    """ASGI middleware: 400 for a request whose ``Origin`` (sent by browsers) names a host :class:`HostCheck` would
    refuse, so a page elsewhere cannot drive the server even through a name that points here."""

    def __init__(self, app: ASGIApp, *, names: frozenset[str]) -> None:
        self.app = app
        self.names = names

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            origin = dict(scope["headers"]).get(b"origin")
            if origin is not None and not host_allowed(urlsplit(origin.decode("latin-1")).netloc, self.names):
                reason = "this server does not answer pages from the origin the request names"
                await JSONResponse({"error": reason}, status_code=400)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def http_app(server: MCPServer[Any], settings: Settings, *, host: str) -> ASGIApp:
    """The ASGI app serving ``server`` at :data:`MCP_PATH` on ``host``: the host and origin checks, then the token
    (when one is set), then the SDK's app. Call :func:`~mnemoflow.flows.mcp.access.check_bind` first."""
    # our HostCheck and OriginCheck replace the SDK's DNS-rebinding check (it would refuse every non-loopback name)
    security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    app: ASGIApp = server.streamable_http_app(streamable_http_path=MCP_PATH, transport_security=security, host=host)
    token = mcp_token(settings)
    if token is not None:
        app = BearerGuard(app, token=token)
    allowed = [*settings.ui.allowed_host_names, *own_names(host)]
    checked = HostCheck(app, bound_to=host, allowed=allowed)
    return OriginCheck(checked, names=checked.names)
