"""A run killed part-way (SIGKILL, a real process) resumes on its thread without redoing finished steps."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from mnemoflow.graphs import GraphRunner, load_graph
from mnemoflow.memory.protocol import GraphStore
from tests.conftest import EMBEDDER, cli_environment, new_store, offline_llm, settings_for

MNEMOFLOW = str(Path(sys.executable).with_name("mnemoflow"))
TEXT = "The sea was calm that night. A ship came close to the reef! Its crew saw the light and turned. All were saved."
SLOW_PIPELINE = """\
name: slow-pipeline
state: text.TextState
input: [text]
max_steps: 80
nodes:
  split: {use: text.split_sentences}
  remember: {use: text.remember_sentences}
  wait: {use: text.pause, with: {seconds: 4}}
  stats: {graph: text-stats}
edges:
  - {from: START, to: split}
  - {from: split, to: remember}
  - {from: remember, to: wait}
  - {from: wait, to: stats}
  - {from: stats, to: END}
"""


async def wait_for(condition, timeout: float = 90.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "the run never reached the expected step"
        await asyncio.sleep(0.1)


@pytest.mark.subprocess
@pytest.mark.slow
async def test_killed_run_resumes_on_its_thread(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    graph = tmp_path / "slow-pipeline.yaml"
    graph.write_text(SLOW_PIPELINE)
    uri = request.getfixturevalue("empty_neo4j") if backend == "neo4j" else None
    environment = cli_environment(backend, tmp_path, namespace="resume", neo4j_uri=uri)
    command = [MNEMOFLOW, "run", str(graph), "--input", json.dumps({"text": TEXT}), "--thread", "killed-thread", "--json"]

    store: GraphStore = new_store(backend, neo4j_uri=uri, sqlite_path=tmp_path / "memory.db")
    first = subprocess.Popen(command, env=environment, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:

        async def remembered() -> bool:
            assert first.poll() is None, first.communicate()[1]
            try:
                await store.setup()
                return await store.count_nodes("resume", "Chunk") == 4
            except Exception:  # the run may not have created the store yet
                return False

        await wait_for(remembered)
        await asyncio.sleep(1.0)  # well inside the 4-second pause
        assert first.poll() is None, "the run ended before it could be killed"
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        assert first.returncode == -signal.SIGKILL

        second = subprocess.run(command, env=environment, cwd=tmp_path, capture_output=True, text=True, timeout=180)
        assert second.returncode == 0, second.stderr
        state = json.loads(second.stdout)
        assert state["total_words"] == 23 and state["word_counts"] == [6, 7, 7, 3]
        assert "completed, resumed in" in second.stderr

        records = [hit.node for hit in await store.keyword_search("resume", "slow-pipeline", kinds=["Run"])]
        assert sorted(record.properties["status"] for record in records) == ["completed", "interrupted"]  # settled
        [trace] = [record for record in records if record.properties["status"] == "completed"]
        [killed] = [record.properties for record in records if record.properties["status"] == "interrupted"]
        assert killed["resumed_by"] == trace.properties["run_id"] and trace.properties["resumes"] == [killed["run_id"]]
        assert f"process {killed['process']['pid']}" in killed["settled_reason"] and killed["settled_at"] >= killed["recorded_at"]
        assert killed["input"] == {"text": TEXT} and killed["graph"] == "slow-pipeline"  # what it recorded stays
        steps = [event["node"] for event in trace.properties["events"] if event["event"] == "end"]
        assert trace.properties["resumed"] is True
        assert steps[0] == "wait" and "split" not in steps and "remember" not in steps
        assert "stats/remember" in steps
        assert await store.count_nodes("resume", "Chunk") == 4
        assert await store.count_relationships("resume", "NEXT") == 3
    finally:
        if first.poll() is None:
            first.kill()
        await store.close()


class KeepsOnlyFirstCheckpoints(InMemorySaver):
    """Saves the first ``keep`` checkpoints and drops the rest, but keeps every task's writes: what a process killed
    after a node's writes were saved, before the next checkpoint was (they are saved while the next step runs),
    leaves behind."""

    def __init__(self, keep: int) -> None:
        super().__init__()
        self.keep = keep
        self.saved = 0

    async def aput(self, config: Any, checkpoint: Any, metadata: Any, new_versions: Any) -> Any:
        if self.saved < self.keep:
            self.saved += 1
            return await super().aput(config, checkpoint, metadata, new_versions)
        ns = config["configurable"].get("checkpoint_ns", "")
        return {
            "configurable": {
                "thread_id": config["configurable"]["thread_id"],
                "checkpoint_ns": ns,
                "checkpoint_id": checkpoint["id"],
            }
        }


async def test_a_run_whose_last_nodes_saved_their_writes_but_no_checkpoint_resumes(tmp_path: Path) -> None:
    saver = KeepsOnlyFirstCheckpoints(keep=3)  # the input, START, and split's checkpoint, whose counts then ran
    store = new_store("sqlite", sqlite_path=tmp_path / "memory.db")
    await store.setup()
    try:
        async with GraphRunner(
            load_graph("text-stats"), store=store, embedder=EMBEDDER, llm=offline_llm(),
            settings=settings_for("sqlite", sqlite_path=tmp_path / "memory.db"), checkpointer=saver,
        ) as runner:  # fmt: skip
            await runner.run({"text": TEXT}, namespace="resume", thread_id="cut")
            snapshot = await runner.compiled.aget_state({"configurable": {"thread_id": "cut"}})
            assert snapshot.next == () and {task.name for task in snapshot.tasks} == {"count"}  # looks finished
            second = await runner.run({"text": "Something else entirely."}, namespace="resume", thread_id="cut")
        assert second.resumed and second.state["total_words"] == 23
        assert second.steps[0] == "total" and "count" not in second.steps and "split" not in second.steps
    finally:
        await store.close()
