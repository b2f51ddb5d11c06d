"""G-Memory's periodic work: a revision or a merge every so many recorded tasks, run once, and again if abandoned.

Each multiple ``n`` of ``every`` that the namespace's query count reaches is a milestone ``<prefix>-<n>``. A task
that reaches one not yet done takes its claim (:mod:`mnemoflow.nodes.leases`: the next ``GMilestoneClaim``
generation written as new), marks the ``GMilestone`` running, runs the work while a background task renews the
claim every :data:`RENEW_S`, files the report on the milestone (``done``) and releases the claim.

The claim is what makes this exact across processes: of tasks taking a milestone at once exactly one wins (the
others step aside); a milestone whose owner is alive is left alone; one whose owner is gone (the work failed and
released it, the process died, or it stopped renewing for :data:`LEASE_S`) is taken over and run again by the next
task that reaches it; a done one never runs again. A process killed mid-work leaves the work's records half
written; the work's writes have stable ids (the milestone's number in them), so the re-run rewrites them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import partial
from typing import Any

from mnemoflow.errors import ConflictError, MnemoflowError
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import NodeRecord
from mnemoflow.nodes import leases
from mnemoflow.nodes.context import RunContext
from mnemoflow.nodes.gmemory.model import MILESTONE, MILESTONE_CLAIM, QUERY, milestone_claim_id, milestone_id
from mnemoflow.nodes.leases import Owner

__all__ = ["LEASE_S", "RENEW_S", "due", "run_due", "take"]

LEASE_S = 300.0
"""Seconds a milestone's owner that cannot be seen dead (on another host, or another run of this process) keeps it
without renewing: ten renewals missed."""
RENEW_S = LEASE_S / 10
"""How often a running milestone's owner renews its claim (a background task, since one revision makes many model
calls)."""


async def due(store: GraphStore, namespace: str, prefix: str, every: int) -> list[int]:
    """The multiples of ``every`` the namespace's query count has reached whose milestone is not done."""
    count = await store.count_nodes(namespace, QUERY)
    reached = list(range(every, count + 1, every))
    found = await store.get_nodes(namespace, [milestone_id(namespace, f"{prefix}-{n}") for n in reached]) if reached else []
    return [
        n
        for n, milestone in zip(reached, found, strict=True)
        if milestone is None or milestone.properties.get("status") != "done"
    ]


async def take(context: RunContext, name: str, *, now: float | None = None) -> NodeRecord | None:
    """Take milestone ``name``'s claim for ``context``'s run: the claim record, or None when its owner is alive or
    another task took it at the same moment."""
    store, namespace, me = context.store, context.namespace, Owner.of(context)
    now = time.time() if now is None else now
    generation_id = partial(milestone_claim_id, namespace, name)
    current = await leases.latest(store, namespace, generation_id)
    why = "" if current is None else leases.gone(current, me, now, LEASE_S)
    if why is None:
        return None
    record = leases.next_claim(
        current, me, now, why, kind=MILESTONE_CLAIM, namespace=namespace, generation_id=generation_id, text=name,
        properties={"milestone": name},
    )  # fmt: skip
    try:
        await store.upsert_nodes([record], new=[record.id])
    except ConflictError:
        return None
    if took_over := record.properties["took_over"]:
        context.log.warning(
            "gmemory.milestone_taken_over", milestone=name, generation=record.properties["generation"], previous=took_over
        )
    return record


def _milestone(namespace: str, name: str, claim: NodeRecord, status: str, **extra: Any) -> NodeRecord:
    """The ``GMilestone`` record of ``name`` as ``claim``'s owner sees it."""
    p = claim.properties
    properties = {
        "name": name,
        "status": status,
        "generation": p["generation"],
        "owner": Owner.from_record(claim).describe(),
        "since": p["claimed_at"],
        **extra,
    }
    return NodeRecord(id=milestone_id(namespace, name), namespace=namespace, kind=MILESTONE, properties=properties)


@contextlib.asynccontextmanager
async def _renewing(context: RunContext, claim: NodeRecord) -> AsyncIterator[None]:
    """Renew ``claim`` every :data:`RENEW_S` while the body runs. A renewal that fails is logged and tried again at
    the next interval: it must not fail the work (a lease missed ten times over is lost, which is the point)."""

    async def renew() -> None:
        record = claim
        while True:
            await asyncio.sleep(RENEW_S)
            try:
                record = await leases.renew(context.store, record, time.time())
            except Exception as exc:  # a background task has no caller to raise to: log it, the next renewal retries
                context.log.warning("gmemory.milestone_renew_failed", milestone=claim.properties["milestone"], error=str(exc))

    renewing = asyncio.create_task(renew())
    try:
        yield
    finally:
        renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewing


async def run_due(
    context: RunContext,
    prefix: str,
    every: int,
    work: Callable[[int], Awaitable[dict[str, Any]]],
    kept: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run ``work(n)`` for every due milestone ``<prefix>-<n>`` this task takes; each report (its ``kept`` keys)
    is saved on its milestone. Returns the reports by milestone name.

    A failing ``work`` releases the milestone (the next task that reaches it runs it again) and raises."""
    store, namespace = context.store, context.namespace
    reports: dict[str, Any] = {}
    for n in await due(store, namespace, prefix, every):
        name = f"{prefix}-{n}"
        claim = await take(context, name)
        if claim is None:
            continue
        [milestone] = await store.get_nodes(namespace, [milestone_id(namespace, name)])
        if milestone is not None and milestone.properties.get("status") == "done":  # finished since it was found due
            await leases.release(store, claim)
            continue
        await store.upsert_nodes([_milestone(namespace, name, claim, "running")])
        try:
            async with _renewing(context, claim):
                reports[name] = report = await work(n)
        except BaseException:
            with contextlib.suppress(MnemoflowError):
                await leases.release(store, claim)
            raise
        kept_report = {k: v for k, v in report.items() if kept is None or k in kept}
        await store.upsert_nodes([_milestone(namespace, name, claim, "done", report=kept_report, finished=time.time())])
        await leases.release(store, claim)
    return reports
