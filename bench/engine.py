"""Engine benchmark: per-step cost of a mnemoflow run against the same graph built with LangGraph's builder.

The graph is 20 no-op nodes in a line. The mnemoflow side is a full run as the CLI does it (graph file,
wrapped nodes, input check, trace kept and saved to the store, run logs at level info, written to
/dev/null); the raw side is the same graph written with ``StateGraph``: the same state model, async
nodes that take the same runtime context. Both run in this process, alternating, with no checkpointer and
then each with its own ``AsyncSqliteSaver``. Writes ``bench/results/engine.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiosqlite
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnemoflow.graphs import GraphRunner, load_graph  # noqa: E402
from mnemoflow.llm import LLM, OfflineBackend  # noqa: E402
from mnemoflow.logging import configure_logging, get_logger  # noqa: E402
from mnemoflow.memory import HashingEmbedder, SQLiteStore  # noqa: E402
from mnemoflow.nodes import NoConfig, RunContext, node, state_model  # noqa: E402
from mnemoflow.settings import LLMSettings, LogSettings, Settings, StoreSettings  # noqa: E402

STEPS = 20


@state_model("bench.BenchState")
class BenchState(BaseModel):
    """State of the benchmark graph."""

    label: str = ""


@node("bench.noop", state=BenchState, reads=set(), writes=set())
async def noop(state: BenchState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """Do nothing."""
    return {}


def graph_file(folder: Path) -> Path:
    names = [f"step{index:02d}" for index in range(STEPS)]
    lines = ["name: bench-line", "state: bench.BenchState", "nodes:"]
    lines += [f"  {name}: {{use: bench.noop}}" for name in names]
    lines += ["edges:", f"  - {{from: START, to: {names[0]}}}"]
    lines += [f"  - {{from: {left}, to: {right}}}" for left, right in zip(names, names[1:], strict=False)]
    lines += [f"  - {{from: {names[-1]}, to: END}}"]
    path = folder / "bench-line.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def raw_graph(checkpointer: Any) -> Any:
    """The same graph written with LangGraph's builder: same state, nodes that take the runtime context."""

    async def step(state: BenchState, runtime: Runtime[RunContext]) -> dict[str, Any]:
        return {}

    builder = StateGraph(BenchState, context_schema=RunContext)
    names = [f"step{index:02d}" for index in range(STEPS)]
    for name in names:
        builder.add_node(name, step)
    builder.add_edge(START, names[0])
    for left, right in zip(names, names[1:], strict=False):
        builder.add_edge(left, right)
    builder.add_edge(names[-1], END)
    return builder.compile(checkpointer=checkpointer)


async def measure(
    runs: int,
    warmup: int,
    ours: Callable[[int], Awaitable[Any]],
    raw: Callable[[int], Awaitable[Any]],
    flush: Callable[[], Awaitable[None]],
    blocks: int = 6,
) -> dict[str, float]:
    """Time blocks of runs, ours then raw, several times over, so drift and noise hit both alike.

    ``flush`` writes the run records our runner still holds; it is timed with our block."""
    for index in range(warmup):
        await ours(index)
        await raw(index)
    await flush()
    ours_total = raw_total = 0.0
    per_block = max(1, runs // blocks)
    for block in range(blocks):
        first = warmup + block * per_block
        started = time.perf_counter()
        for index in range(first, first + per_block):
            await ours(index)
        await flush()
        ours_total += time.perf_counter() - started
        started = time.perf_counter()
        for index in range(first, first + per_block):
            await raw(index)
        raw_total += time.perf_counter() - started
    ours_step, raw_step = ours_total / (blocks * per_block * STEPS), raw_total / (blocks * per_block * STEPS)
    return {
        "mnemoflow_ms_per_step": round(ours_step * 1000, 4),
        "langgraph_ms_per_step": round(raw_step * 1000, 4),
        "ratio": round(ours_step / raw_step, 3),
        "runs": blocks * per_block,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=600)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--output", type=Path, default=Path("bench/results/engine.json"))
    args = parser.parse_args()
    results: dict[str, Any] = {
        "command": "make bench-engine",
        "steps_per_run": STEPS,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    with tempfile.TemporaryDirectory() as folder_name:
        folder = Path(folder_name)
        graph = load_graph(graph_file(folder))
        embedder = HashingEmbedder(384)
        settings = Settings(store=StoreSettings(sqlite_path=folder / "memory.db"))
        configure_logging(LogSettings(level="info", format="json"), stream=open(os.devnull, "w"), force=True)  # noqa: SIM115
        log = get_logger("bench")
        llm = LLM(OfflineBackend(), LLMSettings(cache=False))
        async with AsyncExitStack() as stack:
            store = await stack.enter_async_context(
                SQLiteStore(folder / "memory.db", embedding_model=embedder.model, embedding_dimension=embedder.dimension)
            )
            for label, with_checkpointer in (("without_checkpointer", False), ("with_sqlite_checkpointer", True)):
                ours_saver = raw_saver = None
                if with_checkpointer:
                    ours_saver = AsyncSqliteSaver(await stack.enter_async_context(aiosqlite.connect(folder / f"ours-{label}.db")))
                    raw_saver = AsyncSqliteSaver(await stack.enter_async_context(aiosqlite.connect(folder / f"raw-{label}.db")))
                    await ours_saver.setup()
                    await raw_saver.setup()
                runner = await stack.enter_async_context(
                    GraphRunner(graph, store=store, embedder=embedder, llm=llm, settings=settings, checkpointer=ours_saver)
                )
                compiled = raw_graph(raw_saver)

                async def ours(index: int, runner: GraphRunner = runner, label: str = label) -> Any:
                    return await runner.run({}, namespace="bench")  # a new thread, as `mnemoflow run` without --thread

                async def raw(index: int, compiled: Any = compiled, label: str = label) -> Any:
                    context = RunContext(store, embedder, llm, settings, "bench", f"raw-{index}", f"{label}-{index}", log)
                    return await compiled.ainvoke({}, {"configurable": {"thread_id": f"{label}-{index}"}}, context=context)

                results[label] = await measure(args.runs, args.warmup, ours, raw, runner.flush)
                print(label, results[label], file=sys.stderr)
                if not with_checkpointer:
                    # the same comparison without the run's bookkeeping (input check, run logs, trace saved
                    # to the store): what the wrapped nodes and the run context cost per step
                    async def engine_only(index: int, runner: GraphRunner = runner) -> Any:
                        context = RunContext(store, embedder, llm, settings, "bench", f"engine-{index}", f"engine-{index}", log)
                        return await runner.compiled.ainvoke({}, {"configurable": {"thread_id": f"e-{index}"}}, context=context)

                    results["without_checkpointer_nodes_only"] = await measure(args.runs, args.warmup, engine_only, raw, runner.flush)
                    print("without_checkpointer_nodes_only", results["without_checkpointer_nodes_only"], file=sys.stderr)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
