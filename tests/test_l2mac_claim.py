"""The per-thread claim of L2MAC on both stores: one run holds a thread; a live owner refuses the others; a released,
dead or silent owner is taken over, by exactly one of two runs racing for it.

Two real processes on one thread (the second refused, then a resume after the first was killed) are in
tests/test_l2mac.py's kill-and-resume test.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from types import SimpleNamespace
from typing import Any

import pytest
import structlog

from mnemoflow.errors import ConflictError
from mnemoflow.memory.paging import all_nodes
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.nodes.l2mac.claim import LEASE_S, RENEW_S, claim_thread, release_thread
from mnemoflow.nodes.leases import Owner, process_started

THREAD = "thread-1"


def context(store: GraphStore, namespace: str, run_id: str) -> Any:
    """What the claim reads of a node's run context: the store, namespace, thread, run id and logger."""
    return SimpleNamespace(store=store, namespace=namespace, thread_id=THREAD, run_id=run_id, log=structlog.get_logger())


async def claims(store: GraphStore, namespace: str) -> list[dict[str, Any]]:
    records = await all_nodes(store, namespace, "L2Claim")
    return sorted((record.properties for record in records), key=lambda claim: claim["generation"])


async def test_a_live_owner_keeps_the_thread_and_renews_it(store: GraphStore, namespace: str) -> None:
    mine, other = context(store, namespace, "run-a"), context(store, namespace, "run-b")
    first = await claim_thread(mine, now=1_000.0)
    assert first.properties == {
        "thread_id": THREAD, "generation": 1, "run_id": "run-a", "host": socket.gethostname(), "pid": os.getpid(),
        "started": Owner.of(mine).started, "claimed_at": 1_000.0, "renewed_at": 1_000.0, "released": False, "took_over": "",
    }  # fmt: skip
    assert (await claim_thread(mine, now=1_000.0 + RENEW_S - 1)).properties["renewed_at"] == 1_000.0  # no write
    assert (await claim_thread(mine, now=1_000.0 + RENEW_S)).properties["renewed_at"] == 1_000.0 + RENEW_S
    # another run of this process: it cannot be seen dead, so it waits for the lease
    with pytest.raises(ConflictError) as refused:
        await claim_thread(other, now=1_000.0 + RENEW_S + LEASE_S - 1)
    assert str(refused.value) == (
        f"l2mac: thread {THREAD!r} is being run by run run-a (process {os.getpid()} on {socket.gethostname()}); one "
        "process runs a thread at a time: wait for it to finish (or stop it), then resume the thread"
    )
    taken = await claim_thread(other, now=1_000.0 + RENEW_S + LEASE_S)
    assert taken.properties["generation"] == 2 and taken.properties["took_over"] == (
        f"run run-a (process {os.getpid()} on {socket.gethostname()}): it has not renewed its claim for 900 s (lease 900 s)"
    )
    with pytest.raises(ConflictError, match="is being run by run run-b"):  # the silent owner has lost it
        await claim_thread(mine, now=1_000.0 + RENEW_S + LEASE_S + 1)


async def test_a_released_thread_is_claimed_at_once(store: GraphStore, namespace: str) -> None:
    first, second = context(store, namespace, "run-a"), context(store, namespace, "run-b")
    await claim_thread(first)
    await release_thread(second)  # not its claim: nothing changes
    assert [(c["run_id"], c["released"]) for c in await claims(store, namespace)] == [("run-a", False)]
    await release_thread(first)
    await claim_thread(second)
    assert [(c["run_id"], c["released"], c["took_over"]) for c in await claims(store, namespace)] == [
        ("run-a", True, ""),
        ("run-b", False, ""),
    ]


@pytest.mark.subprocess
async def test_a_dead_owner_on_this_host_is_taken_over_at_once(store: GraphStore, namespace: str) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    pid = int(dead.stdout)
    owner = context(store, namespace, "run-dead")
    await claim_thread(owner)
    [record] = await all_nodes(store, namespace, "L2Claim")
    await store.upsert_nodes([record.model_copy(update={"properties": {**record.properties, "pid": pid}})])
    taken = await claim_thread(context(store, namespace, "run-new"))
    assert taken.properties["generation"] == 2
    assert taken.properties["took_over"] == f"run run-dead (process {pid} on {socket.gethostname()}): its process {pid} is gone"


async def test_a_live_process_on_this_host_keeps_the_thread_past_the_lease_but_a_reused_pid_does_not(
    store: GraphStore, namespace: str
) -> None:
    parent = os.getppid()  # alive while this test runs
    if process_started(parent) is None:
        pytest.skip("the platform does not tell a process's start time")
    await claim_thread(context(store, namespace, "run-parent"), now=0.0)
    [record] = await all_nodes(store, namespace, "L2Claim")
    alive = {**record.properties, "pid": parent, "started": process_started(parent)}
    await store.upsert_nodes([record.model_copy(update={"properties": alive})])
    with pytest.raises(ConflictError, match=f"is being run by run run-parent \\(process {parent} on"):
        await claim_thread(context(store, namespace, "run-other"), now=10 * LEASE_S)
    reused = {**alive, "started": "0"}  # the pid now names a process started at another time
    await store.upsert_nodes([record.model_copy(update={"properties": reused})])
    taken = await claim_thread(context(store, namespace, "run-other"), now=1.0)
    assert taken.properties["took_over"].endswith(f"its process {parent} is gone (the pid names another now)")


async def test_an_owner_on_another_host_keeps_the_thread_for_the_lease(store: GraphStore, namespace: str) -> None:
    owner = context(store, namespace, "run-far")
    await claim_thread(owner, now=time.time())
    [record] = await all_nodes(store, namespace, "L2Claim")
    far = {**record.properties, "host": "elsewhere", "pid": 1}
    await store.upsert_nodes([record.model_copy(update={"properties": far})])
    with pytest.raises(ConflictError, match=r"is being run by run run-far \(process 1 on elsewhere\)"):
        await claim_thread(context(store, namespace, "run-near"))
    later = await claim_thread(context(store, namespace, "run-near"), now=far["renewed_at"] + LEASE_S)
    assert "it has not renewed its claim" in later.properties["took_over"]


async def test_of_two_runs_taking_a_thread_over_exactly_one_wins(store: GraphStore, namespace: str) -> None:
    await claim_thread(context(store, namespace, "run-a"))
    await release_thread(context(store, namespace, "run-a"))
    results = await asyncio.gather(
        *(claim_thread(context(store, namespace, run)) for run in ("run-b", "run-c")), return_exceptions=True
    )
    won = [result for result in results if not isinstance(result, BaseException)]
    lost = [result for result in results if isinstance(result, BaseException)]
    assert len(won) == 1 and len(lost) == 1 and isinstance(lost[0], ConflictError), results
    assert "one process runs a thread at a time" in str(lost[0])
    assert [c["run_id"] for c in await claims(store, namespace)] == ["run-a", won[0].properties["run_id"]]
