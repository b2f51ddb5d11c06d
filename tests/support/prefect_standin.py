"""A stand-in Prefect API: just the calls the webhook receiver makes, fast, counted and breakable on purpose.

A real Prefect server spends far more CPU per run than the receiver does, so a load test against one measures
Prefect. This one answers, on a free loopback port (uvicorn in a background thread):

- ``GET /api/deployments/name/{flow}/{deployment}``: a ``DeploymentResponse`` (any name exists);
- ``POST /api/deployments/{id}/create_flow_run``: a ``FlowRun``; the same ``idempotency_key`` returns the same
  run id, as Prefect's server does, and every run created is counted per key;
- ``GET /api/csrf-token``: 422, which tells Prefect's client that CSRF protection is off; ``GET /api/health``;
- anything else: 404, logged in :attr:`PrefectStandIn.unexpected` so a test sees a call it did not plan for.

The replies are Prefect's own response models dumped to JSON, so Prefect's client always validates them. Knobs:
:attr:`PrefectStandIn.mode` (``ok``, ``fail``: 500 on every API call, ``hang``: never answer until the mode
changes) and :meth:`PrefectStandIn.stop` / :meth:`PrefectStandIn.start` (refused connections while stopped).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Literal

import uvicorn
from prefect.client.schemas.objects import FlowRun, State, StateType
from prefect.client.schemas.responses import DeploymentResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.web_server import free_port

__all__ = ["Mode", "PrefectStandIn", "prefect_standin"]

Mode = Literal["ok", "fail", "hang"]
"""``ok``: answer; ``fail``: 500 on every API call; ``hang``: hold every API call until the mode changes."""


class PrefectStandIn:
    """The stand-in API's state (runs per idempotency key, knobs) and its server; see the module docstring."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.mode: Mode = "ok"
        self.runs: dict[str, str] = {}
        """Idempotency key -> the id of the one run created for it."""
        self.created: Counter[str] = Counter()
        """Idempotency key -> how many runs were created for it (more than 1 would be a double run)."""
        self.calls: Counter[str] = Counter()
        """Route name -> calls answered (``deployment``, ``create_flow_run``, ``csrf``, ``health``)."""
        self.unexpected: list[str] = []
        """``METHOD path`` of every call no route expected."""
        self._lock = threading.Lock()
        self._flow_id = uuid.uuid4()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.app = Starlette(
            routes=[
                Route("/api/deployments/name/{flow}/{deployment}", self._deployment, methods=["GET"]),
                Route("/api/deployments/{id}/create_flow_run", self._create_flow_run, methods=["POST"]),
                Route("/api/csrf-token", self._csrf, methods=["GET"]),
                Route("/api/health", self._health, methods=["GET"]),
                Route("/{path:path}", self._other, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
            ]
        )

    @property
    def api_url(self) -> str:
        """The value for ``PREFECT_API_URL``."""
        return f"http://127.0.0.1:{self.port}/api"

    def reset(self) -> None:
        """Forget every run and call, and answer again (``ok``)."""
        with self._lock:
            self.mode = "ok"
            self.runs.clear()
            self.created.clear()
            self.calls.clear()
            self.unexpected.clear()

    async def _gate(self) -> Response | None:
        """Hold the call while hanging; a 500 while failing; ``None`` to answer."""
        while self.mode == "hang":
            await asyncio.sleep(0.05)
        if self.mode == "fail":
            return JSONResponse({"detail": "the stand-in fails on purpose"}, status_code=500)
        return None

    async def _deployment(self, request: Request) -> Response:
        if (refused := await self._gate()) is not None:
            return refused
        self.calls["deployment"] += 1
        name = request.path_params["deployment"]
        found = DeploymentResponse(id=uuid.uuid5(self._flow_id, name), name=name, flow_id=self._flow_id, labels={})
        return JSONResponse(found.model_dump(mode="json"))

    async def _create_flow_run(self, request: Request) -> Response:
        body = await request.json()  # read first: a run held by ``hang`` is created when let go, as a slow Prefect would
        if (refused := await self._gate()) is not None:
            return refused
        key = body.get("idempotency_key") or uuid.uuid4().hex
        with self._lock:
            self.calls["create_flow_run"] += 1
            if key not in self.runs:
                self.runs[key] = str(uuid.uuid4())
                self.created[key] += 1
            run_id = self.runs[key]
        run = FlowRun(
            id=uuid.UUID(run_id),
            flow_id=self._flow_id,
            deployment_id=uuid.UUID(request.path_params["id"]),
            parameters=body.get("parameters") or {},
            tags=body.get("tags") or [],
            idempotency_key=key,
            state=State(type=StateType.SCHEDULED, name="Scheduled"),
        )
        return JSONResponse(run.model_dump(mode="json"), status_code=201)

    async def _csrf(self, request: Request) -> Response:
        self.calls["csrf"] += 1
        return JSONResponse({"detail": "CSRF protection is disabled."}, status_code=422)

    async def _health(self, request: Request) -> Response:
        self.calls["health"] += 1
        return JSONResponse(True)

    async def _other(self, request: Request) -> Response:
        with self._lock:
            self.unexpected.append(f"{request.method} {request.url.path}")
        return JSONResponse({"detail": "not in the stand-in"}, status_code=404)

    def start(self, *, startup_timeout: float = 30.0) -> None:
        """Serve on :attr:`port` (the same port again after :meth:`stop`)."""
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name=f"prefect-standin-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + startup_timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the stand-in Prefect API did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop serving: connections are refused until :meth:`start`. Held (hanging) calls are let go first."""
        if self._server is None or self._thread is None:
            return
        if self.mode == "hang":
            self.mode = "ok"
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self._server = self._thread = None

    def doubled(self) -> dict[str, int]:
        """Idempotency keys that got more than one run (empty when every key ran exactly once)."""
        return {key: count for key, count in self.created.items() if count > 1}


@contextlib.contextmanager
def prefect_standin() -> Iterator[PrefectStandIn]:
    """A started stand-in Prefect API, stopped when the block ends."""
    standin = PrefectStandIn()
    standin.start()
    try:
        yield standin
    finally:
        standin.stop()
