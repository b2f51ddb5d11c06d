"""A thread's checkpoints, resuming a failed thread, and forking a thread at a checkpoint with edited state, on both
checkpointers (SQLite and Neo4j)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from mnemoflow.errors import ConfigError
from mnemoflow.graphs import ForkOrigin, GraphRunner, edit_problems, fork_thread, load_graph, thread_checkpoints
from mnemoflow.memory.checkpoints import open_checkpointer
from mnemoflow.memory.protocol import GraphStore
from tests.conftest import EMBEDDER, offline_llm, settings_of
from tests.support import testing_nodes  # registers testing.*

TEXT = "The sea was calm that night. A ship came close to the reef! Its crew saw the light and turned. All were saved."
FLAKY_PIPELINE = """\
name: flaky-pipeline
state: text.TextState
input: [text]
nodes:
  split: {use: text.split_sentences}
  flaky: {use: testing.flaky, with: {failures: 1}}
  remember: {use: text.remember_sentences}
edges:
  - {from: START, to: split}
  - {from: split, to: flaky}
  - {from: flaky, to: remember}
  - {from: remember, to: END}
"""
HELD_PIPELINE = """\
name: held-pipeline
state: text.TextState
input: [text]
nodes:
  split: {use: text.split_sentences}
  hold: {use: testing.wait_for_file, with: {path: "%s"}}
  remember: {use: text.remember_sentences}
edges:
  - {from: START, to: split}
  - {from: split, to: hold}
  - {from: hold, to: remember}
  - {from: remember, to: END}
"""

OpenRunner = Callable[[str | Path], AbstractAsyncContextManager[GraphRunner]]


@pytest.fixture
def open_runner(store: GraphStore, tmp_path: Path, request: pytest.FixtureRequest) -> OpenRunner:
    """Opens a runner of a graph on the store's backend, with that backend's checkpointer."""
    settings = settings_of(store, tmp_path, request)

    @asynccontextmanager
    async def opened(graph: str | Path) -> AsyncIterator[GraphRunner]:
        async with open_checkpointer(settings) as checkpointer, GraphRunner(
            load_graph(graph), store=store, embedder=EMBEDDER, llm=offline_llm(), settings=settings, checkpointer=checkpointer
        ) as runner:  # fmt: skip
            yield runner

    return opened


async def test_a_finished_runs_checkpoints_list_its_steps_in_order(open_runner: OpenRunner) -> None:
    async with open_runner("text-stats") as runner:
        result = await runner.run({"text": TEXT}, namespace="threads", thread_id="stats")
        views = await thread_checkpoints(runner, "stats")
        assert not await runner.resumable("stats")
        assert await thread_checkpoints(runner, "no-such-thread") == []
    assert [view.step for view in views] == list(range(-1, 8))
    assert [view.source for view in views] == ["input"] + ["loop"] * 8
    assert [view.after for view in views] == [
        ("input",), ("START",), ("split",), ("count",), ("total",), ("note",), ("note",), ("note",), ("remember",)
    ]  # fmt: skip
    assert [view.next for view in views] == [
        ("START",), ("split",), ("count",) * 4, ("total",), ("note",), ("note",), ("note",), ("remember",), ()
    ]  # fmt: skip
    assert [view.parent_id for view in views] == [None] + [view.checkpoint_id for view in views[:-1]]
    assert "text" not in views[0].values and views[1].values["text"] == TEXT
    assert [view.values.get("rounds", 0) for view in views[4:]] == [0, 1, 2, 3, 3]
    assert {name: views[-1].values[name] for name in result.outputs} == result.outputs
    assert all(view.created_at and view.forked_from is None and view.edited == () for view in views)


async def test_a_fork_at_a_middle_step_runs_on_with_the_edited_field_and_leaves_its_source_alone(open_runner: OpenRunner) -> None:
    async with open_runner("text-stats") as runner:
        source = await runner.run({"text": TEXT}, namespace="threads", thread_id="source")
        before = await thread_checkpoints(runner, "source")
        first_note = before[5]  # after the first 'note': one round done, two to go
        assert first_note.after == ("note",) and first_note.values["rounds"] == 1

        fork = await fork_thread(runner, "source", first_note.checkpoint_id, {"total_words": 100}, new_thread_id="edited")
        assert fork == "edited" and await runner.resumable("edited")
        forked = await thread_checkpoints(runner, "edited")
        result = await runner.run(None, namespace="threads", thread_id="edited")

        after = await thread_checkpoints(runner, "source")
        state = await runner.compiled.aget_state({"configurable": {"thread_id": "source"}})

    assert result.resumed and result.steps == ["note", "note", "remember"]
    assert result.outputs["notes"] == ["round 1: 23 words", "round 2: 100 words", "round 3: 100 words"]
    assert result.outputs["total_words"] == 100 and source.outputs["total_words"] == 23
    # the fork is the source's history up to the checkpoint, then the edit, written as the node that made it
    assert [view.checkpoint_id for view in forked[:6]] == [view.checkpoint_id for view in before[:6]]
    edit = forked[6]
    assert (edit.source, edit.step, edit.after, edit.next, edit.edited) == ("update", 5, ("note",), ("note",), ("total_words",))
    assert edit.forked_from == ForkOrigin("source", first_note.checkpoint_id) and edit.parent_id == first_note.checkpoint_id
    assert edit.values["total_words"] == 100 and edit.values["rounds"] == 1
    # the source thread is unchanged
    assert after == before
    assert {name: state.values[name] for name in source.outputs} == source.outputs


async def test_a_fork_reroutes_and_fans_out_again_on_the_edited_values(open_runner: OpenRunner) -> None:
    async with open_runner("text-stats") as runner:
        await runner.run({"text": TEXT}, namespace="threads", thread_id="stats")
        views = await thread_checkpoints(runner, "stats")

        # the loop's router decides again: three rounds are done, so 'note' is not run again; "3" is read as 3
        await fork_thread(runner, "stats", views[5].checkpoint_id, {"rounds": "3"}, new_thread_id="rerouted")
        edit = (await thread_checkpoints(runner, "rerouted"))[-1]
        assert edit.next == ("remember",) and edit.values["rounds"] == 3
        rerouted = await runner.run(None, namespace="threads", thread_id="rerouted")

        # the fan-out sends again: one 'count' per edited sentence; a list with a reducer is replaced, not appended to
        sentences = {"sentences": ["One two three.", "Four."]}
        await fork_thread(runner, "stats", views[2].checkpoint_id, sentences, new_thread_id="fanned")
        fanned = await runner.run(None, namespace="threads", thread_id="fanned")
        await fork_thread(runner, "stats", views[3].checkpoint_id, {"word_counts": [1, 2]}, new_thread_id="recounted")
        recounted = await runner.run(None, namespace="threads", thread_id="recounted")

        # a fork of a fork's edit checkpoint edits again as the same node
        await fork_thread(runner, "rerouted", edit.checkpoint_id, {"rounds": 0}, new_thread_id="again")
        again = await runner.run(None, namespace="threads", thread_id="again")

    assert rerouted.steps == ["remember"] and rerouted.outputs["notes"] == ["round 1: 23 words"]
    assert fanned.steps[:3] == ["count", "count", "total"] and fanned.state["word_counts"] == [3, 1]
    assert fanned.outputs["total_words"] == 4
    assert recounted.steps[0] == "total" and recounted.state["word_counts"] == [1, 2] and recounted.outputs["total_words"] == 3
    assert again.steps == ["note", "note", "note", "remember"] and again.outputs["rounds"] == 3


async def test_edits_that_route_to_the_end_and_the_final_checkpoint_are_refused(open_runner: OpenRunner) -> None:
    async with open_runner("text-pipeline") as runner:
        await runner.run({"text": TEXT}, namespace="threads", thread_id="pipeline")
        views = await thread_checkpoints(runner, "pipeline")
        assert views[2].after == ("split",) and views[2].next == ("remember",)

        with pytest.raises(ConfigError, match=r"with these edits nothing runs after checkpoint .* \(step 1\)"):
            await fork_thread(runner, "pipeline", views[2].checkpoint_id, {"sentences": []}, new_thread_id="empty")
        with pytest.raises(ConfigError, match=r"is where its run ended: nothing runs after it; fork an earlier step"):
            await fork_thread(runner, "pipeline", views[-1].checkpoint_id, {}, new_thread_id="final")
        with pytest.raises(ConfigError, match=r"holds a run's input before START ran; fork the checkpoint after START \(step 0"):
            await fork_thread(runner, "pipeline", views[0].checkpoint_id, {"text": "Other."}, new_thread_id="input")
        assert await thread_checkpoints(runner, "empty") == [] and await thread_checkpoints(runner, "final") == []

        # a fork of the step before the last runs that last step again, without edits too
        await fork_thread(runner, "pipeline", views[-2].checkpoint_id, {}, new_thread_id="last-step")
        last = await runner.run(None, namespace="threads", thread_id="last-step")
    assert {step.split("/")[0] for step in last.steps} == {"stats"} and last.outputs["sentences"] == views[-1].values["sentences"]


async def test_bad_edits_unknown_checkpoints_and_taken_thread_ids_are_refused(open_runner: OpenRunner) -> None:
    async with open_runner("text-stats") as runner:
        await runner.run({"text": TEXT}, namespace="threads", thread_id="stats")
        middle = (await thread_checkpoints(runner, "stats"))[4].checkpoint_id

        bad = {"totl_words": 3, "rounds": "many", "notes": ["ok", 7]}
        with pytest.raises(ConfigError) as refused:
            await fork_thread(runner, "stats", middle, bad, new_thread_id="bad")
        message = str(refused.value)
        assert "totl_words: not a field of text.TextState (did you mean 'total_words'?)" in message
        assert "rounds: Input should be a valid integer" in message
        assert "notes: at 1: Input should be a valid string" in message
        assert [field for field, _ in edit_problems(runner.graph, bad)] == ["totl_words", "rounds", "notes"]
        assert edit_problems(runner.graph, {"rounds": 2, "notes": []}) == []

        with pytest.raises(ConfigError, match=r"thread 'stats' of text-stats has no checkpoint 'no-such-checkpoint'"):
            await fork_thread(runner, "stats", "no-such-checkpoint", {}, new_thread_id="bad")
        with pytest.raises(ConfigError, match=r"no thread 'no-such-thread' of text-stats has checkpoints"):
            await fork_thread(runner, "no-such-thread", middle, {}, new_thread_id="bad")
        with pytest.raises(ConfigError, match=r"thread 'stats' already exists"):
            await fork_thread(runner, "stats", middle, {}, new_thread_id="stats")
        assert await thread_checkpoints(runner, "bad") == []

    async with open_runner("text-pipeline") as other:
        await other.run({"text": TEXT}, namespace="threads", thread_id="pipeline")
        pipeline_end = (await thread_checkpoints(other, "pipeline"))[-1].checkpoint_id
    async with open_runner("text-stats") as runner:
        foreign = r"'pipeline' is not a thread of text-stats: its state has branch:to:stats, branch:to:wait"
        with pytest.raises(ConfigError, match=foreign):
            await fork_thread(runner, "pipeline", pipeline_end, {}, new_thread_id="bad")


async def test_a_failed_run_is_resumable_and_resumes_from_its_last_checkpoint(open_runner: OpenRunner, tmp_path: Path) -> None:
    graph = tmp_path / "flaky-pipeline.yaml"
    graph.write_text(FLAKY_PIPELINE)
    thread = "flaky"
    testing_nodes.FAILURES.pop(thread, None)  # its one failure is counted per thread id
    async with open_runner(graph) as runner:
        with pytest.raises(RuntimeError, match="flaky failure"):
            await runner.run({"text": TEXT}, namespace="threads", thread_id=thread)
        assert await runner.resumable(thread)
        stopped = await thread_checkpoints(runner, thread)
        resumed = await runner.run(None, namespace="threads", thread_id=thread)
        assert not await runner.resumable(thread)
    assert stopped[-1].after == ("split",) and stopped[-1].next == ("flaky",)
    assert resumed.resumed and resumed.steps == ["flaky", "remember"]
    assert resumed.state["notes"] == ["flaky succeeded"] and len(resumed.state["stored"]) == 4


async def test_a_run_cancelled_mid_step_is_resumable_and_resumes_at_that_step(
    open_runner: OpenRunner, store: GraphStore, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    graph = tmp_path / "held-pipeline.yaml"
    graph.write_text(HELD_PIPELINE % release)
    async with open_runner(graph) as runner:
        running = asyncio.create_task(runner.run({"text": TEXT}, namespace="threads", thread_id="held"))
        deadline = time.monotonic() + 60
        while not Path(f"{release}.started").exists():
            assert time.monotonic() < deadline and not running.done(), "the run never reached its held step"
            await asyncio.sleep(0.05)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        assert await runner.resumable("held")
        stopped = await thread_checkpoints(runner, "held")
        release.touch()
        resumed = await runner.run(None, namespace="threads", thread_id="held")
    assert stopped[-1].after == ("split",) and stopped[-1].next == ("hold",)
    assert resumed.resumed and resumed.steps == ["hold", "remember"] and len(resumed.state["stored"]) == 4
    # the cancelled run's record names the run that resumed its thread, and that run's record names it
    records = {
        node.properties["status"]: node.properties
        for node in await store.list_nodes("threads", kind="Run", where={"thread_id": "held"})
    }
    assert sorted(records) == ["completed", "interrupted"]
    cancelled, resumer = records["interrupted"], records["completed"]
    assert cancelled["resumed_by"] == resumed.run_id and resumer["resumes"] == [cancelled["run_id"]]
    assert cancelled["settled_reason"] == "cut off by a cancel or Ctrl-C" and cancelled["error"] == "interrupted"


async def test_without_a_checkpointer_nothing_is_kept_to_list_resume_or_fork(
    store: GraphStore, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    settings = settings_of(store, tmp_path, request)
    graph = load_graph("text-stats")
    runner = GraphRunner(graph, store=store, embedder=EMBEDDER, llm=offline_llm(), settings=settings, checkpointer=None)
    assert not await runner.resumable("any")
    with pytest.raises(ConfigError, match="has no checkpointer"):
        await thread_checkpoints(runner, "any")
    with pytest.raises(ConfigError, match="has no checkpointer"):
        await fork_thread(runner, "any", "checkpoint", {})
