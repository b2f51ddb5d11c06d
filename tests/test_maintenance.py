"""Checkpoint pruning by age on both savers: old history goes, every thread's newest checkpoint stays. Settling the
records of dead runs on both stores: silent ``running`` records become ``interrupted``, fresh ones are left alone."""

from __future__ import annotations

import asyncio
import operator
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any, TypedDict

import aiosqlite
import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple
from langgraph.checkpoint.base.id import uuid6
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from mnemoflow.errors import ConfigError, InvalidQueryError
from mnemoflow.graphs import load_graph
from mnemoflow.graphs.runner import STALLED_AFTER_S, run_record
from mnemoflow.graphs.settle import process_gone, process_identity, settle_silent_runs, settle_thread
from mnemoflow.memory.checkpoint_ids import checkpoint_id_floor
from mnemoflow.memory.maintenance import prune_checkpoints
from mnemoflow.memory.neo4j.checkpoints import Neo4jCheckpointSaver
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import NodeRecord
from tests.conftest import neo4j_auth

Key = tuple[str, str, str]
"""(thread_id, checkpoint_ns, checkpoint_id)"""
PLUS_5 = timezone(timedelta(hours=5))


@pytest.fixture(params=["sqlite", pytest.param("neo4j", marks=pytest.mark.neo4j)])
async def saver(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BaseCheckpointSaver[str]]:
    """An empty, set-up saver of either backend."""
    if request.param == "neo4j":
        async with Neo4jCheckpointSaver(request.getfixturevalue("empty_neo4j"), auth=neo4j_auth()) as neo4j_saver:
            yield neo4j_saver
        return
    async with aiosqlite.connect(tmp_path / "checkpoints.db") as connection:
        sqlite_saver = AsyncSqliteSaver(connection)
        await sqlite_saver.setup()
        yield sqlite_saver


# -- a small graph: plan, then steady and flaky side by side, then a subgraph (its own checkpoint namespace) --


class State(TypedDict, total=False):
    steps: Annotated[list[str], operator.add]
    finished: int


class InnerState(TypedDict, total=False):
    finished: int


class Graph:
    def __init__(self, saver: BaseCheckpointSaver[str], *, fail_once: set[str]) -> None:
        self.fail_once = fail_once
        self.steady_calls: Counter[str] = Counter()
        inner = StateGraph(InnerState)
        inner.add_node("inner", self.inner)
        inner.add_edge(START, "inner")
        builder = StateGraph(State)
        builder.add_node("plan", self.plan)
        builder.add_node("steady", self.steady)
        builder.add_node("flaky", self.flaky)
        builder.add_node("finish", inner.compile())
        builder.add_edge(START, "plan")
        builder.add_edge("plan", "steady")
        builder.add_edge("plan", "flaky")
        builder.add_edge(["steady", "flaky"], "finish")
        builder.add_edge("finish", END)
        self.compiled: CompiledStateGraph[State, None, State, State] = builder.compile(checkpointer=saver)

    async def plan(self, state: State) -> dict[str, Any]:
        return {"steps": ["plan"]}

    async def steady(self, state: State, config: RunnableConfig) -> dict[str, Any]:
        self.steady_calls[config["configurable"]["thread_id"]] += 1
        return {"steps": ["steady"]}

    async def flaky(self, state: State, config: RunnableConfig) -> dict[str, Any]:
        thread_id = config["configurable"]["thread_id"]
        if thread_id in self.fail_once:
            self.fail_once.remove(thread_id)
            raise RuntimeError(f"flaky fails once on {thread_id}")
        return {"steps": ["flaky"]}

    async def inner(self, state: InnerState) -> dict[str, Any]:
        return {"finished": state.get("finished", 0) + 1}

    async def run(self, thread_id: str, steps: list[str] | None) -> dict[str, Any]:
        return await self.compiled.ainvoke(None if steps is None else {"steps": steps}, thread(thread_id))


def thread(thread_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id}}


async def stored(saver: BaseCheckpointSaver[str]) -> dict[Key, CheckpointTuple]:
    tuples = {}
    async for tup in saver.alist(None):
        configurable = tup.config["configurable"]
        tuples[(configurable["thread_id"], configurable["checkpoint_ns"], configurable["checkpoint_id"])] = tup
    return tuples


def newest_per_namespace(keys: set[Key]) -> set[Key]:
    newest: dict[tuple[str, str], Key] = {}
    for key in keys:
        if key[:2] not in newest or key[2] > newest[key[:2]][2]:
            newest[key[:2]] = key
    return set(newest.values())


def written(tup: CheckpointTuple) -> list[tuple[str, str, str]]:
    return [(task_id, channel, repr(value)) for task_id, channel, value in tup.pending_writes or []]


async def test_prune_keeps_each_threads_newest_and_recent_history(saver: BaseCheckpointSaver[str]) -> None:
    graph = Graph(saver, fail_once={"failed"})
    await graph.run("old", ["a"])
    await graph.run("resumed-later", ["b"])
    with pytest.raises(RuntimeError, match="fails once"):
        await graph.run("failed", ["c"])
    await asyncio.sleep(0.02)
    cutoff = datetime.now(UTC)
    await asyncio.sleep(0.02)
    await graph.run("new", ["d"])
    await graph.run("resumed-later", ["e"])

    before = await stored(saver)
    states = {name: await graph.compiled.aget_state(thread(name)) for name in ("old", "resumed-later", "failed", "new")}
    assert {key[1] for key in before} - {""}, "the subgraph wrote checkpoints in a namespace of their own"
    assert all(
        tup.pending_writes for key, tup in before.items() if key[0] == "failed" and key in newest_per_namespace(set(before))
    )
    old_keys = {key for key, tup in before.items() if datetime.fromisoformat(tup.checkpoint["ts"]) < cutoff}
    assert {key[0] for key in old_keys} == {"old", "resumed-later", "failed"}
    expected_gone = old_keys - newest_per_namespace(set(before))

    deleted = await prune_checkpoints(saver, older_than=cutoff)

    after = await stored(saver)
    assert deleted == len(expected_gone) == len(before) - len(after) > 0
    assert set(after) == set(before) - expected_gone
    assert newest_per_namespace(set(before)) <= set(after)
    assert {key for key in after if key[0] in ("old", "failed")} == newest_per_namespace(
        {key for key in before if key[0] in ("old", "failed")}
    )
    assert {key for key in after if key[0] == "new"} == {key for key in before if key[0] == "new"}
    for key, tup in after.items():
        assert written(tup) == written(before[key]), key
        assert tup.checkpoint == before[key].checkpoint
    for name, state in states.items():
        now = await graph.compiled.aget_state(thread(name))
        assert (now.values, now.next) == (state.values, state.next), name

    assert await prune_checkpoints(saver, older_than=cutoff) == 0

    # the failed run resumes from its kept checkpoint and pending writes: steady's write is reused, not redone
    assert states["failed"].next == ("flaky",)
    resumed = await graph.run("failed", None)
    assert resumed == {"steps": ["c", "plan", "flaky", "steady"], "finished": 1}
    assert graph.steady_calls["failed"] == 1


async def test_prune_with_a_future_cutoff_keeps_only_the_newest(saver: BaseCheckpointSaver[str]) -> None:
    graph = Graph(saver, fail_once=set())
    assert await prune_checkpoints(saver, older_than=datetime.now(UTC)) == 0  # nothing stored yet
    await graph.run("one", ["a"])
    await graph.run("one", ["b"])
    await graph.run("two", ["c"])
    before = await stored(saver)
    values = {name: (await graph.compiled.aget_state(thread(name))).values for name in ("one", "two")}

    # any timezone works; the cutoff is compared as an instant
    deleted = await prune_checkpoints(saver, older_than=datetime.now(UTC).astimezone(PLUS_5) + timedelta(hours=1))

    after = await stored(saver)
    assert set(after) == newest_per_namespace(set(before))
    assert deleted == len(before) - len(after)
    for name, value in values.items():
        assert (await graph.compiled.aget_state(thread(name))).values == value
    steps = [step for first in "abf" for step in (first, "plan", "flaky", "steady")]
    assert await graph.run("one", ["f"]) == {"steps": steps, "finished": 3}


async def test_unsupported_saver_and_naive_cutoff_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="InMemorySaver"):
        await prune_checkpoints(InMemorySaver(), older_than=datetime.now(UTC))
    async with aiosqlite.connect(tmp_path / "checkpoints.db") as connection:
        with pytest.raises(InvalidQueryError, match="no timezone"):
            await prune_checkpoints(AsyncSqliteSaver(connection), older_than=datetime.now())


def test_checkpoint_ids_sort_by_creation_time() -> None:
    earlier = [str(uuid6(clock_seq=step)) for step in (-2, -1, 0, 2**13)]
    moment = datetime.now(UTC)
    floor = checkpoint_id_floor(moment)
    later = [str(uuid6(clock_seq=step)) for step in (-2, -1, 0, 2**13)]
    assert all(checkpoint_id < floor for checkpoint_id in earlier)
    assert all(checkpoint_id >= floor for checkpoint_id in later)
    assert checkpoint_id_floor(moment.astimezone(PLUS_5)) == floor
    assert checkpoint_id_floor(moment + timedelta(microseconds=1)) > floor
    assert checkpoint_id_floor(datetime.min.replace(tzinfo=UTC)) == "00000000-0000-6000-8000-000000000000"
    assert checkpoint_id_floor(datetime.max.replace(tzinfo=UTC)) == "ffffffff-ffff-6fff-8000-000000000000"


# -- settling the records of dead runs ----------------------------------------------------------------------------


def run(namespace: str, run_id: str, status: str, *, silent_for: float, thread: str = "", **extra: Any) -> NodeRecord:
    """A run record as the runner writes it, last written ``silent_for`` seconds ago by this process."""
    node = run_record(namespace, load_graph("text-stats"), run_id, thread or f"thread-{run_id}", status, False, time.time() - 300,
                      1.0, [{"node": "split", "event": "end"}], {"calls": 0}, {"error": "", "input": {"text": "Hi."}})  # fmt: skip
    return node.model_copy(update={"properties": {**node.properties, "recorded_at": time.time() - silent_for, **extra}})


async def statuses(store: GraphStore, namespace: str) -> dict[str, dict[str, Any]]:
    return {str(node.properties["run_id"]): node.properties for node in await store.list_nodes(namespace, kind="Run")}


async def test_maintenance_settles_silent_running_runs_in_every_namespace(store: GraphStore, namespace: str) -> None:
    other = f"{namespace}-b"
    await store.upsert_nodes([
        run(namespace, "dead", "running", silent_for=STALLED_AFTER_S + 30),
        run(namespace, "alive", "running", silent_for=1),
        run(namespace, "done", "completed", silent_for=3600),
    ])  # fmt: skip
    await store.upsert_nodes([run(other, "dead-too", "running", silent_for=STALLED_AFTER_S + 5)])

    assert await settle_silent_runs(store) == 2

    runs, others = await statuses(store, namespace), await statuses(store, other)
    assert {name: record["status"] for name, record in runs.items()} == {
        "dead": "interrupted",
        "alive": "running",
        "done": "completed",
    }
    dead = runs["dead"]
    assert int(dead["settled_reason"].removeprefix("silent for ").removesuffix(" s")) >= STALLED_AFTER_S + 30
    assert dead["resumed_by"] == ""  # nobody has resumed its thread yet
    assert dead["settled_at"] > dead["recorded_at"] and dead["steps"] == 1 and dead["input"] == {"text": "Hi."}
    assert others["dead-too"]["status"] == "interrupted" and others["dead-too"]["settled_reason"].startswith("silent for")
    assert "settled_at" not in runs["alive"] and "settled_at" not in runs["done"]
    assert await settle_silent_runs(store) == 0  # settled once


async def test_a_run_taking_over_a_thread_settles_only_its_dead_runs(store: GraphStore, namespace: str) -> None:
    elsewhere = {"host": "another-host", "machine": "another-machine", "pid": 7}
    await store.upsert_nodes([
        run(namespace, "silent", "running", thread="t", silent_for=STALLED_AFTER_S + 1, process=elsewhere),
        run(namespace, "elsewhere", "running", thread="t", silent_for=2, process=elsewhere),  # may still be going
        run(namespace, "cancelled", "interrupted", thread="t", silent_for=30),
        run(namespace, "new", "running", thread="t", silent_for=0),  # the taking run's own first record
        run(namespace, "other-thread", "running", thread="u", silent_for=STALLED_AFTER_S + 1),
    ])  # fmt: skip

    assert await settle_thread(store, namespace, "t", resumed_by="new") == ["cancelled", "silent"]

    runs = await statuses(store, namespace)
    assert {name: (record["status"], record["resumed_by"]) for name, record in runs.items()} == {
        "silent": ("interrupted", "new"), "elsewhere": ("running", ""), "cancelled": ("interrupted", "new"),
        "new": ("running", ""), "other-thread": ("running", ""),
    }  # fmt: skip
    assert runs["silent"]["settled_reason"].startswith("silent for")
    assert runs["cancelled"]["settled_reason"] == "cut off by a cancel or Ctrl-C"
    assert await settle_thread(store, namespace, "t", resumed_by="newer") == []  # each is linked to one run


def test_a_process_is_gone_only_when_this_machine_says_so() -> None:
    here = process_identity()
    assert not process_gone(here) and not process_gone(None) and not process_gone({**here, "pid": True})
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert not process_gone({**here, "pid": child.pid})
        assert not process_gone({**here, "pid": child.pid, "machine": "another"})
        child.kill()
        deadline = time.monotonic() + 10
        while not process_gone({**here, "pid": child.pid}):  # a zombie until reaped, and gone already
            assert time.monotonic() < deadline, "the killed child never looked gone"
            time.sleep(0.01)
    finally:
        child.kill()
        child.wait()
    assert process_gone({**here, "pid": child.pid}) and not process_gone({**here, "pid": child.pid, "host": "another"})
