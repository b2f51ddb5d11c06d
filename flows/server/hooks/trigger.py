"""Create a flow run of a Prefect deployment through the Prefect API (``PREFECT_API_URL``).

Prefect's own webhooks exist only in Prefect Cloud; the open-source server takes
``POST /deployments/{id}/create_flow_run``, which the Prefect client calls here. The idempotency key makes
a retried trigger return the run the first one created, so a delivery never starts two runs.

:class:`PrefectTrigger` keeps one Prefect client for the app's life and the deployments' ids for a short while:
opening a client and looking the deployment up on every delivery cost most of a delivery's CPU. Every call is
bounded by a wait; past it the call is :class:`TriggerUnavailable`, so a sender is answered 503 at once and
redelivers, instead of being held through the client's own retries while Prefect is down.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import httpx
from prefect.client.orchestration import PrefectClient, get_client
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL

from mnemoflow.errors import MnemoflowError
from mnemoflow.redaction import redact_urls

__all__ = ["DEPLOYMENT_TTL_S", "PrefectTrigger", "TriggerRefused", "TriggerUnavailable", "create_flow_run"]

DEPLOYMENT_TTL_S = 30.0
"""Seconds a deployment's id is reused before it is looked up again (a deployment deleted and re-created is
found under its new id after this; a run refused as not found drops the cached id at once)."""

ONE_SHOT_WAIT_S = 10.0
"""The wait of :func:`create_flow_run`, the one-call form without an app's trigger."""


class TriggerUnavailable(MnemoflowError):
    """Prefect cannot take the run now (unreachable, failing, or the deployment is not there yet): retry later."""

    code = "trigger-unavailable"


class TriggerRefused(MnemoflowError):
    """Prefect refused the run's parameters; retrying the same delivery will not help."""

    code = "trigger-refused"


def _api_url() -> str:
    return redact_urls(PREFECT_API_URL.value() or "(PREFECT_API_URL is not set)")


@dataclass
class _OpenClient:
    """A client and the calls using it, so a client retired after a failure is closed when its last call ends."""

    client: PrefectClient
    users: int = 0
    retired: bool = False


class PrefectTrigger:
    """Creates flow runs through one Prefect client shared by every delivery of the app (one event loop).

    The client is opened on first use, not when the app starts: a server without hooks, or started before Prefect,
    needs none, and the same path reopens it after a failure. A call that fails on the transport (refused, reset,
    no answer within the wait) retires the client: the next call opens a new one. A fresh client gives up sooner
    while Prefect refuses connections (Prefect's client retries a refused connection with backoff only once it has
    connected; a fresh one makes only the connection pool's three quick attempts), so only the first delivery after
    Prefect goes down waits out the bound.

    Prefect's client keeps its own retries (``PREFECT_CLIENT_MAX_RETRIES``, for 429/502/503 and dropped
    connections): one that fits in the wait can save a delivery from a 503, and none can outlast the wait.
    """

    def __init__(self, *, wait_s: float) -> None:
        self.wait_s = wait_s
        self._open: _OpenClient | None = None
        self._opening = asyncio.Lock()
        self._deployments: dict[str, tuple[UUID, float]] = {}
        self._lookups: dict[str, asyncio.Lock] = {}

    async def create_flow_run(
        self,
        deployment: str,
        parameters: dict[str, Any],
        *,
        idempotency_key: str,
        tags: list[str],
        deadline: float | None = None,
    ) -> str:
        """Create a flow run of ``deployment`` ("flow/deployment") and return its id, within ``wait_s`` seconds (or by
        ``deadline``, in the event loop's time, when the caller's wait began earlier); raises
        :class:`TriggerUnavailable` (retry later) or :class:`TriggerRefused` (retrying will not help)."""
        if not PREFECT_API_URL.value():
            raise TriggerUnavailable("PREFECT_API_URL is not set: point it at the Prefect server that holds the deployments")
        held = await self._lease()
        try:
            async with asyncio.timeout_at(asyncio.get_running_loop().time() + self.wait_s if deadline is None else deadline):
                return await self._create(held.client, deployment, parameters, idempotency_key, tags)
        except TimeoutError as exc:
            self._retire(held)
            raise TriggerUnavailable(
                f"Prefect did not answer within {self.wait_s:g} s (MNEMOFLOW_HOOKS_PREFECT_WAIT_S) at {_api_url()}: "
                "the delivery is kept, and a redelivery tries again"
            ) from exc
        except RecursionError as exc:  # before RuntimeError, its base
            raise TriggerRefused(f"the parameters of the run of {deployment!r} are nested too deeply to send") from exc
        except (httpx.TransportError, OSError, RuntimeError) as exc:
            self._retire(held)
            raise TriggerUnavailable(
                f"the Prefect API at {_api_url()} is unreachable: {type(exc).__name__}: {redact_urls(str(exc))}"
            ) from exc
        except ObjectNotFound as exc:
            raise TriggerUnavailable(
                f"deployment {deployment!r} is not on the Prefect server at {_api_url()}: deploy it (prefect deploy --all)"
            ) from exc
        except httpx.HTTPStatusError as exc:
            detail = redact_urls(exc.response.text[:500])
            if exc.response.status_code in (400, 409, 422):
                raise TriggerRefused(f"Prefect refused the run of {deployment!r}: {detail}") from exc
            raise TriggerUnavailable(f"Prefect answered {exc.response.status_code} for {deployment!r}: {detail}") from exc
        except Exception as exc:  # any other failure is a reply we cannot read (an HTML page, unexpected fields)
            raise TriggerUnavailable(
                f"the Prefect API at {_api_url()} gave a reply that could not be read: {type(exc).__name__}: {redact_urls(str(exc))[:500]}"
            ) from exc
        finally:
            await self._release(held)

    async def aclose(self) -> None:
        """Close the client (the app's shutdown); a later call would open a new one."""
        held = self._open
        if held is not None:
            self._retire(held)
            await self._release_idle(held)

    async def _create(
        self, client: PrefectClient, deployment: str, parameters: dict[str, Any], idempotency_key: str, tags: list[str]
    ) -> str:
        cached = self._cached(deployment)
        deployment_id = cached if cached is not None else await self._look_up(client, deployment)
        try:
            run = await client.create_flow_run_from_deployment(
                deployment_id, parameters=parameters, idempotency_key=idempotency_key, tags=tags
            )
        except ObjectNotFound:
            if cached is None:
                raise
            self._deployments.pop(deployment, None)  # deleted, perhaps re-created under a new id: look it up once more
            run = await client.create_flow_run_from_deployment(
                await self._look_up(client, deployment), parameters=parameters, idempotency_key=idempotency_key, tags=tags
            )
        return str(run.id)

    def _cached(self, deployment: str) -> UUID | None:
        found = self._deployments.get(deployment)
        return found[0] if found is not None and found[1] > time.monotonic() else None

    async def _look_up(self, client: PrefectClient, deployment: str) -> UUID:
        """The deployment's id; concurrent calls for one deployment wait for one lookup."""
        async with self._lookups.setdefault(deployment, asyncio.Lock()):
            cached = self._cached(deployment)
            if cached is not None:
                return cached
            found = await client.read_deployment_by_name(deployment)
            self._deployments[deployment] = (found.id, time.monotonic() + DEPLOYMENT_TTL_S)
            return found.id

    async def _lease(self) -> _OpenClient:
        async with self._opening:
            if self._open is None:
                client = get_client()
                await client.__aenter__()
                self._open = _OpenClient(client)
            self._open.users += 1
            return self._open

    def _retire(self, held: _OpenClient) -> None:
        held.retired = True
        if self._open is held:
            self._open = None

    async def _release(self, held: _OpenClient) -> None:
        held.users -= 1
        await self._release_idle(held)

    @staticmethod
    async def _release_idle(held: _OpenClient) -> None:
        if held.retired and held.users == 0:
            held.users = -1  # closed: never twice
            await held.client.__aexit__(None, None, None)


async def create_flow_run(deployment: str, parameters: dict[str, Any], *, idempotency_key: str, tags: list[str]) -> str:
    """Create one flow run with a client of its own, within :data:`ONE_SHOT_WAIT_S` (for a caller without the
    app's :class:`PrefectTrigger`)."""
    trigger = PrefectTrigger(wait_s=ONE_SHOT_WAIT_S)
    try:
        return await trigger.create_flow_run(deployment, parameters, idempotency_key=idempotency_key, tags=tags)
    finally:
        await trigger.aclose()
