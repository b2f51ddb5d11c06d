"""Answer only requests that name this server in their ``Host`` header: a defence against DNS rebinding.

A page on another site can point its own name at 127.0.0.1 and then read a loopback server as if it were its
own origin; its requests still carry that name in ``Host``. So the server answers a request only when ``Host``
is an IP address (a browser sends one only when the user typed it: no name was rebound), ``localhost``, the
name it is bound to, or a name configured in ``MNEMOFLOW_UI_ALLOWED_HOSTS`` (``*.example.com`` for a domain's
names). Anything else gets 400.
"""

from __future__ import annotations

import ipaddress
import re
import socket

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["HostCheck", "host_allowed", "is_loopback", "own_names"]

_HOST = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^\s\[\]:/@]+)(?::[0-9]{1,5})?")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def is_loopback(host: str) -> bool:
    """Whether a server bound to ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def own_names(host: str) -> list[str]:
    """The machine's own names, when it serves beyond loopback: a client on the network may use them."""
    if is_loopback(host):
        return []
    return [socket.gethostname(), socket.getfqdn()]


def host_allowed(header: str | None, names: frozenset[str]) -> bool:
    """Whether a ``Host`` header names this server: an IP address, ``localhost`` or one of ``names``."""
    match = _HOST.fullmatch(header or "")
    if match is None:
        return False
    host = match["host"].lower().rstrip(".")
    if _is_ip(host) or host == "localhost" or host in names:
        return True
    return any(name.startswith("*.") and host.endswith(name[1:]) for name in names)


class HostCheck:
    """ASGI middleware: 400 for a request whose ``Host`` is not this server's (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, bound_to: str, allowed: list[str]) -> None:
        self.app = app
        self.names = frozenset(name.lower().rstrip(".") for name in [bound_to, *allowed] if name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
        if host_allowed(header, self.names):
            await self.app(scope, receive, send)
            return
        reason = "this server does not answer for the host the request names; add it to MNEMOFLOW_UI_ALLOWED_HOSTS"
        await JSONResponse({"error": reason}, status_code=400)(scope, receive, send)
