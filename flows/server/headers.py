"""The hardening headers every answer of ``mnemoflow serve`` carries.

The pages load only their own scripts, styles and images (``/static``, ``/vendor``) and fetch only ``/api``;
nothing else may run in them, and no other site may frame them. ``tests/test_ui_browser.py`` opens every kind of
page in Chromium and fails on any violation of this policy, so a directive tightened too far shows up there.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONTENT_SECURITY_POLICY", "SECURITY_HEADERS", "SecurityHeaders"]

CONTENT_SECURITY_POLICY = "; ".join(
    [
        # nothing is allowed that is not named below: no frames, workers, media, manifests or fonts (the UI has none)
        "default-src 'none'",
        # scripts are the UI's modules and the npm libraries, all same-origin files: nothing inline, no eval
        "script-src 'self'",
        # the one relaxation: Mermaid inserts a <style> element into the SVG it draws and sets style attributes on
        # its nodes and labels, and Cytoscape inserts a <style> element for its canvas. Their content depends on
        # the diagram (Mermaid's rules are scoped to the diagram's id), so hashes cannot name it, and style
        # attributes cannot carry a nonce: without 'unsafe-inline' every one of them is refused. Inline styles run
        # no code, and any url() in them may only load from this server (img-src, default-src).
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self'",  # the favicon
        "connect-src 'self'",  # the pages' fetches of /api
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",  # the sign-in form posts to /login
        "frame-ancestors 'none'",
    ]
)

SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}


class SecurityHeaders:
    """ASGI middleware: add :data:`SECURITY_HEADERS` to every HTTP answer that does not set them itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            if not started:  # answer the 500 here, with the headers; the server's own handler logs the error
                await PlainTextResponse("Internal Server Error", status_code=500, headers=SECURITY_HEADERS)(scope, receive, send)
            raise
