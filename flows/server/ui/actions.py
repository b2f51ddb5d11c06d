"""Routes that change state from the UI: start a graph run, resume a thread, fork a step; and what their forms read.

Every route here that changes state is a ``POST`` with a JSON body, refused from other origins: 403 when an
``Origin`` header names another origin than the one the request reached (scheme, host and port; the scheme as a
trusted proxy reported it), or ``Sec-Fetch-Site`` says the request comes from another site; 415 unless the body is
``application/json``, which a plain HTML form on another site cannot send. The token (``MNEMOFLOW_UI_TOKEN``) is
asked for by the token guard, as on every ``/api`` route. A refusal answers ``{"error": summary, "fields": {field:
message}}``, ``fields`` naming the input fields at fault when the problem is theirs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mnemoflow.flows.server.launcher import Launched, LaunchError, RunLauncher
from mnemoflow.flows.server.state import ServerState, server_state
from mnemoflow.flows.server.ui import forms, runs, views
from mnemoflow.graphs.preview import preview

__all__ = ["ACTION_MAX_BODY_BYTES", "ForkBody", "ResumeBody", "StartBody", "is_action_path", "router", "same_origin_json"]

router = APIRouter(prefix="/api", tags=["actions"])

State = Annotated[ServerState, Depends(server_state)]

ACTION_MAX_BODY_BYTES = 1024 * 1024
"""The largest body of a start, resume or fork: room for a long text as a graph's input."""

_ACTION_PATH = re.compile(r"/api/(graphs/[^/]+/runs|runs/[^/]+/(resume|fork))/?")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SAME_SITE_FETCHES = ("same-origin", "none")
_THREAD_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$"


def is_action_path(path: str) -> bool:
    """Whether ``path`` is one of the routes here that take a body (they get :data:`ACTION_MAX_BODY_BYTES`)."""
    return _ACTION_PATH.fullmatch(path) is not None


class StartBody(BaseModel):
    """The body of a start."""

    model_config = ConfigDict(extra="forbid")

    input: dict[str, Any] = Field(default_factory=dict, description="The graph's input fields, and any other state field.")
    namespace: str | None = Field(None, min_length=1, max_length=200, description="The namespace; the server's when unset.")
    thread_id: str | None = Field(
        None, pattern=_THREAD_ID_PATTERN, description="The thread to run on (continues its state); a new one when unset."
    )


class ResumeBody(BaseModel):
    """The body of a resume."""

    model_config = ConfigDict(extra="forbid")

    namespace: str = Field(min_length=1, max_length=200, description="The namespace of the run to resume.")


class ForkBody(BaseModel):
    """The body of a fork."""

    model_config = ConfigDict(extra="forbid")

    namespace: str = Field(min_length=1, max_length=200, description="The namespace of the run to fork.")
    checkpoint_id: str = Field(min_length=1, max_length=200, description="The checkpoint of the run's thread to fork at.")
    edits: dict[str, Any] = Field(default_factory=dict, description="State fields to change at the fork: field -> new value.")


def _refusal(status: int, error: str, fields: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "fields": fields or {}}, status_code=status)


class _Refused(Exception):
    """A request refused before its route runs (the answer is ready)."""

    def __init__(self, answer: JSONResponse) -> None:
        self.answer = answer


def _origin(scheme: str, netloc: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of an origin, the port filled in from the scheme; ``None`` when it is not http(s)."""
    scheme = scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        return None
    match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[^\s:/@\[\]]+)(?::([0-9]{1,5}))?", netloc)
    if match is None:
        return None
    return scheme, match[1].lower().rstrip("."), int(match[2]) if match[2] else _DEFAULT_PORTS[scheme]


def _foreign_origin(request: Request) -> str | None:
    """Why ``request`` comes from another origin than this server's, or ``None`` when it does not."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site.lower() not in _SAME_SITE_FETCHES:
        return f"this request comes from another site (Sec-Fetch-Site: {site}): runs start only from this server's pages"
    given = request.headers.get("origin")
    if given is None:
        return None
    own = _origin(request.url.scheme, request.headers.get("host", ""))
    scheme, _, netloc = given.partition("://")
    if own is None or _origin(scheme, netloc) != own:
        return f"this request comes from another origin ({given[:200]}): runs start only from this server's pages"
    return None


async def same_origin_json(request: Request) -> dict[str, Any]:
    """The request's JSON object body, once the request is known to come from this server's own pages (403) and to
    be JSON (415): what every state-changing route here reads first."""
    foreign = _foreign_origin(request)
    if foreign is not None:
        raise _Refused(_refusal(403, foreign))
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if content_type != "application/json":
        raise _Refused(_refusal(415, f"send the body as application/json, not {content_type or 'without a Content-Type'}"))
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError) as exc:
        raise _Refused(_refusal(400, f"the body is not JSON: {exc}")) from exc
    if not isinstance(body, dict):
        raise _Refused(_refusal(422, "the body must be a JSON object"))
    return body


BodyT = TypeVar("BodyT", bound=BaseModel)


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI description of a route's JSON body (read by :func:`same_origin_json`, not by FastAPI)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


def _parsed(model: type[BodyT], body: dict[str, Any]) -> BodyT:
    """``body`` validated by ``model``; a 422 naming each field at fault (the top-level field, the path after it)."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        fields: dict[str, str] = {}
        for error in exc.errors():
            location = [str(part) for part in error["loc"]]
            name = location[0] if location else ""
            inside = f"at {'.'.join(location[1:])}: " if len(location) > 1 else ""
            fields.setdefault(name, inside + error["msg"])
        raise _Refused(_refusal(422, f"the request was refused: {len(fields)} field(s) to fix", fields)) from exc


def _launcher(state: ServerState) -> RunLauncher:
    if state.launcher is None:
        raise views.UIError(503, "this server was built without a run launcher: it cannot start runs")
    return state.launcher


def _launched(launched: Launched) -> JSONResponse:
    """The 202 of a start, resume or fork: the run, its thread and the page that follows it."""
    if launched.run_id is None:  # a Prefect worker makes the run's id: follow the thread
        url = runs.thread_url(launched.namespace, launched.thread_id)
    else:
        url = runs.run_url(launched.namespace, launched.run_id)
    body: dict[str, Any] = {
        "run_id": launched.run_id,
        "thread_id": launched.thread_id,
        "namespace": launched.namespace,
        "url": url,
    }
    if launched.prefect_flow_run_id is not None:
        body["prefect_flow_run_id"] = launched.prefect_flow_run_id
    return JSONResponse(body, status_code=202)


async def _answer(action: Awaitable[JSONResponse]) -> JSONResponse:
    """Await ``action`` (a route's work), answering a refusal or a launcher's error as JSON (a store's, as
    :func:`~mnemoflow.flows.server.ui.views.store_errors` does)."""
    try:
        with views.store_errors():
            answer = await action
    except _Refused as refused:
        return refused.answer
    except LaunchError as exc:
        return _refusal(exc.status, exc.message, exc.fields)
    return answer


@router.get("/graphs/{name}/form")
async def start_form(name: str, state: State) -> dict[str, Any]:
    """The start form of a library graph: its fields (declared inputs first), the default namespace, and whether a
    start becomes a Prefect flow run (``PREFECT_API_URL`` set and the graph deployed)."""
    launcher = _launcher(state)
    try:
        graph = launcher.graph(name)
        try:
            prefect = await launcher.deployment(name) is not None
        except LaunchError:  # Prefect does not answer: the start will say so
            prefect = False
    except LaunchError as exc:
        raise views.UIError(exc.status, exc.message) from exc
    fields = forms.form_fields(graph, launcher.registry)
    return {"graph": name, "fields": fields, "namespace": state.settings.namespace, "prefect": prefect}


@router.post("/graphs/{name}/runs", status_code=202, response_model=None, openapi_extra=_json_body(StartBody))
async def start_run(name: str, request: Request, state: State) -> JSONResponse:
    """Start a run of a library graph (JSON: ``input``, ``namespace``?, ``thread_id``?); 202 with the run's page, or
    422 naming each field at fault (a failed precondition on the field it reads), 429 when too many runs are under way."""

    async def start() -> JSONResponse:
        body = _parsed(StartBody, await same_origin_json(request))
        launcher = _launcher(state)
        namespace = body.namespace or state.settings.namespace
        return _launched(await launcher.start(name, body.input, namespace, body.thread_id))

    return await _answer(start())


@router.post("/runs/{run_id}/resume", status_code=202, response_model=None, openapi_extra=_json_body(ResumeBody))
async def resume_run(run_id: str, request: Request, state: State) -> JSONResponse:
    """Resume the thread of a run from its last checkpoint (JSON: ``namespace``); 202 with the new run's page, 404
    for an unknown run, 409 when the thread has nothing left to run (or is running)."""

    async def resume() -> JSONResponse:
        body = _parsed(ResumeBody, await same_origin_json(request))
        return _launched(await _launcher(state).resume(run_id, body.namespace))

    return await _answer(resume())


@router.get("/runs/{run_id}/checkpoints")
async def checkpoints(
    run_id: str, state: State, namespace: Annotated[str, Query(min_length=1, max_length=200)]
) -> list[dict[str, Any]]:
    """The checkpoints of a run's thread, oldest first: ``checkpoint_id``, ``step``, ``after`` (the node(s) whose step
    made it, or ``input``), ``next``, ``created_at``, ``values`` (previewed), ``editable`` (the exact JSON of the fields
    small enough to edit in a fork) and ``forkable``."""
    launcher = _launcher(state)
    try:
        with views.store_errors():
            graph, found = await launcher.checkpoints(run_id, namespace)
    except LaunchError as exc:
        raise views.UIError(exc.status, exc.message) from exc
    model = launcher.registry.states[graph.spec.state]
    return [
        {
            "checkpoint_id": view.checkpoint_id,
            "step": view.step,
            "after": list(view.after),
            "next": list(view.next),
            "created_at": view.created_at,
            "values": {field: preview(value) for field, value in view.values.items()},
            "editable": forms.editable_values(view.values, model),
            "forkable": view.step >= 0 and bool(view.next),
        }
        for view in found
    ]


@router.post("/runs/{run_id}/fork", status_code=202, response_model=None, openapi_extra=_json_body(ForkBody))
async def fork_run(run_id: str, request: Request, state: State) -> JSONResponse:
    """Fork a run's thread at one of its checkpoints with edited fields into a new thread and run the rest of it
    (JSON: ``namespace``, ``checkpoint_id``, ``edits``); 202 with the new run's page, 422 naming each bad edit."""

    async def fork() -> JSONResponse:
        body = _parsed(ForkBody, await same_origin_json(request))
        return _launched(await _launcher(state).fork(run_id, body.namespace, body.checkpoint_id, body.edits))

    return await _answer(fork())
