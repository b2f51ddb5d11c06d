"""LangGraph checkpointers: the conformance suite on both backends, and a graph that runs on each."""

from __future__ import annotations

import itertools
import operator
import socket
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.report import CapabilityReport
from langgraph.graph import END, START, StateGraph
from neo4j import AsyncGraphDatabase

from mnemoflow.errors import StoreUnavailableError
from mnemoflow.memory.checkpoints import open_checkpointer
from mnemoflow.memory.neo4j.checkpoints import Neo4jCheckpointSaver
from tests.conftest import neo4j_auth, settings_for


async def wipe_checkpoints(uri: str) -> None:
    async with AsyncGraphDatabase.driver(uri, auth=neo4j_auth()) as driver:
        await driver.execute_query("MATCH (n:MfCheckpoint|MfCheckpointWrite) DETACH DELETE n")


def assert_conforms(report: CapabilityReport) -> None:
    report.print_report()
    failures = {name: result.failures for name, result in report.results.items() if result.failures}
    assert report.passed_all_base(), failures
    assert report.passed_all(), failures  # every extended capability the saver implements passes too


# -- conformance ----------------------------------------------------------------------------------------


@pytest.mark.neo4j
@pytest.mark.slow
async def test_neo4j_saver_conforms(empty_neo4j: str) -> None:
    @checkpointer_test(name="Neo4jCheckpointSaver")
    async def neo4j_saver() -> AsyncGenerator[BaseCheckpointSaver[str], None]:
        await wipe_checkpoints(empty_neo4j)
        async with Neo4jCheckpointSaver(empty_neo4j, auth=neo4j_auth()) as saver:
            yield saver

    report = await validate(neo4j_saver)
    assert_conforms(report)
    assert {name for name, result in report.results.items() if result.detected} == {
        "put", "put_writes", "get_tuple", "list", "delete_thread", "delete_for_runs", "copy_thread", "prune"
    }


async def test_sqlite_checkpointer_conforms(tmp_path: Path) -> None:
    runs = itertools.count()

    @checkpointer_test(name="AsyncSqliteSaver (open_checkpointer)")
    async def sqlite_saver() -> AsyncGenerator[BaseCheckpointSaver[str], None]:
        settings = settings_for("sqlite", sqlite_path=tmp_path / f"run-{next(runs)}" / "memory.db")
        async with open_checkpointer(settings) as saver:
            yield saver

    report = await validate(sqlite_saver)
    assert_conforms(report)
    assert (tmp_path / "run-0" / "checkpoints.db").is_file()


def metadata_for(index: int) -> dict[str, Any]:
    """Metadata whose values exercise the filter's type rules (bools, floats, nulls, nested objects)."""
    metadata: dict[str, Any] = {
        "source": ["input", "loop", "update"][index % 3],
        "step": index % 4,
        "parents": {} if index % 2 else {"": f"parent-{index}"},
        "flag": index % 2 == 0,
        "nested": {"a": index % 3, "b": [1, 2]},
        "label": str(index % 4),
    }
    if index % 5 == 0:
        metadata["maybe"] = None
    elif index % 5 == 1:
        metadata["maybe"] = "set"
    return metadata


@pytest.mark.neo4j
@pytest.mark.slow
async def test_neo4j_list_matches_sqlite(empty_neo4j: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same checkpoints in both savers: every filter, cursor and limit lists the same ids, across pages."""
    from langgraph.checkpoint.conformance.test_utils import generate_checkpoint

    from mnemoflow.memory.neo4j import checkpoints

    monkeypatch.setattr(checkpoints, "PAGE_SIZE", 3)
    filters: list[dict[str, Any] | None] = [
        None,
        {"source": "input"},
        {"step": 1},
        {"step": 1.0},
        {"step": "1"},
        {"label": "1"},
        {"flag": True},
        {"flag": 0},
        {"maybe": None},
        {"absent": None},
        {"maybe": "set", "source": "loop"},
        {"nested": {"a": 2, "b": [1, 2]}},
        {"nested.a": 2},
        {"parents": {}},
        {"parents": {"": "parent-4"}},
        {"source": "nothing"},
    ]
    sqlite_settings = settings_for("sqlite", sqlite_path=tmp_path / "memory.db")
    async with open_checkpointer(sqlite_settings) as sqlite_saver, Neo4jCheckpointSaver(
        empty_neo4j, auth=neo4j_auth()
    ) as neo4j_saver:
        ids: list[str] = []
        for index in range(20):
            thread_id, checkpoint_ns = f"thread-{index % 2}", "" if index % 3 else "child:1"
            checkpoint = generate_checkpoint()
            ids.append(checkpoint["id"])
            config: Any = {"configurable": {"thread_id": thread_id, "checkpoint_ns": checkpoint_ns}}
            for saver in (sqlite_saver, neo4j_saver):
                await saver.aput(config, checkpoint, metadata_for(index), {})  # type: ignore[arg-type]

        async def listed(saver: BaseCheckpointSaver[str], config: Any, **options: Any) -> list[tuple[str, str, str]]:
            return [
                (tup.config["configurable"]["thread_id"], tup.config["configurable"]["checkpoint_ns"], tup.checkpoint["id"])
                async for tup in saver.alist(config, **options)
            ]

        configs: list[Any] = [
            None,
            {"configurable": {"thread_id": "thread-0"}},
            {"configurable": {"thread_id": "thread-1", "checkpoint_ns": ""}},
        ]
        compared = 0
        for config in configs:
            for filter in filters:
                for before, limit in [(None, None), (ids[12], None), (None, 4), (ids[15], 2)]:
                    options = {
                        "filter": filter,
                        "before": None if before is None else {"configurable": {"thread_id": "x", "checkpoint_id": before}},
                        "limit": limit,
                    }
                    expected = await listed(sqlite_saver, config, **options)
                    assert await listed(neo4j_saver, config, **options) == expected, (config, options)
                    compared += bool(expected)
        assert compared > 100


async def test_unreachable_neo4j_names_the_setting_and_address() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    saver = Neo4jCheckpointSaver(f"bolt://127.0.0.1:{port}", max_transaction_retry_time=1.0, connection_timeout=2.0)
    try:
        with pytest.raises(StoreUnavailableError) as caught:
            await saver.aget_tuple({"configurable": {"thread_id": "t"}})
        assert "NEO4J_URI" in str(caught.value) and f"127.0.0.1:{port}" in str(caught.value)
    finally:
        await saver.close()


async def test_neo4j_saver_is_async_only() -> None:
    saver = Neo4jCheckpointSaver("bolt://127.0.0.1:1")
    try:
        with pytest.raises(NotImplementedError, match="async-only"):
            saver.get_tuple({"configurable": {"thread_id": "t"}})
        assert saver.get_next_version(None, None).startswith("0" * 31 + "1.")
        assert saver.get_next_version(saver.get_next_version(None, None), None).startswith("0" * 31 + "2.")
    finally:
        await saver.close()


# -- a graph on each backend ----------------------------------------------------------------------------


class State(TypedDict):
    steps: Annotated[list[str], operator.add]
    count: int


async def plan(state: State) -> dict[str, Any]:
    return {"steps": ["plan"], "count": state["count"] + 1}


async def act(state: State) -> dict[str, Any]:
    return {"steps": ["act"], "count": state["count"] + 1}


async def review(state: State) -> dict[str, Any]:
    return {"steps": ["review"], "count": state["count"] + 1}


def build_graph() -> StateGraph[State]:
    builder = StateGraph(State)
    builder.add_node("plan", plan)
    builder.add_node("act", act)
    builder.add_node("review", review)
    builder.add_edge(START, "plan")
    builder.add_edge("plan", "act")
    builder.add_edge("act", "review")
    builder.add_edge("review", END)
    return builder


async def test_graph_runs_and_resumes_on_checkpointer(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    uri = request.getfixturevalue("empty_neo4j") if backend == "neo4j" else None
    settings = settings_for(backend, neo4j_uri=uri, sqlite_path=tmp_path / "memory" / "memory.db")
    config: Any = {"configurable": {"thread_id": "conversation-1"}}
    async with open_checkpointer(settings) as saver:
        graph = build_graph().compile(checkpointer=saver)
        first = await graph.ainvoke({"steps": ["start"], "count": 0}, config)
        assert first == {"steps": ["start", "plan", "act", "review"], "count": 3}

        history = [snapshot async for snapshot in graph.aget_state_history(config)]
        # input, then one checkpoint per node, newest first
        assert [snapshot.metadata["step"] for snapshot in history if snapshot.metadata] == [3, 2, 1, 0, -1]
        assert [snapshot.next for snapshot in history] == [(), ("review",), ("act",), ("plan",), ("__start__",)]
        assert history[0].values == first

        second = await graph.ainvoke({"steps": ["again"], "count": 10}, config)
        assert second["steps"] == ["start", "plan", "act", "review", "again", "plan", "act", "review"]
        assert second["count"] == 13
        assert len([snapshot async for snapshot in graph.aget_state_history(config)]) == 10

    # a new checkpointer on the same backend picks the thread up where it stopped
    async with open_checkpointer(settings) as saver:
        graph = build_graph().compile(checkpointer=saver)
        state = await graph.aget_state(config)
        assert state.values == second
        other = await graph.aget_state({"configurable": {"thread_id": "conversation-2"}})
        assert other.values == {}
