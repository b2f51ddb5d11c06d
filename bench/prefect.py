"""Prefect benchmark: per-node overhead of running a graph as a Prefect flow with a task per node.

The graph is the engine benchmark's no-op node (``bench.noop``) in a line. Every round runs, in this
process and in turn: the 20-node graph and a 1-node graph directly with ``GraphRunner`` (no Prefect);
the 20-node graph inside an async Prefect ``@flow`` without tasks (what the flow alone costs); and the
20-node and 1-node graphs inside a flow with ``wrap_node=run_node_as_task`` (a task run per node), as
``mnemoflow.flows.run.execute_graph`` runs them. The flows report to a real ``prefect server start`` the bench starts
on a free port with its own home and SQLite database, and stops at the end. Every runner has the same
settings: SQLite store in a temporary folder, offline model (the nodes call no model), each its own
``AsyncSqliteSaver`` checkpointer (as a flow run has), run logs at level info written to /dev/null.

Per-node overhead is (flow run with tasks - direct run) / 20, paired within a round; the fixed per-flow
cost and the marginal cost of one task come from the 1-node and 20-node flows (intercept and slope), and
the flow without tasks checks the intercept. The bench waits ``--settle`` seconds after each flow run (see
:data:`SETTLE`), counts the client's retries of refused requests and leaves rounds with any out of the main
figures (``figures``; ``figures_all_rounds`` keeps them). Writes ``bench/results/prefect.json``; run with
``make bench-prefect``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from importlib.metadata import version
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parents[1]
# `python bench/prefect.py` puts bench/ first on sys.path, where this file would shadow the prefect package
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != REPOSITORY / "bench"]
sys.path.insert(0, str(REPOSITORY))

import aiosqlite  # noqa: E402
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver  # noqa: E402

import bench.engine  # noqa: E402, F401  (registers bench.BenchState and bench.noop)
from mnemoflow.graphs import GraphRunner, load_graph  # noqa: E402
from mnemoflow.llm import LLM, OfflineBackend  # noqa: E402
from mnemoflow.logging import configure_logging  # noqa: E402
from mnemoflow.memory import HashingEmbedder, SQLiteStore  # noqa: E402
from mnemoflow.settings import LLMSettings, LogSettings, Settings, StoreSettings  # noqa: E402
from tests.support.prefect_server import PrefectServer  # noqa: E402

STEPS = 20
THRESHOLD_MS = 20.0
"""The issue's rule: over this per node, offer a mode that groups a graph's nodes into fewer tasks."""
SETTLE = 1.0
"""Seconds to wait (not timed) after each flow run by default. Back to back, the next flow run's requests often
find the server's SQLite database locked while it writes the previous run's task-run events: the server answers
503 and the client retries after about 2 s, which would swamp what is measured here. ``--settle 0`` shows it."""
VARIANTS = ("direct_20", "direct_1", "flow_no_tasks_20", "flow_tasks_20", "flow_tasks_1")


def line_graph(folder: Path, steps: int) -> Path:
    """A graph file of ``steps`` ``bench.noop`` nodes in a line (the engine benchmark's graph at 20)."""
    names = [f"step{index:02d}" for index in range(steps)]
    lines = [f"name: bench-line-{steps}", "state: bench.BenchState", "nodes:"]
    lines += [f"  {name}: {{use: bench.noop}}" for name in names]
    lines += ["edges:", f"  - {{from: START, to: {names[0]}}}"]
    lines += [f"  - {{from: {left}, to: {right}}}" for left, right in zip(names, names[1:], strict=False)]
    lines += [f"  - {{from: {names[-1]}, to: END}}"]
    path = folder / f"bench-line-{steps}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10, method="inclusive")[-1]


def summary(values: list[float]) -> dict[str, float]:
    return {"median_ms": ms(statistics.median(values)), "p90_ms": ms(p90(values)), "mean_ms": ms(statistics.fmean(values))}


class RetryCounter(logging.Filter):
    """Counts the Prefect client's retries of a request the server refused with a retryable status (503 when
    its SQLite database is locked); set on the ``prefect.client`` logger, it lets no debug record through."""

    def __init__(self) -> None:
        super().__init__()
        self.retries = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if "retryable" in str(record.msg):
            self.retries += 1
        return record.levelno >= logging.INFO


async def measure(
    runs: int, warmup: int, settle: float, variants: dict[str, Callable[[], Awaitable[Any]]], retries: RetryCounter
) -> tuple[dict[str, list[float]], dict[str, list[int]]]:
    """Run every variant once per round, ``runs`` rounds after ``warmup``: the seconds of each run and the
    client retries during it, by variant. After a flow run, wait ``settle`` seconds (not timed).

    Rounds interleave the variants so that drift (the server's database growing, the machine's load) hits
    them alike, and let the differences be paired within a round."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    retried: dict[str, list[int]] = {name: [] for name in variants}
    for round_number in range(warmup + runs):
        for name, run in variants.items():
            before = retries.retries
            started = time.perf_counter()
            await run()
            elapsed = time.perf_counter() - started
            if round_number >= warmup:
                times[name].append(elapsed)
                retried[name].append(retries.retries - before)
            if settle and not name.startswith("direct"):
                await asyncio.sleep(settle)
    return times, retried


def analyse(times: dict[str, list[float]], rounds: list[int]) -> dict[str, Any]:
    """The figures over the given rounds (indexes into every variant's list of run times)."""
    picked = {name: [values[i] for i in rounds] for name, values in times.items()}
    if len(rounds) < 2:
        return {"rounds": len(rounds)}
    direct20, direct1 = picked["direct_20"], picked["direct_1"]
    tasks20, tasks1, plain20 = picked["flow_tasks_20"], picked["flow_tasks_1"], picked["flow_no_tasks_20"]
    pairs = range(len(rounds))
    # per round: what the flow with a task per node adds to the direct run
    added20 = [tasks20[i] - direct20[i] for i in pairs]
    added1 = [tasks1[i] - direct1[i] for i in pairs]
    per_node = [added / STEPS for added in added20]
    # a straight line through (1, added1) and (20, added20): slope = one task, intercept = the flow
    slope = [(added20[i] - added1[i]) / (STEPS - 1) for i in pairs]
    intercept = [added1[i] - slope[i] for i in pairs]
    flow_only = [plain20[i] - direct20[i] for i in pairs]
    direct_node, prefect_node = statistics.median(direct20) / STEPS, statistics.median(tasks20) / STEPS
    return {
        "rounds": len(rounds),
        "runs": {name: summary(values) for name, values in picked.items()},
        "per_node": {
            "direct_ms": {"median": ms(direct_node), "p90": ms(p90(direct20) / STEPS)},
            "prefect_ms": {"median": ms(prefect_node), "p90": ms(p90(tasks20) / STEPS)},
            "overhead_ms": {"median": ms(statistics.median(per_node)), "p90": ms(p90(per_node))},
            "overhead_note": "(flow run with a task per node - direct run) / 20, paired within a round; "
            "includes the flow's fixed cost spread over 20 nodes",
            "task_ms": {"median": ms(statistics.median(slope)), "p90": ms(p90(slope))},
            "task_note": "marginal cost of one node as a task: slope between the 1-node and 20-node flows",
        },
        "per_flow": {
            "fixed_ms": {"median": ms(statistics.median(intercept)), "p90": ms(p90(intercept))},
            "fixed_note": "intercept of the same line: what a flow run adds whatever the number of nodes",
            "flow_without_tasks_ms": {"median": ms(statistics.median(flow_only)), "p90": ms(p90(flow_only))},
            "flow_without_tasks_note": "(20-node graph in a flow with no tasks - direct run): a check of the intercept",
        },
        "ratio_prefect_over_direct": round(prefect_node / direct_node, 2),
    }


async def bench(folder: Path, runs: int, warmup: int, settle: float) -> tuple[dict[str, list[float]], dict[str, list[int]]]:
    # imported here: Prefect reads PREFECT_API_URL and the rest of its settings when it is first imported
    from prefect import flow

    from mnemoflow.flows.tasks import run_node_as_task

    retries = RetryCounter()
    client_log = logging.getLogger("prefect.client")
    client_log.setLevel(logging.DEBUG)
    client_log.addFilter(retries)

    graphs = {steps: load_graph(line_graph(folder, steps)) for steps in (STEPS, 1)}
    embedder = HashingEmbedder(384)
    settings = Settings(store=StoreSettings(sqlite_path=folder / "memory.db"))
    configure_logging(LogSettings(level="info", format="json"), stream=open(os.devnull, "w"), force=True)  # noqa: SIM115
    llm = LLM(OfflineBackend(), LLMSettings(cache=False))
    async with AsyncExitStack() as stack:
        store = await stack.enter_async_context(
            SQLiteStore(folder / "memory.db", embedding_model=embedder.model, embedding_dimension=embedder.dimension)
        )

        async def runner(name: str, steps: int, tasks: bool) -> GraphRunner:
            saver = AsyncSqliteSaver(await stack.enter_async_context(aiosqlite.connect(folder / f"checkpoints-{name}.db")))
            await saver.setup()
            wrap = run_node_as_task if tasks else None
            return await stack.enter_async_context(
                GraphRunner(
                    graphs[steps], store=store, embedder=embedder, llm=llm, settings=settings, checkpointer=saver, wrap_node=wrap
                )
            )

        runners = {
            "direct_20": await runner("direct_20", STEPS, False),
            "direct_1": await runner("direct_1", 1, False),
            "flow_no_tasks_20": await runner("flow_no_tasks_20", STEPS, False),
            "flow_tasks_20": await runner("flow_tasks_20", STEPS, True),
            "flow_tasks_1": await runner("flow_tasks_1", 1, True),
        }

        @flow(name="bench-prefect", persist_result=False)
        async def graph_flow(variant: str) -> int:
            result = await runners[variant].run({}, namespace="bench")
            return len(result.steps)

        def direct(name: str) -> Callable[[], Awaitable[Any]]:
            async def run() -> Any:
                return await runners[name].run({}, namespace="bench")  # a new thread, as `mnemoflow run` without --thread

            return run

        def in_flow(name: str) -> Callable[[], Awaitable[Any]]:
            options = graph_flow.with_options(name=f"bench-{name}")

            async def run() -> Any:
                steps = await options(name)
                assert steps == len(runners[name].graph.spec.nodes), f"{name}: {steps} steps"
                return steps

            return run

        variants = {name: (direct(name) if name.startswith("direct") else in_flow(name)) for name in VARIANTS}
        return await measure(runs, warmup, settle, variants, retries)


def drain_prefect() -> None:
    """Send the logs and events Prefect still holds before its server goes away."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=30)
    EventsWorker.drain_all(timeout=30)


def line(label: str, figures: dict[str, Any]) -> str:
    if "per_node" not in figures:
        return f"{label}: only {figures['rounds']} rounds"
    node, flow = figures["per_node"], figures["per_flow"]
    return (
        f"{label} ({figures['rounds']} rounds): per node direct {node['direct_ms']['median']} ms, "
        f"under Prefect {node['prefect_ms']['median']} ms, overhead {node['overhead_ms']['median']} ms "
        f"(p90 {node['overhead_ms']['p90']} ms), one more task {node['task_ms']['median']} ms (p90 {node['task_ms']['p90']} ms); "
        f"per flow fixed {flow['fixed_ms']['median']} ms (p90 {flow['fixed_ms']['p90']} ms), "
        f"a flow without tasks adds {flow['flow_without_tasks_ms']['median']} ms; "
        f"prefect/direct {figures['ratio_prefect_over_direct']}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="rounds timed (each runs every variant once)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--settle", type=float, default=SETTLE, help="seconds to wait (not timed) after each flow run")
    parser.add_argument("--output", type=Path, default=Path("bench/results/prefect.json"))
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder_name:
        folder = Path(folder_name)
        server = PrefectServer(folder / "prefect-home").start()
        try:
            os.environ.update(server.env)
            times, retried = asyncio.run(bench(folder, args.runs, args.warmup, args.settle))
            drain_prefect()
        finally:
            server.stop()
    everything = list(range(args.runs))
    clean = [i for i in everything if not any(counts[i] for counts in retried.values())]
    figures = analyse(times, clean)
    overhead = figures["per_node"]["overhead_ms"]["median"] if "per_node" in figures else None
    results: dict[str, Any] = {
        "command": " ".join([".venv/bin/python", "bench/prefect.py", *sys.argv[1:]]) + "  (make bench-prefect)",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "prefect": version("prefect"),
            "langgraph": version("langgraph"),
            "load_average_1_5_15": {
                "before": [round(x, 2) for x in load_before],
                "after": [round(x, 2) for x in os.getloadavg()],
            },
        },
        "parameters": {
            "steps_per_run": STEPS,
            "rounds": args.runs,
            "warmup_rounds": args.warmup,
            "settle_s": args.settle,
            "variants": list(VARIANTS),
            "node": "bench.noop (async, returns {})",
            "store": "SQLiteStore in a temporary folder",
            "checkpointer": "AsyncSqliteSaver, one database per variant (as flows.run.execute_graph has one)",
            "model": "offline (nodes make no calls)",
            "logging": "mnemoflow run logs at level info to /dev/null; Prefect's defaults (flow and task run logs sent to the API)",
            "prefect_server": "prefect server start on 127.0.0.1, its own SQLite database, same machine, started and stopped by the bench",
            "flow": "async @flow(persist_result=False) that runs GraphRunner.run once; awaited in the bench's event loop",
            "tasks": "mnemoflow.flows.tasks.run_node_as_task (NO_CACHE, persist_result=False)",
        },
        "client_retries": {
            "note": "requests the server refused with 503 (its SQLite database locked while it writes the previous runs' "
            "events) and the client sent again after its back-off (2 s, jittered); rounds with any are left out of `figures`",
            "by_variant": {name: sum(counts) for name, counts in retried.items()},
            "rounds_with_retries": len(everything) - len(clean),
        },
        "figures": figures,
        "figures_all_rounds": analyse(times, everything),
        "verdict": {
            "threshold_ms_per_node": THRESHOLD_MS,
            "overhead_ms_per_node": overhead,
            "over_threshold": overhead is None or overhead > THRESHOLD_MS,
            "grouping_mode_needed": overhead is None or overhead > THRESHOLD_MS,
        },
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    verdict = results["verdict"]
    print(line("without client retries", figures))
    print(line("all rounds", results["figures_all_rounds"]))
    print(
        f"client retries: {results['client_retries']['by_variant']} in {results['client_retries']['rounds_with_retries']} rounds"
    )
    print(
        f"verdict: {overhead} ms per node, {'over' if verdict['over_threshold'] else 'within'} the {THRESHOLD_MS:g} ms threshold: "
        f"{'a grouping mode is needed' if verdict['grouping_mode_needed'] else 'no grouping mode needed'}; written to {args.output}"
    )


if __name__ == "__main__":
    main()
