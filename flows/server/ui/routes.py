"""Mount the web UI on the app: pages, ``/api``, ``/login``, the UI's own ``/static`` files and the npm libraries under ``/vendor``.

The front-end libraries (mermaid, cytoscape) are installed by ``make ui`` from ``frontend/package-lock.json``
into ``frontend/node_modules`` and served from there; nothing is fetched from a CDN. Without them the pages
still serve, with a note saying how to install them.
"""

from __future__ import annotations

import hmac
from typing import Annotated
from urllib.parse import parse_qs, urlsplit

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from mnemoflow.flows.server.state import TOKEN_COOKIE, ServerState, server_state
from mnemoflow.flows.server.ui import api, pages
from mnemoflow.flows.server.ui.views import UIError

__all__ = ["mount_ui", "safe_next"]

STATIC = pages.HERE / "static"
COOKIE_MAX_AGE = 30 * 24 * 3600


def safe_next(target: str | None) -> str:
    """``target`` when it is a path on this server, else ``/graphs``: ``/login`` never redirects elsewhere."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/graphs"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or any(ord(character) < 32 for character in target):
        return "/graphs"
    return target


def _is_page(request: Request) -> bool:
    path = request.url.path
    return not (path.startswith("/api/") or path.startswith("/hooks/") or path.startswith("/docs") or path == "/openapi.json")


async def _ui_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, UIError)
    if _is_page(request):
        return pages.error_page(request, exc.status, exc.message)
    return JSONResponse({"error": exc.message}, status_code=exc.status)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    if not _is_page(request):
        return await request_validation_exception_handler(request, exc)
    problems = "; ".join(f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors())
    return pages.error_page(request, 422, f"bad request: {problems}")


def _login_page(request: Request, next_path: str, *, error: str = "", status_code: int = 200) -> Response:
    token_set = request.app.state.mnemoflow.settings.ui.token is not None
    return pages.render(
        request, "login.html", status_code=status_code, section="", title="Sign in", next=next_path, error=error, token_set=token_set
    )


def mount_ui(app: FastAPI) -> None:
    """Add the UI's routes, static files and error handlers to ``app`` (built by ``create_app``)."""
    app.include_router(pages.router)
    app.include_router(api.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for name, path in pages.VENDOR_FILES.items():
        dist = (pages.VENDOR / path).parent
        if dist.is_dir():
            app.mount(f"/vendor/{name}", StaticFiles(directory=dist), name=f"vendor-{name}")
    app.add_exception_handler(UIError, _ui_error)
    app.add_exception_handler(RequestValidationError, _validation_error)

    @app.get("/login", include_in_schema=False)
    def login_form(request: Request, next: Annotated[str | None, Query(max_length=2000)] = None) -> Response:
        return _login_page(request, safe_next(next))

    @app.post("/login", include_in_schema=False)
    async def login(request: Request, state: Annotated[ServerState, Depends(server_state)]) -> Response:
        body = (await request.body())[:10_000].decode("utf-8", errors="replace")
        form = parse_qs(body, keep_blank_values=True)
        next_path = safe_next((form.get("next") or [""])[0])
        expected = state.settings.ui.token
        if expected is None:
            return RedirectResponse(next_path, status_code=303)
        given = (form.get("token") or [""])[0]
        if not hmac.compare_digest(given.encode("utf-8"), expected.get_secret_value().encode("utf-8")):
            return _login_page(request, next_path, error="That token is not right.", status_code=401)
        response = RedirectResponse(next_path, status_code=303)
        response.set_cookie(
            TOKEN_COOKIE,
            given,
            max_age=COOKIE_MAX_AGE,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response
