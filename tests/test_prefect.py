"""The Prefect flows against a real ``prefect server start`` and real ``prefect worker start`` processes, with
memory in the test Neo4j and the scripted OpenAI-compatible server as the model."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prefect import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterParentFlowRunId,
)
from prefect.client.schemas.objects import FlowRun, TaskRun
from prefect.deployments import run_deployment

from mnemoflow.flows.ingest import ingest
from mnemoflow.flows.maintain import maintain_memory
from mnemoflow.flows.run import ABANDONED, run_graph
from mnemoflow.graphs import load_graph
from mnemoflow.graphs.runner import STALLED_AFTER_S, run_record
from mnemoflow.memory.neo4j.checkpoints import Neo4jCheckpointSaver
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import NodeRecord
from tests.conftest import EMBEDDER, neo4j_auth
from tests.support import testing_nodes
from tests.support.comorag_book import BOOK, CHUNKS, answer, build_book, script
from tests.support.openai_server import Rule, ScriptedOpenAIServer
from tests.support.prefect_fixtures import MODEL_LIMIT, RUN_TIMEOUT, SILENCE_SECONDS, logs, run_env, wait_final
from tests.support.prefect_server import PrefectServer, Worker

pytestmark = [pytest.mark.neo4j, pytest.mark.timeout(900)]


@pytest.fixture
def in_process(
    prefect_api: PrefectServer, model: ScriptedOpenAIServer, empty_neo4j: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> pytest.MonkeyPatch:
    """Flows called in this process see the run environment; the monkeypatch sets more."""
    for name, value in run_env(empty_neo4j, model, namespace).items():
        monkeypatch.setenv(name, value)
    return monkeypatch


async def subflow_runs(parent: uuid.UUID) -> list[FlowRun]:
    async with get_client() as client:
        return await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent]))
        )


async def task_runs(flow_runs: list[FlowRun]) -> list[TaskRun]:
    async with get_client() as client:
        return await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id for run in flow_runs])))


async def marks(store: GraphStore, namespace: str) -> Counter[str]:
    hits = await store.keyword_search(namespace, "before after", k=100, kinds=["TestMark"])
    return Counter(hit.node.properties["label"] for hit in hits)


def write_graph(path: Path, nodes: dict[str, Any], *, edges: list[tuple[str, str]], **fields: Any) -> Path:
    spec = {"name": path.stem, "state": "text.TextState", "input": ["text"], "nodes": nodes, **fields}
    spec["edges"] = [{"from": source, "to": target} for source, target in edges]
    path.write_text(yaml.safe_dump(spec))
    return path


# -- deploying and running on a worker ---------------------------------------------------------------------


async def test_deploy_all_then_comorag_qa_runs_on_a_worker(
    deployed: Any,
    prefect_api: PrefectServer,
    workers: Callable[..., Worker],
    model: ScriptedOpenAIServer,
    neo4j: GraphStore,
    empty_neo4j: str,
    namespace: str,
) -> None:
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    async with get_client() as client:
        names = {deployment.name for deployment in await client.read_deployments()}
    assert names == {
        "comorag-qa",
        "comorag-ingest",
        "text-stats",
        "text-pipeline",
        "tme-turn",
        "gmemory-task",
        "experepair",
        "l2mac",
        "ingest-comorag",
        "maintain-memory",
    }

    await build_book(neo4j, EMBEDDER, namespace)
    script(model, [answer("*"), answer("Corvin Ashe")], [{"probes": ["Who looked after the Orsk children?"]}])
    worker = workers("qa", env=run_env(empty_neo4j, model, namespace))
    question = "Who was the guardian of Tobin Orsk after Hedda Vale married?"
    flow_run = await run_deployment(
        "run_graph/comorag-qa", parameters={"input": {"book_id": BOOK, "question": question}}, timeout=0
    )
    finished = await wait_final(flow_run.id, [worker])
    assert finished.state is not None and finished.state.is_completed(), logs([worker])

    [question_node] = [hit.node for hit in await neo4j.keyword_search(namespace, "guardian Tobin", kinds=["Question"])]
    assert question_node.properties["status"] == "answered" and question_node.properties["final_answer"] == "Corvin Ashe"
    assert question_node.properties["cycles"] == 1
    assert await neo4j.count_nodes(namespace, "MemoryUnit") > 0

    [subflow] = await subflow_runs(flow_run.id)
    steps = Counter(run.name for run in await task_runs([subflow]))
    assert steps["answer"] == 2 and steps["retrieve"] == 1 and steps["finalize"] == 1 and steps["probe_worker"] == 1
    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["graph-run-comorag-qa"]))
        )
    [report] = [artifact for artifact in artifacts if artifact.flow_run_id == subflow.id]
    content = str(report.data)
    assert "```mermaid" in content and "flowchart TD" in content and "class " in content
    assert "`answer` ran 2 times" in content and "## Model usage" in content


# -- retries -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["node", "graph"])
async def test_a_node_failing_twice_succeeds_on_retry_in_either_task_mode(
    mode: str,
    neo4j: GraphStore,
    namespace: str,
    tmp_path: Path,
    in_process: pytest.MonkeyPatch,
) -> None:
    """``node`` mode: the node's task retries it and the UI shows a task run per node; ``graph`` mode: the engine
    retries it inside the graph's flow run, which has no task runs. The run record keeps every attempt either way."""
    in_process.setenv("MNEMOFLOW_PREFECT_TASKS", mode)
    graph = write_graph(
        tmp_path / "flaky-twice.yaml",
        {
            "before": {"use": "testing.mark", "with": {"label": "before"}},
            "flaky": {"use": "testing.flaky", "with": {"failures": 2}, "retry": {"max_attempts": 3, "initial_interval": 0.1}},
        },
        edges=[("START", "before"), ("before", "flaky"), ("flaky", "END")],
    )
    summary = await run_graph(str(graph), {"text": "x"})
    assert summary["status"] == "completed" and summary["steps"] == ["before", "flaky"]
    assert testing_nodes.FAILURES[summary["thread_id"]] == 0  # both injected failures were used

    [subflow] = await subflow_runs(uuid.UUID(summary["thread_id"]))
    assert subflow.state is not None and subflow.state.is_completed() and subflow.run_count == 1
    tasks = {run.name: run for run in await task_runs([subflow])}
    if mode == "node":
        assert tasks["flaky"].run_count == 3 and tasks["flaky"].state is not None and tasks["flaky"].state.is_completed()
        assert tasks["before"].run_count == 1
    else:
        assert tasks == {}
    assert await marks(neo4j, namespace) == Counter({"before": 1})
    [run] = [hit.node for hit in await neo4j.keyword_search(namespace, "flaky-twice", kinds=["Run"])]
    assert [event["event"] for event in run.properties["events"] if event["node"] == "flaky"] == ["error", "error", "end"]


async def failure_report_of(record: NodeRecord) -> str:
    """The report a failed run published: the artifact of its graph's key on the subflow run of its thread."""
    [subflow] = await subflow_runs(uuid.UUID(record.properties["thread_id"]))
    key = f"graph-run-{record.properties['graph']}"
    async with get_client() as client:
        artifacts = await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    [report] = [artifact for artifact in artifacts if artifact.flow_run_id == subflow.id]
    return str(report.data)


async def test_a_failed_run_publishes_the_step_and_error_as_its_report(
    sqlite_store: GraphStore, namespace: str, tmp_path: Path, in_process: pytest.MonkeyPatch
) -> None:
    """Read from the failed run's record (here in SQLite; Neo4j: the model-limit test below): the step that failed,
    its error, the steps done before it, the link to the run's page."""
    in_process.setenv("MNEMOFLOW_STORE_BACKEND", "sqlite")
    in_process.setenv("MNEMOFLOW_STORE_SQLITE_PATH", str(tmp_path / "memory.db"))
    in_process.setenv("MNEMOFLOW_UI_URL", "http://127.0.0.1:8765")
    graph = write_graph(
        tmp_path / "fails-late.yaml",
        {
            "before": {"use": "testing.mark", "with": {"label": "before"}},
            "broken": {"use": "testing.flaky", "with": {"failures": 9}},
        },
        edges=[("START", "before"), ("before", "broken"), ("broken", "END")],
    )
    with pytest.raises(Exception, match="flaky failure, 8 left"):
        await run_graph(str(graph), {"text": "x"})

    [record] = await sqlite_store.list_nodes(namespace, kind="Run", limit=10)
    assert record.properties["status"] == "failed"
    content = await failure_report_of(record)
    assert content.startswith("# fails-late: failed\n")
    assert f"run `{record.properties['run_id']}`: failed at step `broken` after 1 step done." in content
    assert "```\nRuntimeError: flaky failure, 8 left\n```" in content
    assert "1. `before` (" in content and "2. `broken` (" in content
    assert "**failed**: RuntimeError: flaky failure, 8 left" in content
    assert f"](http://127.0.0.1:8765/runs/{record.properties['run_id']}?namespace={namespace})" in content


async def test_a_bad_input_or_graph_fails_the_flow_run_clearly(in_process: pytest.MonkeyPatch) -> None:
    with pytest.raises(Exception, match="text: required"):
        await run_graph("text-stats", {"txt": "typo"})
    with pytest.raises(Exception, match="no-such-graph"):
        await run_graph("no-such-graph", {})


# -- crash and resume --------------------------------------------------------------------------------------


async def heartbeats(prefect_server: PrefectServer, flow_run_id: uuid.UUID) -> int:
    body = {
        "filter": {"event": {"name": ["prefect.flow-run.heartbeat"]}, "resource": {"id": [f"prefect.flow-run.{flow_run_id}"]}}
    }
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{prefect_server.api_url}/events/filter", json=body)
        response.raise_for_status()
        return len(response.json()["events"])


async def test_killed_worker_run_resumes_from_its_checkpoint_on_a_new_worker(
    deployed: Any,
    prefect_api: PrefectServer,
    workers: Callable[..., Worker],
    model: ScriptedOpenAIServer,
    neo4j: GraphStore,
    empty_neo4j: str,
    namespace: str,
    tmp_path: Path,
) -> None:
    release = tmp_path / "release"
    graph = write_graph(
        tmp_path / "held-run.yaml",
        {
            "before": {"use": "testing.mark", "with": {"label": "before"}},
            "hold": {"use": "testing.wait_for_file", "with": {"path": str(release)}},
            "after": {"use": "testing.mark", "with": {"label": "after"}},
        },
        edges=[("START", "before"), ("before", "hold"), ("hold", "after"), ("after", "END")],
    )
    env = run_env(empty_neo4j, model, namespace)
    first = workers("doomed", env=env)
    flow_run = await run_deployment("run_graph/text-stats", parameters={"graph": str(graph), "input": {"text": "x"}}, timeout=0)
    deadline = time.monotonic() + RUN_TIMEOUT
    while not (Path(str(release) + ".started").exists() and await heartbeats(prefect_api, flow_run.id)):
        assert time.monotonic() < deadline, f"the run never reached the held node:\n{logs([first])}"
        await asyncio.sleep(0.5)
    async with get_client() as client:
        running = await client.read_flow_run(flow_run.id)
    assert running.state is not None and running.state.is_running() and running.infrastructure_pid
    first.kill()  # the worker, then the flow run's process (the worker starts it in a session of its own)
    with contextlib.suppress(ProcessLookupError):
        os.kill(int(running.infrastructure_pid.rsplit(":", 1)[-1]), signal.SIGKILL)
    release.touch()

    second = workers("rescuer", env=env)  # takes the run once the automation reschedules it
    finished = await wait_final(flow_run.id, [first, second], timeout=RUN_TIMEOUT + 2 * SILENCE_SECONDS)
    assert finished.state is not None and finished.state.is_completed(), logs([first, second])
    assert finished.run_count == 2
    assert second.name in second.output() and str(flow_run.id) in second.output()

    assert await marks(neo4j, namespace) == Counter({"before": 1, "after": 1})  # nothing ran twice
    runs = [hit.node for hit in await neo4j.keyword_search(namespace, "held-run", kinds=["Run"])]
    resumed = [run for run in runs if run.properties["status"] == "completed"]
    assert len(resumed) == 1 and resumed[0].properties["resumed"] is True
    assert [event["node"] for event in resumed[0].properties["events"]] == ["hold", "after"]
    assert resumed[0].properties["thread_id"] == str(flow_run.id)
    # the dead attempt's record is settled by the resume (its process is gone), and the two records name each other
    [dead_run] = [run.properties for run in runs if run.properties["status"] != "completed"]
    assert dead_run["status"] == "interrupted" and dead_run["resumed_by"] == resumed[0].properties["run_id"]
    assert resumed[0].properties["resumes"] == [dead_run["run_id"]]

    # Prefect ran the dead attempt's subflow run again (it resumed the graph); the node's task run the dead attempt
    # left running is Crashed, and no run of the flow run is left unfinished
    [subflow] = await subflow_runs(flow_run.id)
    assert subflow.state is not None and subflow.state.is_completed() and subflow.run_count == 2
    holds = {run.state_name: run for run in await task_runs([subflow]) if run.name == "hold"}
    assert set(holds) == {"Crashed", "Completed"}, holds
    dead = holds["Crashed"].state
    assert dead is not None and dead.message == ABANDONED
    assert all(run.state is not None and run.state.is_final() for run in await task_runs([flow_run, subflow]))


# -- scale-out ---------------------------------------------------------------------------------------------


async def submitted_by(prefect_server: PrefectServer, flow_run_ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
    """The worker that submitted each flow run, from the workers' ``submitted-flow-run`` events."""
    body = {"filter": {"event": {"name": ["prefect.worker.submitted-flow-run"]}}, "limit": 50}
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{prefect_server.api_url}/events/filter", json=body)
        response.raise_for_status()
        events = response.json()["events"]
    owners = {}
    for event in events:
        for related in event["related"]:
            if related.get("prefect.resource.role") == "flow-run":
                run_id = uuid.UUID(related["prefect.resource.id"].removeprefix("prefect.flow-run."))
                if run_id in flow_run_ids:
                    owners[run_id] = event["resource"]["prefect.resource.name"]
    return owners


SHARED_RUNS = 7
"""One more than the two workers' limits (3 each) take at once: both must take runs, six are in flight against the
shared model limit together, and the seventh waits until a worker has room again."""


async def test_two_workers_share_seven_runs_within_the_model_limit(
    deployed: Any,
    prefect_api: PrefectServer,
    workers: Callable[..., Worker],
    model: ScriptedOpenAIServer,
    neo4j: GraphStore,
    empty_neo4j: str,
    namespace: str,
    tmp_path: Path,
) -> None:
    graph = write_graph(
        tmp_path / "ask-each.yaml",
        {"split": {"use": "text.split_sentences"}, "ask": {"use": "testing.ask"}},
        edges=[("START", "split"), ("ask", "END")],
        fanouts=[{"from": "split", "over": "sentences", "item": "sentence", "to": "ask"}],
    )
    model.script(Rule(user="count:", text="4", latency=0.3))
    model.max_concurrent = 0
    env = {**run_env(empty_neo4j, model, namespace), "MNEMOFLOW_PREFECT_MODEL_LIMIT": MODEL_LIMIT}
    text = "One two three four. Five six seven eight. Nine ten eleven twelve."
    runs = [
        await run_deployment("run_graph/text-stats", parameters={"graph": str(graph), "input": {"text": text}}, timeout=0)
        for _ in range(SHARED_RUNS)
    ]
    pool = [workers("left", env=env, limit=3), workers("right", env=env, limit=3)]
    finished = [await wait_final(run.id, pool) for run in runs]
    assert all(run.state is not None and run.state.is_completed() for run in finished), logs(pool)

    owners = await submitted_by(prefect_api, {run.id for run in runs})
    assert len(owners) == SHARED_RUNS
    assert set(owners.values()) == {worker.name for worker in pool}, owners  # both workers took runs
    asked = [request for request in model.requests if "count:" in str(request["body"]["messages"])]
    assert len(asked) == 3 * SHARED_RUNS  # 3 sentences a run
    assert 1 <= model.max_concurrent <= 2  # the shared limit held across both workers' processes
    assert await neo4j.count_nodes(namespace, "Run") == SHARED_RUNS


# -- maintenance -------------------------------------------------------------------------------------------


async def test_maintain_memory_prunes_old_checkpoints_keeping_each_threads_latest(
    neo4j: GraphStore,
    empty_neo4j: str,
    namespace: str,
    in_process: pytest.MonkeyPatch,
) -> None:
    threads = [(await run_graph("text-stats", {"text": f"Thread {n} has words. And more words."}))["thread_id"] for n in range(3)]
    expired = NodeRecord(
        id="old", namespace=namespace, kind="TestMark", properties={"label": "old", "expires_at": time.time() - 5}
    )
    kept = NodeRecord(
        id="new", namespace=namespace, kind="TestMark", properties={"label": "new", "expires_at": time.time() + 3600}
    )
    silent = run_record(
        namespace, load_graph("text-stats"), "silent-run", "silent-thread", "running", False, time.time() - 600, 1.0, [], {}, {}
    )
    silent = silent.model_copy(update={"properties": {**silent.properties, "recorded_at": time.time() - STALLED_AFTER_S - 5}})
    await neo4j.upsert_nodes([expired, kept, silent])
    auth = neo4j_auth()

    async def checkpoints() -> dict[str, int]:
        async with Neo4jCheckpointSaver(empty_neo4j, auth=auth) as saver:
            counts: Counter[str] = Counter()
            for thread in threads:
                async for _ in saver.alist({"configurable": {"thread_id": thread}}):
                    counts[thread] += 1
            return dict(counts)

    before = await checkpoints()
    assert all(count > 1 for count in before.values())
    report = await maintain_memory(retention_days=0)
    assert report["checkpoints_deleted"] == sum(before.values()) - len(threads)
    assert await checkpoints() == {thread: 1 for thread in threads}
    assert report["records_expired"] == 1
    assert [node is not None for node in await neo4j.get_nodes(namespace, ["old", "new"])] == [False, True]
    assert report["runs_settled"] == 1  # the silent run's record, not the three that completed
    [settled] = await neo4j.get_nodes(namespace, [silent.id])
    assert settled is not None and settled.properties["status"] == "interrupted"
    async with Neo4jCheckpointSaver(empty_neo4j, auth=auth) as saver:
        state = await saver.aget_tuple({"configurable": {"thread_id": threads[0], "checkpoint_ns": ""}})
    assert state is not None and state.checkpoint["channel_values"]["total_words"] == 7


# -- ingest and bad configuration --------------------------------------------------------------------------


async def test_ingest_reads_a_book_file_and_is_idempotent(
    neo4j: GraphStore,
    namespace: str,
    tmp_path: Path,
    in_process: pytest.MonkeyPatch,
) -> None:
    in_process.setenv("MNEMOFLOW_LLM_OFFLINE", "true")
    book = tmp_path / "book.txt"
    book.write_text("\n\n".join(CHUNKS * 4), encoding="utf-8")
    first = await ingest(str(book), {"book_id": "tiny", "title": "Tiny"})
    assert first["status"] == "completed" and first["steps"][0] == "chunk"
    chunks = await neo4j.count_nodes(namespace, "Chunk")
    assert chunks >= 1 and await neo4j.count_nodes(namespace, "Book") == 1
    again = await ingest(str(book), {"book_id": "tiny", "title": "Tiny"})
    assert again["status"] == "completed" and await neo4j.count_nodes(namespace, "Chunk") == chunks
    with pytest.raises(Exception, match="cannot read .*missing.txt"):
        await ingest(str(tmp_path / "missing.txt"), {"book_id": "tiny"})


async def test_a_model_limit_missing_on_the_server_fails_clearly(
    model: ScriptedOpenAIServer,
    neo4j: GraphStore,
    namespace: str,
    tmp_path: Path,
    in_process: pytest.MonkeyPatch,
) -> None:
    in_process.setenv("MNEMOFLOW_PREFECT_MODEL_LIMIT", "nobody-created-this")
    model.script(Rule(user="count:", text="2"))
    graph = write_graph(tmp_path / "ask-once.yaml", {"ask": {"use": "testing.ask"}}, edges=[("START", "ask"), ("ask", "END")])
    with pytest.raises(Exception, match="nobody-created-this.*prefect gcl create"):
        await run_graph(str(graph), {"text": "x", "sentence": "one two"})
    [record] = [hit.node for hit in await neo4j.keyword_search(namespace, "ask-once", kinds=["Run"])]
    content = await failure_report_of(record)  # the failure, read from the run's record in Neo4j
    assert "failed at step `ask` after 0 steps done." in content and "**failed**:" in content
    assert "nobody-created-this" in content and "prefect gcl create" in content
