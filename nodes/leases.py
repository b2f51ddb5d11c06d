"""Claims with a lease in the store: which run, in which process, holds a piece of work, and when another may take it.

Two processes cannot share an in-process lock, so the mechanisms that must not run one piece of work twice at once
(an L2MAC thread, a G-Memory milestone) claim it in the store. A claim is a chain of generations, each a record
written as new (``upsert_nodes(..., new=[id])``): of runs writing the same generation exactly one succeeds, so of
two takers exactly one wins and the other gets ``ConflictError``. The holder is the owner of the highest generation
stored; it keeps the claim while it has not released it and is not gone (:func:`gone`):

- released: the owner let it go (its work finished, or failed);
- dead: the owner ran on this host and its process is gone (no such pid, or a pid reused by a process started at
  another time);
- silent: the owner cannot be seen (another host, or another run of this very process) and has not renewed the
  claim (``renewed_at``) within the lease.

A claim record carries the caller's own properties and ``{generation, run_id, host, pid, started, claimed_at,
renewed_at, released, took_over}``, ``took_over`` naming the owner it replaced and why (empty for the first
generation and after a release). A renewal or a release rewrites the owner's own generation only, so an owner that
lost its claim while silent cannot overwrite its successor's.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import NodeRecord
from mnemoflow.nodes.context import RunContext

__all__ = ["Owner", "gone", "holds", "latest", "next_claim", "process_started", "release", "renew"]

_BATCH = 64
"""Generations read per store call when looking for the latest."""


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


def holds(record: NodeRecord | None, me: Owner) -> bool:
    """Whether ``me`` holds the claim whose latest generation is ``record``."""
    return record is not None and Owner.from_record(record) == me and not record.properties["released"]


def gone(record: NodeRecord, me: Owner, now: float, lease_s: float) -> str | None:
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
    if now - float(p["renewed_at"]) >= lease_s:
        return f"it has not renewed its claim for {now - float(p['renewed_at']):.0f} s (lease {lease_s:g} s)"
    return None


async def latest(store: GraphStore, namespace: str, generation_id: Callable[[int], str]) -> NodeRecord | None:
    """The claim of the highest generation (ids ``generation_id(1)``, ``(2)``...), or None when never claimed."""
    found, start = None, 1
    while True:
        records = await store.get_nodes(namespace, [generation_id(n) for n in range(start, start + _BATCH)])
        for record in records:
            if record is None:
                return found
            found = record
        start += _BATCH


def next_claim(
    current: NodeRecord | None,
    me: Owner,
    now: float,
    why: str,
    *,
    kind: str,
    namespace: str,
    generation_id: Callable[[int], str],
    text: str,
    properties: Mapping[str, Any],
) -> NodeRecord:
    """The generation after ``current`` (the first when None), owned by ``me``, to write as new: ``why`` is what
    :func:`gone` said of ``current``'s owner."""
    generation = 1 if current is None else int(current.properties["generation"]) + 1
    took_over = "" if current is None or why == "released" else f"{Owner.from_record(current).describe()}: {why}"
    return NodeRecord(
        id=generation_id(generation),
        namespace=namespace,
        kind=kind,
        properties={
            **properties,
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
        text=text,
    )


async def renew(store: GraphStore, record: NodeRecord, now: float, *, after: float = 0.0) -> NodeRecord:
    """The owner's claim ``record`` with ``renewed_at`` set to ``now``, written unless it is fresher than ``after``
    seconds (one small write per interval, not one per call)."""
    if now - float(record.properties["renewed_at"]) < after:
        return record
    renewed = record.model_copy(update={"properties": {**record.properties, "renewed_at": now}})
    await store.upsert_nodes([renewed])
    return renewed


async def release(store: GraphStore, record: NodeRecord) -> None:
    """Let the claim ``record`` (the owner's own generation) go: the next taker claims it at once."""
    released = {**record.properties, "released": True, "renewed_at": time.time()}
    await store.upsert_nodes([record.model_copy(update={"properties": released})])
