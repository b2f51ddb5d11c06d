"""``POST /hooks/{name}``: verify a delivery, remember it, and create a flow run of the hook's deployment.

Answers: 202 with the run id when a run was created; 200 for a redelivery (with the first run's id), an
ignored event, a Slack challenge or a replay of a signature already seen; 404 unknown hook, or one disabled
because its secret is unset (the app does not serve it); 401 bad, missing or stale signature; 408 body not sent
in time; 413 body too large; 415 wrong content type; 422 a payload the mapping cannot use; 503 (with
Retry-After) when Prefect or the store cannot take it now, or Prefect did not answer within
``MNEMOFLOW_HOOKS_PREFECT_WAIT_S`` — the delivery is kept, so the sender's retry can succeed.

A delivery is recorded ``pending`` (its attempt counted) before Prefect is asked, then with its outcome: a server
stopped between the two leaves it ``pending``, and its redelivery is processed again as attempt + 1.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from mnemoflow.errors import StoreError
from mnemoflow.flows.server.hooks.config import HookSpec
from mnemoflow.flows.server.hooks.deliveries import FINAL_OUTCOMES, DeliveryLog, Outcome
from mnemoflow.flows.server.hooks.mapping import accepts, map_parameters
from mnemoflow.flows.server.hooks.providers import Delivery, HookRejected, verify
from mnemoflow.flows.server.hooks.trigger import PrefectTrigger, TriggerRefused, TriggerUnavailable
from mnemoflow.flows.server.state import ServerState, server_state
from mnemoflow.logging import get_logger

__all__ = ["RETRY_AFTER_S", "router"]

RETRY_AFTER_S = 30
"""Seconds a sender is asked to wait before retrying a delivery answered 503."""

router = APIRouter(tags=["webhooks"])
_log = get_logger("mnemoflow.hooks")


def _reply(code: int, hook: str, **body: Any) -> JSONResponse:
    headers = {"Retry-After": str(RETRY_AFTER_S)} if code == 503 else None
    return JSONResponse({"hook": hook, **body}, status_code=code, headers=headers)


ANSWERS: dict[int | str, dict[str, str]] = {
    200: {"description": "a redelivery or replay (the first run's id), an ignored event, or a Slack challenge"},
    400: {"description": "the client disconnected before sending the whole body"},
    408: {"description": "the body was not sent within MNEMOFLOW_UI_BODY_TIMEOUT_S"},
    401: {"description": "bad, missing or stale signature"},
    404: {"description": "unknown hook, or one disabled because its secret is unset"},
    413: {"description": "body too large"},
    415: {"description": "wrong content type"},
    422: {"description": "a payload the mapping cannot use"},
    503: {"description": "Prefect or the store cannot take it now; retry after Retry-After seconds"},
}


@router.post("/hooks/{name}", status_code=202, responses=ANSWERS)
async def receive(name: str, request: Request, state: Annotated[ServerState, Depends(server_state)]) -> JSONResponse:
    """Receive one delivery of the hook ``name``."""
    hook = state.hooks.get(name)
    if hook is None:  # the hooks' names are not for unauthenticated callers to list
        return _reply(404, name, error="unknown hook")
    try:
        body = await request.body()  # bounded in size and time by the app's BodyLimits (413, 408)
    except ClientDisconnect:
        return _reply(400, name, error="the client disconnected before sending the whole body")
    try:
        delivery = verify(
            hook.provider,
            request.headers,
            body,
            state.secrets[name],
            now=time.time(),
            tolerance_s=state.settings.hooks.tolerance_s,
        )
    except HookRejected as exc:
        _log.info("hook.rejected", hook=name, status=exc.status, reason=exc.reason)
        return _reply(exc.status, name, error=exc.reason)
    if delivery.challenge is not None:
        return JSONResponse({"challenge": delivery.challenge})
    # one wait for the whole delivery: a copy queued behind its original, then Prefect, never hold it longer
    deadline = asyncio.get_running_loop().time() + state.settings.hooks.prefect_wait_s
    async with AsyncExitStack() as handling:
        try:
            async with asyncio.timeout_at(deadline):
                await handling.enter_async_context(state.deliveries.handling(f"{name}:{delivery.delivery_id}", delivery.signature))
        except TimeoutError:  # its original is still waiting for Prefect: it will record the outcome
            error = "a copy of this delivery is being handled and Prefect has not answered it yet; retry later"
            return _reply(503, name, delivery=delivery.delivery_id, error=error, retry_after_s=RETRY_AFTER_S)
        try:
            return await _handle(
                hook,
                delivery,
                state.deliveries,
                state.trigger,
                max_parameter_bytes=state.settings.hooks.max_body_bytes,
                deadline=deadline,
            )
        except StoreError as exc:
            _log.warning("hook.store_unavailable", hook=name, delivery=delivery.delivery_id, error=str(exc))
            return _reply(503, name, error=f"the memory store cannot record the delivery now: {exc}", retry_after_s=RETRY_AFTER_S)


async def _handle(
    hook: HookSpec, delivery: Delivery, log: DeliveryLog, trigger: PrefectTrigger, *, max_parameter_bytes: int, deadline: float
) -> JSONResponse:
    name, delivery_id = hook.name, delivery.delivery_id
    past = await log.find(name, delivery_id)
    if past is not None and past.outcome in FINAL_OUTCOMES:
        return _reply(
            200, name, delivery=delivery_id, status=past.outcome, duplicate=True, flow_run_id=past.flow_run_id, reason=past.reason
        )
    first = await log.first_signed(delivery.signature)
    if first is not None and first != (name, delivery_id):  # whatever became of it: this copy must not run
        earlier = await log.find(*first)
        _log.warning("hook.replay", hook=name, delivery=delivery_id, first_hook=first[0], first_delivery=first[1])
        return _reply(
            200,
            name,
            delivery=delivery_id,
            status="replay",
            duplicate=True,
            flow_run_id=earlier.flow_run_id if earlier is not None else None,
            reason=f"this signature was received before (delivery {first[1]!r} of hook {first[0]!r}): a replay",
        )
    attempts = 1 if past is None else past.attempts + 1

    async def remember(outcome: Outcome, reason: str | None = None, flow_run_id: str | None = None) -> None:
        await log.remember(
            name,
            delivery_id,
            event=delivery.event,
            outcome=outcome,
            deployment=hook.deployment,
            attempts=attempts,
            signature=delivery.signature if first is None else None,  # the first delivery keeps its signature
            reason=reason,
            flow_run_id=flow_run_id,
        )
        _log.info(
            "hook.delivery",
            hook=name,
            delivery=delivery_id,
            hook_event=delivery.event,
            outcome=outcome,
            reason=reason,
            flow_run_id=flow_run_id,
        )

    try:
        ignored = accepts(hook, delivery)
        if ignored is not None:
            await remember("ignored", ignored)
            return _reply(200, name, delivery=delivery_id, status="ignored", reason=ignored)
        parameters = map_parameters(hook, delivery.payload, max_bytes=max_parameter_bytes)
        await remember("pending")  # the attempt is on record before Prefect is asked: a crash in the call shows
        flow_run_id = await trigger.create_flow_run(
            hook.deployment,
            parameters,
            idempotency_key=f"mnemoflow-hook:{name}:{delivery_id}",
            tags=["webhook", f"hook:{name}"],
            deadline=deadline,
        )
    except HookRejected as exc:
        await remember("rejected", exc.reason)
        return _reply(exc.status, name, delivery=delivery_id, error=exc.reason)
    except TriggerRefused as exc:
        await remember("rejected", str(exc))
        return _reply(422, name, delivery=delivery_id, error=str(exc))
    except TriggerUnavailable as exc:
        await remember("unavailable", str(exc))
        return _reply(503, name, delivery=delivery_id, error=str(exc), retry_after_s=RETRY_AFTER_S)
    await remember("triggered", flow_run_id=flow_run_id)
    return _reply(202, name, delivery=delivery_id, status="triggered", deployment=hook.deployment, flow_run_id=flow_run_id)
