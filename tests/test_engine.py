"""The engine's contract with nodes: declared writes and outcomes, retries, timeouts; random graphs compile."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tests.support.testing_nodes  # noqa: F401  (registers testing.*)
from mnemoflow.errors import NodeError
from mnemoflow.graphs import GraphRunner, compile_graph, load_graph, run_graph, to_mermaid
from mnemoflow.memory import SQLiteStore
from mnemoflow.memory.checkpoints import open_checkpointer
from mnemoflow.settings import Settings, StoreSettings
from tests.conftest import EMBEDDER, offline_llm


@pytest.fixture
async def sqlite_run(tmp_path: Path):  # type: ignore[no-untyped-def]
    store = SQLiteStore(tmp_path / "memory.db", embedding_model=EMBEDDER.model, embedding_dimension=EMBEDDER.dimension)
    await store.setup()
    configured = Settings(store=StoreSettings(sqlite_path=tmp_path / "memory.db"))

    async def run(body: str, thread: str = "t1"):  # type: ignore[no-untyped-def]
        path = tmp_path / "graph.yaml"
        path.write_text(f"name: probe\nstate: text.TextState\ninput: [text]\n{body}")
        async with open_checkpointer(configured) as checkpointer:
            return await run_graph(
                load_graph(path), {"text": "a b."}, store=store, embedder=EMBEDDER, llm=offline_llm(), settings=configured,
                checkpointer=checkpointer, namespace="engine", thread_id=thread,
            )

    yield run
    await store.close()


LINEAR = "nodes:\n  only: {{use: {use}{extra}}}\nedges:\n  - {{from: START, to: only}}\n  - {{from: only, to: END}}\n"


async def test_undeclared_write_fails_the_node(sqlite_run) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(NodeError, match=r"'only' \(testing.writes_undeclared\) wrote \['total_words'\]"):
        await sqlite_run(LINEAR.format(use="testing.writes_undeclared", extra=""))


async def test_undeclared_outcome_fails_the_route(sqlite_run) -> None:  # type: ignore[no-untyped-def]
    body = (
        "nodes:\n  a: {use: testing.noop}\n  b: {use: testing.noop}\nedges:\n  - {from: START, to: a}\n  - {from: b, to: END}\n"
        "routes:\n  - {from: a, router: testing.bad_router, outcomes: {left: b, right: END}}\n"
    )
    with pytest.raises(NodeError, match="returned 'straight'"):
        await sqlite_run(body)


async def test_retry_from_the_graph_file(sqlite_run) -> None:  # type: ignore[no-untyped-def]
    retried = LINEAR.format(use="testing.flaky", extra=", with: {failures: 2}, retry: {max_attempts: 3, initial_interval: 0.01, jitter: false}")
    result = await sqlite_run(retried, thread="retry-ok")
    assert result.state["notes"] == ["flaky succeeded"]
    assert [event["event"] for event in result.trace] == ["error", "error", "end"]
    assert "flaky failure, 1 left" in result.trace[0]["error"]
    with pytest.raises(RuntimeError, match="flaky failure"):
        await sqlite_run(LINEAR.format(use="testing.flaky", extra=", with: {failures: 1}"), thread="no-retry")


async def test_timeout_from_the_graph_file(sqlite_run) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(NodeError, match=r"node 'only' of probe timed out after 0.2 s"):
        await sqlite_run(LINEAR.format(use="testing.slow", extra=", timeout: 0.2"))


@st.composite
def graph_files(draw: st.DrawFn) -> dict[str, object]:
    """A valid graph: a chain from START to END, extra forward edges as parallel branches, optional loops."""
    count = draw(st.integers(1, 8))
    names = [f"n{index}" for index in range(count)]
    nodes: dict[str, object] = {name: {"use": "testing.noop"} for name in names}
    edges = [{"from": "START", "to": names[0]}]
    routes = []
    for index, name in enumerate(names):
        following = names[index + 1] if index + 1 < count else "END"
        if draw(st.booleans()) and index > 0:
            back = names[draw(st.integers(0, index))]
            nodes[name] = {"use": "text.note_round"}
            routes.append({"from": name, "router": "testing.counter", "outcomes": {"again": back, "done": following}})
        else:
            edges.append({"from": name, "to": following})
            later = names[index + 2 :] + ["END"]
            if draw(st.booleans()) and later:
                edges.append({"from": name, "to": draw(st.sampled_from(later))})
    return {"name": "generated", "state": "text.TextState", "input": ["text"], "max_steps": 500, "nodes": nodes, "edges": edges, "routes": routes}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=graph_files())
def test_random_valid_graphs_compile_and_render(tmp_path: Path, document: dict[str, object]) -> None:
    path = tmp_path / "generated.yaml"
    path.write_text(yaml.safe_dump(document))
    graph = load_graph(path)
    compiled = compile_graph(graph)
    assert set(compiled.get_graph().nodes) >= set(graph.spec.nodes)
    rendering = to_mermaid(graph)
    assert rendering.startswith("flowchart TD") and all(f"n_{name}[" in rendering for name in graph.spec.nodes)


async def test_runner_writes_run_records_in_batches_and_on_close(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "memory.db", embedding_model=EMBEDDER.model, embedding_dimension=EMBEDDER.dimension)
    await store.setup()
    configured = Settings(store=StoreSettings(sqlite_path=tmp_path / "memory.db"))
    path = tmp_path / "graph.yaml"
    path.write_text("name: probe\nstate: text.TextState\ninput: [text]\n" + LINEAR.format(use="testing.noop", extra=""))
    failing = tmp_path / "failing.yaml"
    failing.write_text("name: failing\nstate: text.TextState\ninput: [text]\n" + LINEAR.format(use="testing.writes_undeclared", extra=""))
    try:
        async with GraphRunner(load_graph(path), store=store, embedder=EMBEDDER, llm=offline_llm(), settings=configured, checkpointer=None, trace_batch=3) as runner:
            for _ in range(2):
                await runner.run({"text": "x."}, namespace="batches")
            assert await store.count_nodes("batches", "Run") == 0
            await runner.run({"text": "x."}, namespace="batches")
            assert await store.count_nodes("batches", "Run") == 3
            await runner.run({"text": "x."}, namespace="batches")
        assert await store.count_nodes("batches", "Run") == 4  # the rest when the runner closes
        failing_runner = GraphRunner(load_graph(failing), store=store, embedder=EMBEDDER, llm=offline_llm(), settings=configured, checkpointer=None)
        with pytest.raises(NodeError):
            await failing_runner.run({"text": "x."}, namespace="batches")
        assert await store.count_nodes("batches", "Run") == 5  # a failed run's record at once
    finally:
        await store.close()


async def test_a_live_run_shows_its_steps_while_it_runs_and_ends_completed(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "memory.db", embedding_model=EMBEDDER.model, embedding_dimension=EMBEDDER.dimension)
    await store.setup()
    configured = Settings(store=StoreSettings(sqlite_path=tmp_path / "memory.db"))
    gate = tmp_path / "gate"
    path = tmp_path / "held.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "held",
                "state": "text.TextState",
                "input": ["text"],
                "nodes": {"first": {"use": "testing.noop"}, "hold": {"use": "testing.wait_for_file", "with": {"path": str(gate)}}},
                "edges": [{"from": "START", "to": "first"}, {"from": "first", "to": "hold"}, {"from": "hold", "to": "END"}],
            }
        )
    )

    async def records() -> list[dict[str, object]]:
        return [node.properties for node in await store.list_nodes("live", kind="Run")]

    try:
        async with GraphRunner(
            load_graph(path), store=store, embedder=EMBEDDER, llm=offline_llm(), settings=configured, checkpointer=None, live_interval=0.05
        ) as runner:
            running = asyncio.create_task(runner.run({"text": "x."}, namespace="live"))
            while not Path(str(gate) + ".started").exists():
                await asyncio.sleep(0.05)
            while not (seen := await records()) or not seen[0]["events"]:
                await asyncio.sleep(0.05)
            [live] = seen
            assert live["status"] == "running" and [event["node"] for event in live["events"]] == ["first"]  # type: ignore[union-attr]
            gate.touch()
            result = await running
        [final] = await records()
        assert final["status"] == "completed" and final["run_id"] == result.run_id
        assert [event["node"] for event in final["events"]] == ["first", "hold"]  # type: ignore[union-attr]
    finally:
        await store.close()


async def test_lines_logged_inside_a_node_name_the_run_and_the_node(tmp_path: Path) -> None:
    import io
    import json

    import structlog

    from mnemoflow.logging import configure_logging, get_logger
    from mnemoflow.nodes import NoConfig, node
    from mnemoflow.nodes.text import TextState
    from mnemoflow.settings import LogSettings

    @node("testing.logs_a_line", state=TextState, reads=set(), writes=set())
    async def logs_a_line(state: TextState, config: NoConfig, context: object) -> dict[str, object]:
        """Log one line from inside the node."""
        get_logger("inside").info("hello")
        return {}

    stream = io.StringIO()
    configure_logging(LogSettings(format="json", level="info"), stream=stream, force=True)
    try:
        store = SQLiteStore(tmp_path / "memory.db", embedding_model=EMBEDDER.model, embedding_dimension=EMBEDDER.dimension)
        await store.setup()
        path = tmp_path / "graph.yaml"
        path.write_text("name: probe\nstate: text.TextState\ninput: [text]\n" + LINEAR.format(use="testing.logs_a_line", extra=""))
        configured = Settings(store=StoreSettings(sqlite_path=tmp_path / "memory.db"))
        result = await run_graph(
            load_graph(path), {"text": "x"}, store=store, embedder=EMBEDDER, llm=offline_llm(), settings=configured,
            checkpointer=None, namespace="logs",
        )
        await store.close()
    finally:
        structlog.reset_defaults()
        configure_logging(LogSettings(), force=True)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    [inside] = [line for line in lines if line["event"] == "hello"]
    assert (inside["namespace"], inside["run_id"], inside["node"]) == ("logs", result.run_id, "only")
    [end] = [line for line in lines if line["event"] == "run.end"]
    assert end["run_id"] == result.run_id and "node" not in end
