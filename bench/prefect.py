"""Prefect benchmark: per-node overhead of running a graph as a Prefect flow, in each of the two modes of
``MNEMOFLOW_PREFECT_TASKS`` (:func:`mnemoflow.flows.tasks.node_wrapper`): ``node``, a task run per node (the default,
``task_per_node`` in the results), and ``graph``, every node in the flow run with the engine's own retries (``grouped``).

The graph is the engine benchmark's no-op node (``bench.noop``) in a line, 20 nodes and 1 node. Every round runs,
in this process and in turn: both graphs directly with ``GraphRunner`` (no Prefect: the baseline), then both inside
an async Prefect ``@flow`` in each mode, wrapped as ``mnemoflow.flows.run.execute_graph`` wraps them. The flows report
to a real ``prefect server start`` the bench starts on a free port with its own home and SQLite database, and stops
at the end; each flow run is a top-level run, so it opens its own Prefect clients as a deployment run's process does.
Every runner has the same settings: SQLite store in a temporary folder, offline model (the nodes call no model), each
its own ``AsyncSqliteSaver`` checkpointer (as a flow run has), run logs at level info written to /dev/null.

Per-node overhead (``per_node_overhead_ms``, per mode) is (flow run of the 20-node graph - direct run) / 20, paired
within a round: it includes the flow run's fixed cost spread over 20 nodes. The fixed cost and the marginal cost of
one more node come from the 1-node and 20-node flows (intercept and slope). Wall time on a shared machine moves with
its load, so the bench also counts CPU: this process's (the worker's side) and the Prefect server's (its process
group, read from /proc, over the run and the settle time after it, since the server records a run's events after
the run returns). The bench waits ``--settle`` seconds after each flow run (see :data:`SETTLE`), counts the client's
retries of refused requests and leaves rounds with any out of the main figures (``figures``; ``figures_all_rounds``
keeps them). Writes ``bench/results/prefect.json``; run with ``make bench-prefect`` (about 4 minutes).
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
GOAL_MS = 5.0
"""The issue's goal for the overhead per node (``per_node_overhead_ms``)."""
SETTLE = 1.0
"""Seconds to wait (not timed) after each flow run by default. Back to back, the next flow run's requests often
find the server's SQLite database locked while it writes the previous run's task-run events: the server answers
503 and the client retries after about 2 s, which would swamp what is measured here. ``--settle 0`` shows it."""
MODES = {"task_per_node": "node", "grouped": "graph"}
"""Result key -> ``MNEMOFLOW_PREFECT_TASKS`` value."""
VARIANTS = ("direct_20", "direct_1", *(f"{mode}_{steps}" for mode in MODES.values() for steps in (STEPS, 1)))
"""``direct_N``: the N-node graph run with ``GraphRunner`` alone; ``node_N``, ``graph_N``: in a flow run, in that mode."""


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


def spread(values: list[float]) -> dict[str, float]:
    return {"median": ms(statistics.median(values)), "p90": ms(p90(values))}


def group_cpu_seconds(group: int) -> float:
    """CPU seconds (user and system) the live processes of process group ``group`` have used (Linux's /proc):
    the Prefect server runs in a session of its own, with its helpers."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # a process that ended meanwhile
            continue
        if int(fields[2]) == group:
            total += int(fields[11]) + int(fields[12])
    return total / tick


def server_group(server: PrefectServer) -> int:
    """The Prefect server's process group: the launcher starts it in a session of its own, and keeps the process
    to itself, so the bench reads it there."""
    process = server._process
    if process is None:
        raise RuntimeError("the Prefect server is not running")
    return os.getpgid(process.pid)


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


class Samples:
    """Per variant and per timed round: the run's wall seconds, this process's CPU seconds during it, the Prefect
    server's CPU seconds during it and the settle time after it, and the client's retries of refused requests."""

    def __init__(self) -> None:
        self.wall: dict[str, list[float]] = {name: [] for name in VARIANTS}
        self.cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
        self.server_cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
        self.retries: dict[str, list[int]] = {name: [] for name in VARIANTS}


async def measure(
    runs: int, warmup: int, settle: float, variants: dict[str, Callable[[], Awaitable[Any]]], retries: RetryCounter, server: int
) -> Samples:
    """Run every variant once per round, ``runs`` rounds after ``warmup``; after a flow run, wait ``settle``
    seconds (not timed). ``server`` is the Prefect server's process group.

    Rounds interleave the variants so that drift (the server's database growing, the machine's load) hits
    them alike, and let the differences be paired within a round."""
    samples = Samples()
    for round_number in range(warmup + runs):
        for name, run in variants.items():
            before, server_before = retries.retries, group_cpu_seconds(server)
            started, cpu_started = time.perf_counter(), time.process_time()
            await run()
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
            if settle and not name.startswith("direct"):
                await asyncio.sleep(settle)
            if round_number >= warmup:
                samples.wall[name].append(elapsed)
                samples.cpu[name].append(cpu)
                samples.server_cpu[name].append(group_cpu_seconds(server) - server_before)
                samples.retries[name].append(retries.retries - before)
    return samples


def analyse_mode(samples: Samples, mode: str, rounds: list[int]) -> dict[str, Any]:
    """One mode's figures over the given rounds: per-node overhead, per-flow fixed cost and per-node marginal cost
    (wall, paired within a round), and the CPU a node adds in this process and in the server."""

    def pick(table: dict[str, list[float]], name: str) -> list[float]:
        return [table[name][i] for i in rounds]

    direct20, direct1 = pick(samples.wall, "direct_20"), pick(samples.wall, "direct_1")
    flow20, flow1 = pick(samples.wall, f"{mode}_{STEPS}"), pick(samples.wall, f"{mode}_1")
    pairs = range(len(rounds))
    added20 = [flow20[i] - direct20[i] for i in pairs]
    added1 = [flow1[i] - direct1[i] for i in pairs]
    # a straight line through (1, added1) and (20, added20): slope = one more node, intercept = the flow run
    slope = [(added20[i] - added1[i]) / (STEPS - 1) for i in pairs]
    intercept = [added1[i] - slope[i] for i in pairs]

    def per_extra_node(table: dict[str, list[float]], baseline: str | None) -> float:
        """Median over rounds of the CPU one more node adds (slope between the 1- and 20-node runs), less the
        baseline's own slope (the direct runs, for this process; none for the server)."""
        many, one = pick(table, f"{mode}_{STEPS}"), pick(table, f"{mode}_1")
        if baseline is not None:
            base_many, base_one = pick(table, f"{baseline}_{STEPS}"), pick(table, f"{baseline}_1")
            return ms(statistics.median((many[i] - base_many[i] - one[i] + base_one[i]) / (STEPS - 1) for i in pairs))
        return ms(statistics.median((many[i] - one[i]) / (STEPS - 1) for i in pairs))

    return {
        "setting": f"MNEMOFLOW_PREFECT_TASKS={mode}",
        "overhead_ms": spread([added / STEPS for added in added20]),
        "overhead_note": f"(flow run of the {STEPS}-node graph - direct run) / {STEPS}, paired within a round; "
        "includes the flow run's fixed cost spread over the nodes",
        "per_node_ms": spread(slope),
        "per_node_note": "what one more node adds: slope between the 1-node and 20-node flow runs",
        "per_flow_ms": spread(intercept),
        "per_flow_note": "intercept of the same line: what a flow run adds whatever its number of nodes",
        "cpu_per_node_ms": {
            "worker": per_extra_node(samples.cpu, "direct"),
            "server": per_extra_node(samples.server_cpu, None),
        },
        "cpu_per_flow_run_ms": {
            "worker": ms(statistics.median(pick(samples.cpu, f"{mode}_{STEPS}"))),
            "server": ms(statistics.median(pick(samples.server_cpu, f"{mode}_{STEPS}"))),
        },
        "cpu_note": "CPU one more node adds (slope, the worker's less the direct run's own) and CPU of a 20-node "
        "flow run, in this process (the worker's side) and in the Prefect server (over the run and its settle time)",
    }


def analyse(samples: Samples, rounds: list[int]) -> dict[str, Any]:
    """The figures over the given rounds (indexes into every variant's list of samples)."""
    if len(rounds) < 2:
        return {"rounds": len(rounds)}
    direct20 = [samples.wall["direct_20"][i] for i in rounds]
    return {
        "rounds": len(rounds),
        "runs": {name: summary([values[i] for i in rounds]) for name, values in samples.wall.items()},
        "direct_per_node_ms": {"median": ms(statistics.median(direct20) / STEPS), "p90": ms(p90(direct20) / STEPS)},
        "modes": {key: analyse_mode(samples, mode, rounds) for key, mode in MODES.items()},
    }


async def bench(folder: Path, runs: int, warmup: int, settle: float, server: int) -> Samples:
    # imported here: Prefect reads PREFECT_API_URL and the rest of its settings when it is first imported
    from prefect import flow

    from mnemoflow.flows.tasks import node_wrapper

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

        async def runner(name: str) -> GraphRunner:
            mode, steps = name.rsplit("_", 1)
            saver = AsyncSqliteSaver(await stack.enter_async_context(aiosqlite.connect(folder / f"checkpoints-{name}.db")))
            await saver.setup()
            wrap = None if mode == "direct" else node_wrapper("node" if mode == "node" else "graph")
            return await stack.enter_async_context(
                GraphRunner(
                    graphs[int(steps)], store=store, embedder=embedder, llm=llm, settings=settings, checkpointer=saver,
                    wrap_node=wrap,
                )
            )

        runners = {name: await runner(name) for name in VARIANTS}

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
        return await measure(runs, warmup, settle, variants, retries, server)


def drain_prefect() -> None:
    """Send the logs and events Prefect still holds before its server goes away."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=30)
    EventsWorker.drain_all(timeout=30)


def line(label: str, figures: dict[str, Any]) -> str:
    if "modes" not in figures:
        return f"{label}: only {figures['rounds']} rounds"
    parts = [f"{label} ({figures['rounds']} rounds): per node direct {figures['direct_per_node_ms']['median']} ms"]
    for key, mode in figures["modes"].items():
        parts.append(
            f"{key}: overhead {mode['overhead_ms']['median']} ms per node (p90 {mode['overhead_ms']['p90']}), "
            f"one more node {mode['per_node_ms']['median']} ms, flow run {mode['per_flow_ms']['median']} ms, "
            f"CPU per node worker {mode['cpu_per_node_ms']['worker']} ms / server {mode['cpu_per_node_ms']['server']} ms"
        )
    return "; ".join(parts)


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
            group = server_group(server)
            samples = asyncio.run(bench(folder, args.runs, args.warmup, args.settle, group))
            drain_prefect()
        finally:
            server.stop()
    everything = list(range(args.runs))
    clean = [i for i in everything if not any(counts[i] for counts in samples.retries.values())]
    figures = analyse(samples, clean)
    overhead = {key: mode["overhead_ms"]["median"] for key, mode in figures.get("modes", {}).items()}
    results: dict[str, Any] = {
        "command": " ".join([".venv/bin/python", "bench/prefect.py", *sys.argv[1:]]) + "  (make bench-prefect)",
        "per_node_overhead_ms": overhead,
        "per_node_overhead_note": "median over rounds without client retries of (flow run of the 20-node graph - the same "
        "graph run directly with GraphRunner in this process, the baseline) / 20, per MNEMOFLOW_PREFECT_TASKS mode: "
        "task_per_node = node (a task run per node, the default), grouped = graph (the nodes in the flow run)",
        "goal": {"ms_per_node": GOAL_MS, "met": {key: value <= GOAL_MS for key, value in overhead.items()}},
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
            "flow": "async @flow(persist_result=False) that runs GraphRunner.run once, a top-level flow run; awaited in the "
            "bench's event loop",
            "modes": "GraphRunner(wrap_node=mnemoflow.flows.tasks.node_wrapper(mode)): node = run_node_as_task "
            "(NO_CACHE, persist_result=False), graph = no wrapper (the engine's per-node retries)",
        },
        "client_retries": {
            "note": "requests the server refused with 503 (its SQLite database locked while it writes the previous runs' "
            "events) and the client sent again after its back-off (2 s, jittered); rounds with any are left out of `figures`",
            "by_variant": {name: sum(counts) for name, counts in samples.retries.items()},
            "rounds_with_retries": len(everything) - len(clean),
        },
        "figures": figures,
        "figures_all_rounds": analyse(samples, everything),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(line("without client retries", figures))
    print(line("all rounds", results["figures_all_rounds"]))
    print(
        f"client retries: {results['client_retries']['by_variant']} in {results['client_retries']['rounds_with_retries']} rounds"
    )
    print(f"per node overhead {overhead} ms, goal {GOAL_MS:g} ms; written to {args.output}")


if __name__ == "__main__":
    main()
