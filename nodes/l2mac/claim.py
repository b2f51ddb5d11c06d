"""One process runs an L2MAC thread at a time: the thread's claim, taken by every node that touches the store.

Two processes running one thread would both read the file manifest, each add a version and write the manifest
back: the second write would drop the first one's version. So each node of the control unit runs under
:func:`claimed`: it holds the thread's claim (or takes it over from an owner that is gone) before its body runs,
and releases it when its body fails; ``l2mac.finish`` releases it when the run is done. The rules (who owns, when
an owner is gone, how a takeover races) are the storage contract's, in :mod:`mnemoflow.nodes.l2mac.model`.

A run refused here raises ``ConflictError`` naming the thread and the owner, before it calls the model or writes.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from mnemoflow.errors import ConflictError, MnemoflowError
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import NodeRecord
from mnemoflow.nodes.context import RunContext
from mnemoflow.nodes.l2mac.model import CLAIM, claim_id

__all__ = ["LEASE_S", "Owner", "claim_thread", "claimed", "process_started", "release_thread"]

LEASE_S = 900.0
"""Seconds an owner that cannot be seen dead (on another host, or another run of this process) keeps the claim
without renewing it: longer than the longest node of a live run under the graph's defaults (one model call, or one
turn's tool calls and checks, each bounded by its own time limit)."""
RENEW_S = LEASE_S / 10
"""How stale ``renewed_at`` may get before an owner's node writes it again (one small write, not one per node)."""
_BATCH = 64
"""Generations read per store call when looking for the latest."""

S = TypeVar("S", bound=BaseModel)
C = TypeVar("C", bound=BaseModel)


def process_started(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, from ``/proc``), or None where the platform hides it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None  # field 22 of stat; the first after the name is field 3


@dataclass(frozen=True)
class Owner:
    """A run in a process: what a claim records of its owner."""

    run_id: str
    host: str
    pid: int
    started: str | None
    """The process's start time where the platform tells it: a pid reused by a later process is not the owner."""

    @classmethod
    def of(cls, context: RunContext) -> Owner:
        """This process running ``context``'s run."""
        pid = os.getpid()
        return cls(context.run_id, socket.gethostname(), pid, process_started(pid))

    @classmethod
    def from_record(cls, record: NodeRecord) -> Owner:
        p = record.properties
        return cls(p["run_id"], p["host"], p["pid"], p.get("started"))

    def describe(self) -> str:
        return f"run {self.run_id} (process {self.pid} on {self.host})"


def _gone(record: NodeRecord, me: Owner, now: float) -> str | None:
    """Why the claim ``record`` is free for ``me`` to take over (released, dead owner, silent owner), or None."""
    owner, p = Owner.from_record(record), record.properties
    if p["released"]:
        return "released"
    if owner.host == me.host and owner.pid != me.pid:
        try:
            os.kill(owner.pid, 0)
        except ProcessLookupError:
            return f"its process {owner.pid} is gone"
        except PermissionError:
            pass  # alive, run by another user
        started = process_started(owner.pid)
        if owner.started is not None and started is not None:  # the process is known: alive for sure, or gone
            return None if started == owner.started else f"its process {owner.pid} is gone (the pid names another now)"
    if now - float(p["renewed_at"]) >= LEASE_S:
        return f"it has not renewed its claim for {now - float(p['renewed_at']):.0f} s (lease {LEASE_S:g} s)"
    return None


async def _latest(store: GraphStore, namespace: str, thread_id: str) -> NodeRecord | None:
    """The thread's claim of the highest generation, or None when it has never been claimed."""
    latest, start = None, 1
    while True:
        found = await store.get_nodes(namespace, [claim_id(namespace, thread_id, n) for n in range(start, start + _BATCH)])
        for record in found:
            if record is None:
                return latest
            latest = record
        start += _BATCH


def _record(namespace: str, thread_id: str, generation: int, me: Owner, now: float, took_over: str) -> NodeRecord:
    return NodeRecord(
        id=claim_id(namespace, thread_id, generation),
        namespace=namespace,
        kind=CLAIM,
        properties={
            "thread_id": thread_id,
            "generation": generation,
            "run_id": me.run_id,
            "host": me.host,
            "pid": me.pid,
            "started": me.started,
            "claimed_at": now,
            "renewed_at": now,
            "released": False,
            "took_over": took_over,
        },
        text=thread_id,
    )


async def claim_thread(context: RunContext, *, now: float | None = None) -> NodeRecord:
    """Hold the thread's claim for ``context``'s run: renew it if held, take it if free; the claim record.

    Raises:
        ConflictError: another run holds the thread and is alive, or took it over at the same moment.
    """
    store, namespace, thread_id, me = context.store, context.namespace, context.thread_id, Owner.of(context)
    now = time.time() if now is None else now
    current = await _latest(store, namespace, thread_id)
    if current is not None and Owner.from_record(current) == me and not current.properties["released"]:
        if now - float(current.properties["renewed_at"]) >= RENEW_S:
            current = current.model_copy(update={"properties": {**current.properties, "renewed_at": now}})
            await store.upsert_nodes([current])
        return current
    why = "" if current is None else _gone(current, me, now)
    if current is not None and why is None:
        raise ConflictError(
            f"l2mac: thread {thread_id!r} is being run by {Owner.from_record(current).describe()}; one process runs a "
            "thread at a time: wait for it to finish (or stop it), then resume the thread"
        )
    generation = 1 if current is None else int(current.properties["generation"]) + 1
    took_over = "" if current is None or why == "released" else f"{Owner.from_record(current).describe()}: {why}"
    record = _record(namespace, thread_id, generation, me, now, took_over)
    try:
        await store.upsert_nodes([record], new=[record.id])
    except ConflictError as exc:
        raise ConflictError(
            f"l2mac: thread {thread_id!r} was claimed by another run at the same moment (generation {generation}); "
            "one process runs a thread at a time"
        ) from exc
    if took_over:
        context.log.warning("l2mac.claim_taken_over", generation=generation, previous=took_over)
    return record


async def release_thread(context: RunContext) -> None:
    """Let the thread go, if this run holds it: the next run claims it at once."""
    current = await _latest(context.store, context.namespace, context.thread_id)
    if current is not None and Owner.from_record(current) == Owner.of(context) and not current.properties["released"]:
        released = {**current.properties, "released": True, "renewed_at": time.time()}
        await context.store.upsert_nodes([current.model_copy(update={"properties": released})])


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
