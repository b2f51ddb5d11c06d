"""Mount the web UI on the app: pages, ``/api``, ``/login``, the UI's own ``/static`` files and the npm libraries under ``/vendor``.

The front-end libraries (mermaid, cytoscape) are installed by ``make ui`` from ``frontend/package-lock.json``
into ``frontend/node_modules`` and served from there; nothing is fetched from a CDN. Without them the pages
still serve, with a note saying how to install them.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qs, urlsplit

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from mnemoflow.flows.server.auth import SESSION_COOKIE, client_of, retry_after_s
from mnemoflow.flows.server.state import ServerState, server_state
from mnemoflow.flows.server.ui import actions, api, deliveries, mechanisms, pages
from mnemoflow.flows.server.ui.views import UIError

__all__ = ["mount_ui", "safe_next"]

STATIC = pages.HERE / "static"


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
    return not (path.startswith("/api/") or path.startswith("/hooks/") or path == "/openapi.json")


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
    app.include_router(actions.router)
    app.include_router(deliveries.router)
    for router in mechanisms.routers():
        app.include_router(router)
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
        form = parse_qs((await request.body()).decode("utf-8", errors="replace"), keep_blank_values=True)  # 16 KiB at most
        next_path = safe_next((form.get("next") or [""])[0])
        sessions = state.sessions
        if sessions is None:
            return RedirectResponse(next_path, status_code=303)
        client = client_of(request)
        wait_s = state.throttle.wait_s(client)
        if wait_s > 0:
            page = _login_page(request, next_path, error="Too many wrong tokens: wait a minute, then try again.", status_code=429)
            page.headers["Retry-After"] = str(retry_after_s(wait_s))
            return page
        if not sessions.is_token((form.get("token") or [""])[0]):
            state.throttle.failed(client)
            return _login_page(request, next_path, error="That token is not right.", status_code=401)
        response = RedirectResponse(next_path, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            sessions.issue(),
            max_age=int(sessions.lifetime_s),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",  # behind a TLS proxy: when MNEMOFLOW_UI_TRUSTED_PROXIES names it
        )
        return response
