"""What a Prefect run leaves for its user: the graph's outputs as the flow run's result and in its report, mnemoflow's
log lines in the run's logs, the run record's link to the flow run, a failure's report, the final state of a run
rescheduled too often; and `mnemoflow prefect setup` refusing a temporary server.

The flow runs on a real ``prefect worker start`` against a real ``prefect server start``, on an SQLite store and the
offline model, so no Neo4j and no model server are needed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from prefect import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import FlowRun, Log
from prefect.deployments.flow_runs import arun_deployment
from prefect.states import AwaitingRetry, Running, Scheduled

from mnemoflow.flows.artifacts import MAX_VALUE_CHARS, failure_report, outputs_table, run_page_url
from mnemoflow.flows.setup import RESCHEDULED
from mnemoflow.graphs import load_graph
from mnemoflow.logging import configure_logging, get_logger, one_line, route_logs_to
from mnemoflow.memory import SQLiteStore
from mnemoflow.memory.records import NodeRecord
from mnemoflow.settings import LogSettings
from tests.conftest import EMBEDDER
from tests.support.prefect_fixtures import logs, wait_final
from tests.support.prefect_server import PrefectServer, Worker

MNEMOFLOW = str(Path(sys.executable).with_name("mnemoflow"))
UI_URL = "http://127.0.0.1:8765"
TEXT = "Results should be easy to find. Logs belong to their run. Links go both ways."
LOG_WAIT_S = 60.0


# -- the report's table and the log line, in this process ------------------------------------------------------


def test_the_outputs_table_shortens_long_values_and_escapes_markdown() -> None:
    table = outputs_table(
        {"final_answer": "Corvin | Ashe <b>*guardian*</b>\nof Tobin", "notes": ["a", "b"], "long": "word " * 200}
    )
    assert table[:2] == ["| output | value |", "| --- | --- |"]
    assert table[2] == r"| `final_answer` | Corvin \| Ashe \<b\>\*guardian\*\</b\> of Tobin |"
    assert table[3] == r'| `notes` | \["a", "b"\] |'
    long_value = table[4].removeprefix("| `long` | ").removesuffix(" |")
    assert MAX_VALUE_CHARS - 5 < len(long_value) <= MAX_VALUE_CHARS and long_value.endswith("word…")
    assert run_page_url("http://ui.example:8765/", "ab12", "team a") == "http://ui.example:8765/runs/ab12?namespace=team+a"


def test_a_failure_report_names_the_step_and_hides_credentials_in_the_error() -> None:
    graph = load_graph("text-stats")
    error = "LLMUnavailableError: http://user:secret@model.example/v1 refused ```x```"
    events = [
        {"node": "split", "event": "error", "duration_s": 0.1, "error": "flaky"},  # retried, then done
        {"node": "split", "event": "end", "duration_s": 0.1},
        {"node": "count", "event": "error", "duration_s": 0.2, "error": "at http://user:secret@model.example/v1"},
    ]
    record = {"run_id": "r1", "thread_id": "t1", "events": events}
    report = failure_report(graph, error, record=record, run_page="http://ui.example/runs/r1?namespace=a")
    assert "secret" not in report and "http://***@model.example/v1" in report
    assert "Thread `t1`, run `r1`: failed at step `count` after 1 step done." in report
    assert "````\nLLMUnavailableError: http://***@model.example/v1 refused ```x```\n````" in report  # a fence it cannot close
    assert "2. `split` (0.100 s)\n3. `count` (0.200 s) — **failed**: at http://***@model.example/v1" in report
    assert "failed at step `split`" not in failure_report(graph, "max_steps", record={**record, "events": events[:2]})
    assert "[The run's page in mnemoflow's UI](http://ui.example/runs/r1?namespace=a)" in report
    bare = failure_report(graph, "book 'b' is not indexed")
    assert "failed before its first step." in bare and "No step ran." in bare and "](" not in bare


class Kept(logging.Handler):
    """Keeps the records it is handed."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_line_logged_while_a_host_logger_is_there_goes_to_it_as_one_readable_line(tmp_path: Path) -> None:
    stream = (tmp_path / "printed.log").open("w+")
    host = logging.getLogger("tests.host")
    host.propagate = False
    host.setLevel(logging.DEBUG)
    handler = Kept()
    records = handler.records
    host.addHandler(handler)
    configure_logging(LogSettings(format="json", level="info"), stream=stream, force=True)
    active: list[logging.Logger] = []
    route_logs_to(lambda: active[0] if active else None)
    try:
        get_logger("mnemoflow.run").info("run.start", graph="text-stats")  # no host: printed as before
        active.append(host)
        log = get_logger("mnemoflow.run").bind(graph="text-stats")
        log.info("run.end", status="completed", note="two words", url="http://user:secret@example.com/x")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("node.failed", node="count")
    finally:
        route_logs_to(None)
        host.removeHandler(handler)
        configure_logging(LogSettings(), force=True)
    stream.close()
    printed = (tmp_path / "printed.log").read_text()
    assert '"event": "run.start"' in printed and "run.end" not in printed and "node.failed" not in printed
    [end, failed] = records
    assert (end.levelno, end.getMessage()) == (
        logging.INFO,
        'run.end graph=text-stats status=completed note="two words" url=http://***@example.com/x',
    )
    assert failed.levelno == logging.ERROR and failed.getMessage().startswith(
        "node.failed graph=text-stats node=count\nTraceback"
    )
    assert failed.getMessage().rstrip().endswith("ValueError: boom")
    assert one_line({"event": "x", "timestamp": "t", "level": "info", "logger": "l"}) == "x"
    assert structlog.is_configured()


# -- `mnemoflow prefect setup` without a server ------------------------------------------------------------------


@pytest.mark.subprocess
@pytest.mark.slow
def test_prefect_setup_refuses_to_prepare_a_temporary_server(tmp_path: Path) -> None:
    home = tmp_path / "prefect-home"
    home.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PREFECT_", "MNEMOFLOW_"))}
    env["PREFECT_HOME"] = str(home)
    done = subprocess.run([MNEMOFLOW, "prefect", "setup"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip() == (
        "error: PREFECT_API_URL is not set: mnemoflow prefect setup would prepare a temporary server that stops when it "
        "exits. Start one (prefect server start) and export PREFECT_API_URL=http://127.0.0.1:4200/api, or point it at yours."
    )
    assert done.stdout == ""
    assert list(home.iterdir()) == []  # a temporary server would have left its database here


# -- a real run on a worker ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def text_stats_deployed(deployed: Any, prefect_server: PrefectServer) -> PrefectServer:
    """The work pool and prefect.yaml's deployments, ``text-stats`` among them (it runs any graph file), on the
    module's server."""
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    return prefect_server


@pytest.fixture(scope="module")
def worker(text_stats_deployed: PrefectServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Worker, Path]]:
    """A worker the module's tests share (each passes its namespace as the run's parameter), running flows on an
    SQLite store and the offline model, logging at info: one worker start, not one a test."""
    store = tmp_path_factory.mktemp("results") / "memory.db"
    env = {
        "MNEMOFLOW_STORE_BACKEND": "sqlite",
        "MNEMOFLOW_STORE_SQLITE_PATH": str(store),
        "MNEMOFLOW_LLM_OFFLINE": "true",
        "MNEMOFLOW_LOG_LEVEL": "info",
        "MNEMOFLOW_LOG_FORMAT": "json",  # what a worker writes when not on a terminal: a run's lines must not be JSON
        "MNEMOFLOW_UI_URL": UI_URL,
    }
    started = text_stats_deployed.start_worker(f"results-{uuid.uuid4().hex[:6]}", env=env)
    yield started, store
    started.stop()


async def subflow_of(parent: uuid.UUID) -> FlowRun:
    async with get_client() as client:
        [subflow] = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent]))
        )
    return subflow


async def run_logs(flow_run_id: uuid.UUID, event: str) -> list[Log]:
    """The flow run's logs once a line of ``event`` has reached the server (they are sent in batches)."""
    deadline = time.monotonic() + LOG_WAIT_S
    async with get_client() as client:
        while True:
            found = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
            if any(log.message.startswith(event + " ") for log in found) or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.5)


async def run_records(store_path: Path, namespace: str) -> list[NodeRecord]:
    store = SQLiteStore(store_path, embedding_model=EMBEDDER.model, embedding_dimension=EMBEDDER.dimension)
    try:
        return await store.list_nodes(namespace, kind="Run", limit=10)
    finally:
        await store.close()


async def test_a_run_on_a_worker_returns_keeps_and_reports_its_outputs_and_logs_to_its_flow_run(
    prefect_api: PrefectServer, worker: tuple[Worker, Path], namespace: str
) -> None:
    runner, store = worker
    parameters = {"input": {"text": TEXT}, "namespace": namespace}
    flow_run = await arun_deployment("run_graph/text-stats", parameters=parameters, timeout=0)
    finished = await wait_final(flow_run.id, [runner])
    assert finished.state is not None and finished.state.is_completed(), logs([runner])
    words = len(TEXT.split())

    # the result, read back through the API from the result storage, for the flow and its subflow
    result: dict[str, Any] = await finished.state.aresult()
    assert result["outputs"]["total_words"] == words and result["outputs"]["rounds"] == 3
    assert len(result["outputs"]["notes"]) == 3 and result["status"] == "completed" and result["graph"] == "text-stats"
    subflow = await subflow_of(flow_run.id)
    assert subflow.state is not None
    assert (await subflow.state.aresult())["outputs"] == result["outputs"]
    stored = getattr(finished.state.data, "storage_key", None)  # the state's record of where the result is
    assert isinstance(stored, str)
    assert json.loads(Path(stored).read_text())["outputs"] == result["outputs"]  # readable JSON, not a pickle

    # mnemoflow's line in the subflow run's logs, in Prefect's form on the worker's output, never as JSON
    found = await run_logs(subflow.id, "run.end")
    [end] = [log for log in found if log.message.startswith("run.end ")]
    assert end.level == logging.INFO and "graph=text-stats" in end.message and "status=completed" in end.message
    assert not any(log.message.lstrip().startswith("{") for log in found)
    output = runner.output()
    assert f"| INFO    | Flow run '{subflow.name}' - run.end graph=text-stats" in output
    assert '"event"' not in output

    # the run record names the subflow run and links to it in Prefect's UI
    [record] = await run_records(store, namespace)
    assert record.properties["graph"] == "text-stats"
    ui = prefect_api.api_url.removesuffix("/api")
    assert record.properties["annotations"] == {
        "prefect_flow_run_id": str(subflow.id),
        "prefect_flow_run_url": f"{ui}/runs/flow-run/{subflow.id}",
    }

    # the report: the outputs table and the link back, then the diagram
    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["graph-run-text-stats"]))
        )
    [report] = [artifact for artifact in artifacts if artifact.flow_run_id == subflow.id]
    content = str(report.data)
    assert f"| `total_words` | {words} |" in content and "| `rounds` | 3 |" in content
    run_page = f"{UI_URL}/runs/{record.properties['run_id']}?namespace={namespace}"
    assert f"]({run_page})" in content
    assert content.index("## Outputs") < content.index("```mermaid")


async def test_a_question_about_a_book_not_indexed_fails_the_flow_run_at_once_without_a_retried_subflow(
    prefect_api: PrefectServer, worker: tuple[Worker, Path], namespace: str
) -> None:
    runner, store = worker
    parameters = {"graph": "comorag-qa", "input": {"book_id": "no-such-book", "question": "Who?"}, "namespace": namespace}
    flow_run = await arun_deployment("run_graph/text-stats", parameters=parameters, timeout=0)
    finished = await wait_final(flow_run.id, [runner])
    assert finished.state is not None and finished.state.is_failed(), logs([runner])
    assert f"book 'no-such-book' is not indexed in namespace {namespace!r}" in str(finished.state.message)
    async with get_client() as client:  # the graph's run retries (2 attempts, 10 s apart) never start
        subflows = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run.id]))
        )
    assert subflows == []
    async with get_client() as client:  # the failure, published as the run's report
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["graph-run-comorag-qa"]))
        )
    [report] = [artifact for artifact in artifacts if artifact.flow_run_id == flow_run.id]
    assert "# comorag-qa: failed\n\nfailed before its first step" in str(report.data)
    assert "book 'no-such-book' is not indexed" in str(report.data)


async def test_a_run_rescheduled_more_often_than_allowed_ends_failed_without_running_the_graph(
    prefect_api: PrefectServer, worker: tuple[Worker, Path], namespace: str
) -> None:
    """Two attempts of the run died and the automation rescheduled it twice (the states it sets, set here), more
    than the run's MNEMOFLOW_PREFECT_MAX_RESCHEDULES=1: the worker that takes it ends it Failed, running nothing."""
    runner, store = worker
    job = {"env": {"MNEMOFLOW_PREFECT_MAX_RESCHEDULES": "1"}}
    later = datetime.now(UTC) + timedelta(days=1)  # no worker takes it before its history is written
    async with get_client() as client:
        deployment = await client.read_deployment_by_name("run_graph/text-stats")
        flow_run = await client.create_flow_run_from_deployment(
            deployment.id,
            parameters={"input": {"text": TEXT}, "namespace": namespace},
            job_variables=job,
            state=Scheduled(scheduled_time=later),
        )
        for scheduled in (later, datetime.now(UTC)):
            await client.set_flow_run_state(flow_run.id, Running(), force=True)
            rescheduled = AwaitingRetry(scheduled_time=scheduled, message=f"no heartbeat for 45 s: {RESCHEDULED}")
            await client.set_flow_run_state(flow_run.id, rescheduled, force=True)
    finished = await wait_final(flow_run.id, [runner])
    assert finished.state is not None and finished.state.is_failed(), logs([runner])
    expected = "rescheduled 2 times after its worker died, more than MNEMOFLOW_PREFECT_MAX_RESCHEDULES=1 allows"
    assert expected in str(finished.state.message) and finished.run_count == 3
    async with get_client() as client:
        subflows = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run.id]))
        )
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["graph-run-text-stats"]))
        )
    assert subflows == []  # the graph did not run again
    [report] = [artifact for artifact in artifacts if artifact.flow_run_id == flow_run.id]
    assert expected in str(report.data) and f"Thread {flow_run.id} keeps its last checkpoint" in str(report.data)
    assert await run_records(store, namespace) == []
