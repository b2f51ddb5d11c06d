"""G-Memory's claims in the store, on both stores, with real processes: a milestone whose process was killed mid-work
is run again, once, by the next task (of two at once, one wins; a live owner keeps it), and two processes recording
queries at once never give two queries one number.

The processes run :data:`WORKER` (the public node and milestone API, the settings from the environment) against
the scripted model server, which holds the killed process's request and lines the recording processes up.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import structlog
from pydantic import BaseModel

from mnemoflow.llm import LLM
from mnemoflow.memory.paging import all_nodes
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import NodeRecord
from mnemoflow.nodes.gmemory import milestones
from mnemoflow.nodes.gmemory.agents import KEY_STEPS_SYSTEM
from mnemoflow.nodes.gmemory.evolve import RecordConfig, record
from mnemoflow.nodes.gmemory.milestones import run_due
from mnemoflow.nodes.gmemory.model import QUERY, milestone_id, query_id
from mnemoflow.nodes.gmemory.state import TaskState
from tests.conftest import EMBEDDER, cli_environment
from tests.support.openai_server import Rule, ScriptedOpenAIServer

WORK = "Do the milestone's work."
WORKER = f"""
import asyncio, json, sys
from pydantic import BaseModel
from mnemoflow.llm import llm_from_settings
from mnemoflow.logging import get_logger
from mnemoflow.memory.embeddings import embedder_from_settings
from mnemoflow.memory.factory import store_from_settings
from mnemoflow.nodes.context import RunContext
from mnemoflow.nodes.gmemory.evolve import RecordConfig, record
from mnemoflow.nodes.gmemory.milestones import run_due
from mnemoflow.nodes.gmemory.state import TaskState
from mnemoflow.settings import Settings

class Answer(BaseModel):
    text: str

async def main(mode, run_id, wait=""):
    settings = Settings.load()
    embedder = embedder_from_settings(settings)
    store, llm = store_from_settings(settings, embedder), llm_from_settings(settings)  # set up by the test
    if wait:  # started early, told when to go
        sys.stdin.readline()
    context = RunContext(store=store, embedder=embedder, llm=llm, settings=settings, namespace=settings.namespace,
                         run_id=run_id, thread_id=run_id, log=get_logger("worker"))
    try:
        if mode == "milestone":
            async def work(n):
                messages = [{{"role": "system", "content": {WORK!r}}}, {{"role": "user", "content": f"revision {{n}}"}}]
                return {{"answer": (await llm.structured(messages, Answer)).text, "by": run_id}}
            out = await run_due(context, "revision", 5, work)
        else:
            out = []
            for i in range(5):
                state = TaskState(task=f"task {{i}} of {{run_id}}", task_key=f"{{run_id}}-{{i}}", success=True, feedback="ok")
                out.append((await record(state, RecordConfig(), context))["evolution"]["record"]["order"])
        print("result:", json.dumps(out))
    finally:
        await llm.aclose()
        await store.close()

asyncio.run(main(*sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer() as running:
        yield running


class Workers:
    """Starts worker processes on the test's store and namespace."""

    def __init__(
        self, backend: str, namespace: str, server: ScriptedOpenAIServer, tmp_path: Path, request: pytest.FixtureRequest
    ):
        uri = request.getfixturevalue("empty_neo4j") if backend == "neo4j" else None
        self.environment = cli_environment(backend, tmp_path, namespace=namespace, neo4j_uri=uri, model_url=server.base_url)
        self.script, self.cwd = tmp_path / "worker.py", tmp_path
        self.script.write_text(WORKER)
        self.started: list[subprocess.Popen[str]] = []

    def start(self, mode: str, run_id: str, *, wait: bool = False) -> subprocess.Popen[str]:
        """A worker running ``mode`` as run ``run_id``; with ``wait``, it starts up, then waits for :meth:`go`."""
        process = subprocess.Popen(
            [sys.executable, str(self.script), mode, run_id, "wait" if wait else ""], env=self.environment, cwd=self.cwd,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.started.append(process)
        return process

    @staticmethod
    def go(*processes: subprocess.Popen[str]) -> None:
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()

    @staticmethod
    def output(process: subprocess.Popen[str]) -> Any:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err[-3000:]
        [result] = [line for line in out.splitlines() if line.startswith("result: ")]  # the logs go to stdout too
        return json.loads(result.removeprefix("result: "))

    def stop(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
                process.communicate()


@pytest.fixture
def workers(
    backend: str, namespace: str, server: ScriptedOpenAIServer, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Workers]:
    started = Workers(backend, namespace, server, tmp_path, request)
    try:
        yield started
    finally:
        started.stop()


def local(store: GraphStore, namespace: str, run_id: str, server: ScriptedOpenAIServer | None = None) -> Any:
    """What milestones and ``gmemory.record`` read of a run context, for a run of this process."""
    llm = server.gateway() if server is not None else None
    return SimpleNamespace(
        store=store, namespace=namespace, run_id=run_id, thread_id=run_id, log=structlog.get_logger(), llm=llm, embedder=EMBEDDER
    )


async def seed_queries(store: GraphStore, namespace: str, count: int) -> None:
    """``count`` queries numbered from 1, as versions before the order claims wrote them (a milestone is due at 5)."""
    vectors = await EMBEDDER.embed([f"seeded task {n}" for n in range(1, count + 1)])
    await store.upsert_nodes(
        [
            NodeRecord(
                id=query_id(namespace, f"seed-{n}"),
                namespace=namespace,
                kind=QUERY,
                text=f"seeded task {n}",
                embedding=vector,
                properties={"task": f"seeded task {n}", "task_key": f"seed-{n}", "status": "resolved", "order": n},
            )  # fmt: skip
            for n, vector in enumerate(vectors, 1)
        ]
    )


class Answer(BaseModel):
    text: str


async def ask(llm: LLM, n: int, run_id: str) -> dict[str, Any]:
    """The milestone work of :data:`WORKER`, in this process."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": WORK}, {"role": "user", "content": f"revision {n}"}]
    return {"answer": (await llm.structured(messages, Answer)).text, "by": run_id}


async def never(n: int) -> dict[str, Any]:
    raise AssertionError(f"milestone {n} must not run here")


async def until(event: threading.Event, what: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while not event.is_set():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


# -- case 2: a milestone abandoned mid-work ------------------------------------------------------------------


@pytest.mark.subprocess
async def test_a_milestone_killed_mid_work_is_run_again_once_by_one_of_two_later_tasks(
    store: GraphStore, namespace: str, server: ScriptedOpenAIServer, workers: Workers
) -> None:
    await seed_queries(store, namespace, 5)
    arrived, release, calls = threading.Event(), threading.Event(), []

    def work(body: dict[str, Any]) -> dict[str, Any]:
        calls.append(body)
        arrived.set()
        release.wait(60)  # the first process is killed waiting here
        return {"text": f"revised ({len(calls)})"}

    server.rules[:] = [Rule(system=WORK, respond=work)]
    first = workers.start("milestone", "run-killed")
    taker = workers.start("milestone", "run-b", wait=True)
    await until(arrived, "the first task never reached its milestone's work", first)
    # its owner is alive: a task of another run leaves the milestone alone
    assert await run_due(local(store, namespace, "run-live"), "revision", 5, never) == {}
    first.kill()
    first.communicate()
    release.set()
    workers.go(taker)  # two later tasks at the same moment: that process's and this one's
    here = local(store, namespace, "run-c", server)
    mine = await run_due(here, "revision", 5, lambda n: ask(here.llm, n, "run-c"))
    outputs = [workers.output(taker), mine]

    [won] = [output for output in outputs if output]  # one re-ran it, the other was refused
    assert outputs.count({}) == 1 and won == {"revision-5": {"answer": "revised (2)", "by": won["revision-5"]["by"]}}
    assert len(calls) == 2  # the killed attempt's request, and the one re-run
    [milestone] = await store.get_nodes(namespace, [milestone_id(namespace, "revision-5")])
    assert milestone is not None
    assert (milestone.properties["status"], milestone.properties["report"]) == ("done", won["revision-5"])
    claims = sorted(await all_nodes(store, namespace, "GMilestoneClaim"), key=lambda c: c.properties["generation"])
    killed, rerun = (claim.properties for claim in claims)
    assert (killed["run_id"], killed["pid"], killed["released"]) == ("run-killed", first.pid, False)
    assert (rerun["run_id"], rerun["released"], milestone.properties["generation"]) == (won["revision-5"]["by"], True, 2)
    host = socket.gethostname()
    assert rerun["took_over"] == f"run run-killed (process {first.pid} on {host}): its process {first.pid} is gone"
    assert await run_due(local(store, namespace, "run-later"), "revision", 5, never) == {}  # done: never again


async def test_a_milestone_claimed_by_an_older_version_is_abandoned(store: GraphStore, namespace: str) -> None:
    await seed_queries(store, namespace, 5)
    legacy = {"name": "revision-5", "status": "claimed"}
    await store.upsert_nodes(
        [NodeRecord(id=milestone_id(namespace, "revision-5"), namespace=namespace, kind="GMilestone", properties=legacy)]
    )

    async def work(n: int) -> dict[str, Any]:
        return {"revised": n}

    assert await run_due(local(store, namespace, "run-new"), "revision", 5, work) == {"revision-5": {"revised": 5}}
    [milestone] = await store.get_nodes(namespace, [milestone_id(namespace, "revision-5")])
    assert milestone is not None and (milestone.properties["status"], milestone.properties["report"]) == ("done", {"revised": 5})


async def test_a_running_milestone_is_renewed_and_a_failed_one_released_for_the_next_task(
    store: GraphStore, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(milestones, "RENEW_S", 0.01)
    await seed_queries(store, namespace, 5)

    async def renewed_then_fails(n: int) -> dict[str, Any]:
        while True:  # the claim is renewed while the work runs
            [claim] = await all_nodes(store, namespace, "GMilestoneClaim")
            if claim.properties["renewed_at"] > claim.properties["claimed_at"]:
                raise RuntimeError("the work failed")
            await asyncio.sleep(0.01)

    with pytest.raises(RuntimeError, match="the work failed"):
        await run_due(local(store, namespace, "run-a"), "revision", 5, renewed_then_fails)
    [milestone] = await store.get_nodes(namespace, [milestone_id(namespace, "revision-5")])
    assert milestone is not None and (milestone.properties["status"], milestone.properties["owner"]) == (
        "running",
        f"run run-a (process {os.getpid()} on {socket.gethostname()})",
    )

    async def work(n: int) -> dict[str, Any]:
        return {"revised": n}

    # released: the next tasks take it over at once, and of two at the same moment exactly one runs it
    runs = await asyncio.gather(*(run_due(local(store, namespace, run), "revision", 5, work) for run in ("run-b", "run-c")))
    assert sorted(runs, key=len) == [{}, {"revision-5": {"revised": 5}}]
    claims = sorted(await all_nodes(store, namespace, "GMilestoneClaim"), key=lambda c: c.properties["generation"])
    assert [(c.properties["released"], c.properties["took_over"]) for c in claims] == [(True, ""), (True, "")]
    assert claims[0].properties["run_id"] == "run-a" and claims[1].properties["run_id"] == ("run-b" if runs[0] else "run-c")


async def test_an_owner_on_another_host_keeps_a_milestone_for_the_lease(store: GraphStore, namespace: str) -> None:
    far = await milestones.take(local(store, namespace, "run-far"), "merge-20", now=1_000.0)
    assert far is not None
    await store.upsert_nodes([far.model_copy(update={"properties": {**far.properties, "host": "elsewhere", "pid": 1}})])
    near = local(store, namespace, "run-near")
    assert await milestones.take(near, "merge-20", now=1_000.0 + milestones.LEASE_S - 1) is None
    taken = await milestones.take(near, "merge-20", now=1_000.0 + milestones.LEASE_S)
    assert taken is not None and taken.properties["generation"] == 2
    assert (
        taken.properties["took_over"]
        == "run run-far (process 1 on elsewhere): it has not renewed its claim for 300 s (lease 300 s)"
    )


# -- case 6: query numbers under concurrency ---------------------------------------------------------------


@pytest.mark.subprocess
async def test_two_processes_recording_at_once_never_share_a_query_number(
    store: GraphStore, namespace: str, server: ScriptedOpenAIServer, workers: Workers
) -> None:
    together = threading.Barrier(2, timeout=60)

    def key_steps(body: dict[str, Any]) -> dict[str, Any]:
        together.wait()  # each task of one process records at the moment the other's does
        return {"steps": ["Work out the answer"]}

    server.rules[:] = [Rule(system=KEY_STEPS_SYSTEM[:40], respond=key_steps)]
    recorders = [workers.start("record", run) for run in ("run-1", "run-2")]
    given = [order for recorder in recorders for order in workers.output(recorder)]

    stored = sorted(int(q.properties["order"]) for q in await all_nodes(store, namespace, QUERY))
    assert len(stored) == 10 and len(set(stored)) == 10, stored
    assert sorted(given) == stored


async def test_a_query_recorded_again_keeps_its_number_and_new_ones_follow_older_queries(
    store: GraphStore, namespace: str, server: ScriptedOpenAIServer
) -> None:
    server.rules[:] = [Rule(system=KEY_STEPS_SYSTEM[:40], json={"steps": ["Work out the answer"]})]
    await seed_queries(store, namespace, 3)  # numbered before the claims existed
    context = local(store, namespace, "run-a", server)

    async def order(key: str) -> int:
        state = TaskState(task=f"task {key}", task_key=key, success=True, feedback="ok")
        return int((await record(state, RecordConfig(), context))["evolution"]["record"]["order"])

    assert [await order("a"), await order("b"), await order("a")] == [4, 5, 4]
