"""Settling the records of runs whose process died, so that no run looks alive for ever.

A run that keeps a live record (the runner's ``live_interval``) writes it ``running`` at least every
:data:`LIVE_HEARTBEAT_S`; a process killed mid-run (SIGKILL, a crash, a lost machine) leaves it ``running``. Such a
record is *settled*: rewritten ``interrupted`` with ``settled_at`` (when), ``settled_reason`` (why its run was judged
dead) and, once a later run takes its thread over, ``resumed_by`` (that run's id, empty until then; the later run's
record lists the runs it took over under ``resumes``). Everything the dead run recorded stays: its steps, input, model usage and
``recorded_at``, the time of its last word.

Two things settle records:

- a run on a named thread (the runner, before its first step: :func:`settle_thread`) settles the thread's
  ``running`` records whose run is dead, and links the thread's ``interrupted`` runs not yet linked (a Ctrl-C, or
  one maintenance settled) to itself;
- maintenance (:func:`settle_silent_runs`, run by the ``maintain_memory`` flow) settles every ``running`` record
  silent for longer than :data:`STALLED_AFTER_S`, in every namespace.

When a run is dead: its record names the process that wrote it (``process``: host, machine, pid). On the same
machine the answer is certain: the pid runs no process (or only a zombie) any more. Elsewhere silence is the only
sign: no write for :data:`STALLED_AFTER_S`, four missed heartbeats. A process that was only silent (frozen, cut off
from the store) and writes again overwrites the settled record with its own, so a misjudged run is back to
``running`` within one heartbeat; the settle reads the records right before it writes them, but the store has no
conditional update, so a run silent for a minute that writes its final record in those milliseconds can be left
shown ``interrupted`` (its memory and checkpoints are not touched either way).
"""

from __future__ import annotations

import functools
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import NodeRecord

__all__ = [
    "LIVE_HEARTBEAT_S",
    "RUN_KIND",
    "SETTLE_PAGE",
    "STALLED_AFTER_S",
    "process_gone",
    "process_identity",
    "settle_silent_runs",
    "settle_thread",
]

LIVE_HEARTBEAT_S = 15.0
"""A live run's record is written at least this often (``recorded_at``), even while one step runs long, so a
watcher can tell a run whose process died (its record stops changing) from a slow one."""

STALLED_AFTER_S = 4 * LIVE_HEARTBEAT_S
"""A ``running`` record older than this belongs to a run whose process died (the UI shows it as stalled until it is
settled); a younger one may still be going in another process, so its thread is not resumed under it."""

RUN_KIND = "Run"
"""The kind of the record every run writes (its trace, status, input and outputs)."""

SETTLE_PAGE = 200
"""Run records read per store call while looking for ones to settle (they are read whole, trace included)."""


@functools.cache
def _machine() -> str:
    """This machine and process namespace (Linux boot id and pid namespace): two processes with the same value see
    the same pids. Empty where neither can be read, and then no process is judged by its pid."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return ""


def process_identity() -> dict[str, Any]:
    """What a run's record says of the process writing it (``process``): ``host``, ``machine`` and ``pid``, enough
    for another process on the same machine to tell whether it still runs (:func:`process_gone`)."""
    return {"host": socket.gethostname(), "machine": _machine(), "pid": os.getpid()}


def _zombie(pid: int) -> bool:
    """Whether ``pid`` has ended and waits only for its parent to read its exit status."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def process_gone(process: object) -> bool:
    """Whether the process a record names (:func:`process_identity`) has certainly ended: it ran on this machine and
    pid namespace, is not this process, and its pid runs nothing now but perhaps a zombie. Anything unsure (another
    machine, a pid taken by a new process, no identity) is not gone: silence decides then."""
    if not isinstance(process, Mapping):
        return False
    pid, here = process.get("pid"), process_identity()
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or pid == here["pid"] or not here["machine"]:
        return False
    if (process.get("host"), process.get("machine")) != (here["host"], here["machine"]):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return _zombie(pid)


def _silence(properties: Mapping[str, Any], now: float) -> float | None:
    """Seconds since the record was last written, when it says."""
    recorded_at = properties.get("recorded_at")
    if isinstance(recorded_at, int | float) and not isinstance(recorded_at, bool):
        return now - float(recorded_at)
    return None


def _settled(node: NodeRecord, reason: str, now: float, resumed_by: str) -> NodeRecord:
    """The record rewritten ``interrupted``: why and when, by whom it was resumed ("" for nobody yet); all else as the
    run left it."""
    properties = {**node.properties, "status": "interrupted", "settled_at": round(now, 6), "settled_reason": reason}
    properties["resumed_by"] = resumed_by
    graph = str(properties.get("graph", ""))
    return NodeRecord(id=node.id, namespace=node.namespace, kind=node.kind, text=f"{graph} interrupted", properties=properties)


def _dead_because(properties: Mapping[str, Any], now: float, silent_after: float) -> str | None:
    """Why a ``running`` record's run is dead (its process gone, or silent too long); None while it may be alive."""
    process = properties.get("process")
    if process_gone(process):
        assert isinstance(process, Mapping)
        return f"its process {process.get('pid')} on {process.get('host')} is gone"
    silence = _silence(properties, now)
    if silence is not None and silence > silent_after:
        return f"silent for {silence:.0f} s"
    return None


async def settle_thread(
    store: GraphStore, namespace: str, thread_id: str, *, resumed_by: str, silent_after: float = STALLED_AFTER_S
) -> list[str]:
    """Settle the runs of ``thread_id`` that run ``resumed_by`` takes over: its ``running`` records whose run is dead
    (process gone, or silent for ``silent_after`` s) become ``interrupted``; those and its ``interrupted`` records
    not yet linked get ``resumed_by``. ``resumed_by``'s own record is left alone (a server writes it before the run
    starts). Returns the ids of the runs linked, for the new run's ``resumes``. Raises what the store raises."""
    now = time.time()
    where: dict[str, str] = {"thread_id": thread_id}
    running = await store.list_nodes(namespace, kind=RUN_KIND, where={**where, "status": "running"}, limit=SETTLE_PAGE)
    unlinked = {**where, "status": "interrupted", "resumed_by": ""}  # linked ones are not read again, however many
    stopped = await store.list_nodes(namespace, kind=RUN_KIND, where=unlinked, limit=SETTLE_PAGE)
    settled: list[NodeRecord] = []
    for node in running:
        reason = _dead_because(node.properties, now, silent_after)
        if reason is not None and node.properties.get("run_id") != resumed_by:
            settled.append(_settled(node, reason, now, resumed_by))
    for node in stopped:
        if node.properties.get("run_id") != resumed_by:
            reason = str(node.properties.get("settled_reason") or "cut off by a cancel or Ctrl-C")
            settled_at = node.properties.get("settled_at")
            when = float(settled_at) if isinstance(settled_at, int | float) and not isinstance(settled_at, bool) else now
            settled.append(_settled(node, reason, when, resumed_by))
    if settled:
        await store.upsert_nodes(settled)
    return sorted(str(node.properties.get("run_id", "")) for node in settled)


async def settle_silent_runs(store: GraphStore, *, silent_after: float = STALLED_AFTER_S) -> int:
    """Settle every ``running`` run record, in every namespace, not written for more than ``silent_after`` seconds
    (reason ``silent for N s``, ``resumed_by`` empty: the next run on the thread fills it in): the runs whose process died and whose thread nobody resumed.
    Fresher ``running`` records are left alone. Returns how many were settled; each namespace's are written in one
    transaction. Raises what the store raises."""
    total = 0
    for summary in await store.namespaces():
        now, offset, silent = time.time(), 0, []
        while True:
            page = await store.list_nodes(
                summary.name, kind=RUN_KIND, where={"status": "running"}, limit=SETTLE_PAGE, offset=offset
            )
            for node in page:
                silence = _silence(node.properties, now)
                if silence is not None and silence > silent_after:
                    silent.append(_settled(node, f"silent for {silence:.0f} s", now, ""))
            if len(page) < SETTLE_PAGE:
                break
            offset += len(page)
        if silent:
            await store.upsert_nodes(silent)
        total += len(silent)
    return total
