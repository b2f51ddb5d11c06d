"""One process runs an L2MAC thread at a time: the thread's claim, taken by every node that touches the store.

Two processes running one thread would both read the file manifest, each add a version and write the manifest
back: the second write would drop the first one's version. So each node of the control unit runs under
:func:`claimed`: it holds the thread's claim (or takes it over from an owner that is gone) before its body runs,
and releases it when its body fails; ``l2mac.finish`` releases it when the run is done. The rules (who owns, when
an owner is gone, how a takeover races) are the storage contract's, in :mod:`mnemoflow.nodes.l2mac.model`; they are
the claims with a lease of :mod:`mnemoflow.nodes.leases`, which G-Memory's milestones share.

A run refused here raises ``ConflictError`` naming the thread and the owner, before it calls the model or writes.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel

from mnemoflow.errors import ConflictError, MnemoflowError
from mnemoflow.memory.records import NodeRecord
from mnemoflow.nodes import leases
from mnemoflow.nodes.context import RunContext
from mnemoflow.nodes.l2mac.model import CLAIM, claim_id
from mnemoflow.nodes.leases import Owner

__all__ = ["LEASE_S", "RENEW_S", "claim_thread", "claimed", "release_thread"]

LEASE_S = 900.0
"""Seconds an owner that cannot be seen dead (on another host, or another run of this process) keeps the claim
without renewing it: longer than the longest node of a live run under the graph's defaults (one model call, or one
turn's tool calls and checks, each bounded by its own time limit)."""
RENEW_S = LEASE_S / 10
"""How stale ``renewed_at`` may get before an owner's node writes it again (one small write, not one per node)."""

S = TypeVar("S", bound=BaseModel)
C = TypeVar("C", bound=BaseModel)


async def claim_thread(context: RunContext, *, now: float | None = None) -> NodeRecord:
    """Hold the thread's claim for ``context``'s run: renew it if held, take it if free; the claim record.

    Raises:
        ConflictError: another run holds the thread and is alive, or took it over at the same moment.
    """
    store, namespace, thread_id, me = context.store, context.namespace, context.thread_id, Owner.of(context)
    now = time.time() if now is None else now
    generation_id = functools.partial(claim_id, namespace, thread_id)
    current = await leases.latest(store, namespace, generation_id)
    if current is not None and leases.holds(current, me):
        return await leases.renew(store, current, now, after=RENEW_S)
    why = "" if current is None else leases.gone(current, me, now, LEASE_S)
    if current is not None and why is None:
        raise ConflictError(
            f"l2mac: thread {thread_id!r} is being run by {Owner.from_record(current).describe()}; one process runs a "
            "thread at a time: wait for it to finish (or stop it), then resume the thread"
        )
    record = leases.next_claim(
        current, me, now, why or "", kind=CLAIM, namespace=namespace, generation_id=generation_id, text=thread_id,
        properties={"thread_id": thread_id},
    )  # fmt: skip
    try:
        await store.upsert_nodes([record], new=[record.id])
    except ConflictError as exc:
        raise ConflictError(
            f"l2mac: thread {thread_id!r} was claimed by another run at the same moment (generation "
            f"{record.properties['generation']}); one process runs a thread at a time"
        ) from exc
    if took_over := record.properties["took_over"]:
        context.log.warning("l2mac.claim_taken_over", generation=record.properties["generation"], previous=took_over)
    return record


async def release_thread(context: RunContext) -> None:
    """Let the thread go, if this run holds it: the next run claims it at once."""
    current = await leases.latest(
        context.store, context.namespace, functools.partial(claim_id, context.namespace, context.thread_id)
    )
    if current is not None and leases.holds(current, Owner.of(context)):
        await leases.release(context.store, current)


NodeBody = Callable[[S, C, RunContext], Awaitable[dict[str, Any]]]


def claimed(body: NodeBody[S, C]) -> NodeBody[S, C]:
    """The node ``body`` run holding the thread's claim; a failure of the body releases it (the run has stopped)."""

    @functools.wraps(body)
    async def run(state: S, config: C, context: RunContext) -> dict[str, Any]:
        await claim_thread(context)
        try:
            return await body(state, config, context)
        except BaseException:
            with contextlib.suppress(MnemoflowError):
                await release_thread(context)
            raise

    return run
