"""Bounds on what a client may send: a body's size (413) and the time it may take to send it (408).

:class:`BodyLimits` wraps the whole app, so every route that reads a body reads a bounded one, whatever it does
with it: a declared ``Content-Length`` over the limit is refused before a byte is read, and a chunked body is
refused as soon as it grows past the limit. A body must arrive within ``timeout_s`` from its first wait, so a
sender trickling a byte at a time cannot hold a connection for as long as it likes. An answer sent before the
body was read (a 401, a 404, a 400 for a foreign host) closes the connection, since the server would otherwise
read and drop the rest of the body, however long, to keep the connection open.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodyLimits"]

CLOSE = {"Connection": "close"}
"""The rest of a refused body is not read: the connection closes after the answer."""


class _BodyRefused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class BodyLimits:
    """ASGI middleware: at most ``limit_for(path)`` bytes of body per request, all of it within ``timeout_s``."""

    def __init__(self, app: ASGIApp, *, limit_for: Callable[[str], tuple[int, str]], timeout_s: float) -> None:
        """``limit_for`` gives a path's largest body in bytes and the setting that sets it (named in the 413)."""
        self.app = app
        self.limit_for = limit_for
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = self.limit_for(scope["path"])
        too_large = f"the body is larger than {limit} bytes ({setting})"
        headers = Headers(scope=scope)
        declared = headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > limit:
            await JSONResponse({"error": too_large}, status_code=413, headers=CLOSE)(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        received = 0
        body_done = not (headers.get("transfer-encoding") or declared not in ("", "0"))
        started = False

        async def bounded_receive() -> Message:
            nonlocal deadline, received, body_done
            if started and not body_done:  # the answer is on its way: the rest of the body is not wanted
                return {"type": "http.disconnect"}
            if body_done:  # after the body, receive only waits for a disconnect: no deadline
                return await receive()
            deadline = deadline if deadline is not None else loop.time() + self.timeout_s
            try:
                message = await asyncio.wait_for(receive(), timeout=max(deadline - loop.time(), 0.0))
            except TimeoutError:
                raise _BodyRefused(408, f"the body was not sent within {self.timeout_s:g} s") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyRefused(413, too_large)
                body_done = not message.get("more_body", False)
            return message

        async def closing_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if not body_done:  # answered before the body was read: close rather than read the rest unbounded
                    MutableHeaders(scope=message)["connection"] = "close"
            await send(message)

        try:
            await self.app(scope, bounded_receive, closing_send)
        except _BodyRefused as refused:
            if started:
                raise
            await JSONResponse({"error": refused.reason}, status_code=refused.status, headers=CLOSE)(scope, receive, send)
