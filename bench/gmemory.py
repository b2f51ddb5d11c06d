"""G-Memory benchmark: retrieval latency and store statements as the memory grows, against a full scan, on SQLite
and Neo4j.

A synthetic memory is written straight through the store API (no model), in one namespace per backend that
grows to each size in turn (1k, 10k, 100k stored queries by default), so the vector index holds exactly the
queries measured; it is written in batches of the Neo4j store's measured write size (``WRITE_BATCH_ROWS``) on
both backends. Per query (record contract: ``nodes/gmemory/model.py``): one ``GQuery`` embedded with
``HashingEmbedder(384)`` over a task drawn from templates x objects x places (so similar tasks exist),
three ``GUtterance`` records (``HAS_UTTERANCE``, ``NEXT``), one ``SIMILAR`` link to the last earlier query
of the same template and object; per ten queries one ``GInsight`` ``SUPPORTED_BY`` five queries.

At each size, with 5 warm-ups (400 at the first size: a fresh server plans and JIT-compiles its queries over its
first hundreds of tasks; with 50, Neo4j's p50 at 1k was 72 ms, with 400 24 ms) then 30 timed tasks (new task texts from the same vocabulary):

- **graph**: the ``gmemory-retrieve`` library graph through ``GraphRunner`` with the offline model (so model
  latency does not count). Each timed task also counts what reached the backend: ``store_calls`` (calls of the
  store's public methods, through a counting proxy the runner is given) and, on Neo4j, ``statements`` (Cypher
  statements the driver sent: auto-commit runs and statements in managed transactions, counted by wrapping the
  driver's ``run`` methods while the task runs; the store is not changed). Both include the runner's own run
  records, written every 32 runs.
- **baseline**: a full scan: every ``GQuery`` of the namespace read with ``get_nodes`` (the ids the bench wrote),
  cosine top-k in numpy, then the support and interaction reads of ``after_seeds`` (lighter than the graph's,
  so the comparison favours the baseline). At 100k a scan takes many seconds, so it gets one warm-up and as
  many timed tasks as fit in 60 s (at least 3); ``timed`` in the JSON says how many.

Goals (issue #23): on Neo4j at most 8 statements per retrieval (``backends.neo4j.statements_per_retrieval``);
Neo4j p50 at most 2x SQLite's at 1k (``backends.neo4j.p50_over_sqlite_1k``, both measured in this run); p95 at
100k at most 2x p95 at 1k on each backend (``backends.<name>.p95_100k_over_1k``; with other sizes,
``p95_largest_over_smallest`` only). Writes ``bench/results/gmemory.json``; run with
``infra/with-neo4j.sh .venv/bin/python bench/gmemory.py --output bench/results/gmemory.json`` (``--sizes
1000,5000`` for a short run, ``--backends sqlite`` without Neo4j).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import os
import platform
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import neo4j
import numpy as np

_ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _ROOT / "bench"]  # bench/gmemory.py is not the nodes package
sys.path.insert(0, str(_ROOT))

import mnemoflow.nodes.gmemory.state  # noqa: E402, F401  (registers the kinds and the state)
from mnemoflow.graphs import GraphRunner, load_graph  # noqa: E402
from mnemoflow.graphs.loader import find_graph  # noqa: E402
from mnemoflow.logging import configure_logging  # noqa: E402
from mnemoflow.memory import HashingEmbedder, Neo4jStore, NodeRecord, RelationshipRecord, SQLiteStore  # noqa: E402
from mnemoflow.memory.neo4j.store import WRITE_BATCH_ROWS  # noqa: E402
from mnemoflow.memory.protocol import GraphStore  # noqa: E402
from mnemoflow.nodes.gmemory.model import INSIGHT, QUERY, UTTERANCE, insight_id, query_id, utterance_id  # noqa: E402
from mnemoflow.settings import LogSettings, Settings, StoreSettings  # noqa: E402
from tests.conftest import offline_llm  # noqa: E402

NAMESPACE = "bench-gmemory"
GRAPH = "gmemory-retrieve"
CHUNK = WRITE_BATCH_ROWS
"""Records per store call while loading: the Neo4j store's measured write batch, on both backends."""
WARMUPS, TIMED, FIRST_WARMUPS = 5, 30, 400
"""Warm-up and timed tasks per size; the first size warms up longer: a fresh server (Neo4j's JVM) plans and
compiles its queries during its first hundreds of tasks, which would otherwise count against the smallest size."""
BASELINE_WARMUPS, BASELINE_MIN, BASELINE_BUDGET_S = 1, 3, 60.0
"""The full scan takes many seconds per task at 100k on Neo4j: one warm-up, then TIMED tasks or as many as fit in
BASELINE_BUDGET_S seconds, at least BASELINE_MIN."""
GOALS = {"statements_per_retrieval": 8, "p50_over_sqlite_1k": 2.0, "p95_100k_over_1k": 2.0}
UTTERANCES, INSIGHT_EVERY, SUPPORT = 3, 10, 5
SEEDS, SUCCESS_K, FAILURE_K, INSIGHTS_K = 1, 2, 0, 6
"""The reads after a seed (``after_seeds``): the reference code's defaults, doubled; the library graph reads more."""

TEMPLATES = [
    "put a clean {o} in the {p}", "heat the {o} and place it on the {p}", "find two {o}s and put them in the {p}",
    "cool a {o} then put it in the {p}", "examine the {o} under the lamp near the {p}", "slice the {o} on the {p}",
    "move the {o} from the {p} to the shelf", "count the {o}s on the {p}", "wash the {o} and dry it by the {p}",
    "hide the {o} behind the {p}", "look for a {o} inside the {p}", "bring the {o} back to the {p}",
    "stack every {o} beside the {p}", "replace the broken {o} in the {p}", "label the {o} kept in the {p}",
    "paint the {o} next to the {p}", "weigh the {o} on the {p}", "pack the {o} into the {p}",
    "open the {p} and take out the {o}", "sort the {o}s by size on the {p}",
]
OBJECTS = [
    "apple", "mug", "knife", "plate", "towel", "book", "lamp", "pencil", "bowl", "spoon", "kettle", "vase",
    "candle", "phone", "key", "watch", "pillow", "bottle", "glass", "pan", "remote", "sponge", "cloth", "box",
    "potato", "tomato", "egg", "bread", "lettuce", "cup", "fork", "spatula", "ladle", "soap", "tissue",
    "newspaper", "laptop", "cd", "alarm", "statue", "plant", "hat", "shoe", "belt", "card", "coin", "ring",
    "bell", "brush", "comb",
]
PLACES = [
    "fridge", "microwave", "sink", "drawer", "cabinet", "countertop", "shelf", "desk", "bed", "sofa", "table",
    "dresser", "garbage can", "safe", "stove", "toilet", "bathtub", "armchair", "sidetable", "coffee table",
    "dining table", "laundry basket", "ottoman", "cart", "closet", "bookcase", "tv stand", "nightstand",
    "windowsill", "counter", "oven", "pantry", "hamper", "basket", "crate", "footstool", "bench", "stool",
    "trunk", "locker",
]
SPEAKERS = ["solver", "critic", "solver"]


def task_text(rng: random.Random) -> tuple[str, tuple[int, int]]:
    template, obj, place = rng.randrange(len(TEMPLATES)), rng.randrange(len(OBJECTS)), rng.randrange(len(PLACES))
    return TEMPLATES[template].format(o=OBJECTS[obj], p=PLACES[place]), (template, obj)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


class Generator:
    """Writes the synthetic memory in order; ``grow(n)`` adds queries until n are stored."""

    def __init__(self, store: GraphStore, seed: int = 7) -> None:
        self.store = store
        self.embedder = HashingEmbedder(384)
        self.rng = random.Random(seed)
        self.vectors: dict[str, list[float]] = {}
        self.query_ids: list[str] = []
        self.last_of_group: dict[tuple[int, int], tuple[str, np.ndarray]] = {}
        self.insights = 0

    def vector(self, text: str) -> list[float]:
        if text not in self.vectors:
            self.vectors[text] = self.embedder.embed_one(text)
        return self.vectors[text]

    async def grow(self, target: int, label: str) -> dict[str, Any]:
        started, written = time.perf_counter(), {"nodes": 0, "relationships": 0}
        while len(self.query_ids) < target:
            nodes, relationships = self.chunk(min(CHUNK, target - len(self.query_ids)))
            for start in range(0, len(nodes), CHUNK):
                written["nodes"] += await self.store.upsert_nodes(nodes[start : start + CHUNK])
            for start in range(0, len(relationships), CHUNK):
                written["relationships"] += await self.store.upsert_relationships(relationships[start : start + CHUNK])
            elapsed = time.perf_counter() - started
            print(f"{label}: {len(self.query_ids)}/{target} queries, {written['nodes']} nodes and "
                  f"{written['relationships']} relationships in {elapsed:.1f}s", file=sys.stderr, flush=True)
        seconds = time.perf_counter() - started
        return {**written, "seconds": round(seconds, 1), "records_per_s": round(sum(written.values()) / max(seconds, 1e-9))}

    def chunk(self, count: int) -> tuple[list[NodeRecord], list[RelationshipRecord]]:
        nodes: list[NodeRecord] = []
        relationships: list[RelationshipRecord] = []

        def rel(type_: str, source: str, target: str, **props: Any) -> None:
            relationships.append(
                RelationshipRecord(namespace=NAMESPACE, type=type_, source_id=source, target_id=target, properties=props)
            )

        for _ in range(count):
            order = len(self.query_ids)
            text, group = task_text(self.rng)
            vector = self.vector(text)
            qid = query_id(NAMESPACE, f"bench-{order}")
            resolved = self.rng.random() < 0.7
            nodes.append(NodeRecord(
                id=qid, namespace=NAMESPACE, kind=QUERY, text=text, embedding=vector,
                properties={
                    "task": text, "status": "resolved" if resolved else "failed", "order": order,
                    "key_steps": [f"go to the {text.split()[-1]}", f"act on it: {text}"],
                    "fail_reason": "" if resolved else "ran out of steps before finding the object",
                    "trajectory": f"> {text}\nNothing happens.\n> think: try again\nOK.",
                },
            ))
            previous = None
            for index in range(UTTERANCES):
                uid = utterance_id(NAMESPACE, qid, index)
                message = f"step {index}: {SPEAKERS[index]} on '{text}'"
                nodes.append(NodeRecord(
                    id=uid, namespace=NAMESPACE, kind=UTTERANCE, text=message,
                    properties={"query_id": qid, "order": index, "round": index // 2, "speaker": SPEAKERS[index],
                                "addressee": SPEAKERS[(index + 1) % len(SPEAKERS)], "message": message},
                ))
                rel("HAS_UTTERANCE", qid, uid)
                if previous:
                    rel("NEXT", previous, uid)
                previous = uid
            array = np.asarray(vector)
            if group in self.last_of_group:
                other, other_vector = self.last_of_group[group]
                rel("SIMILAR", qid, other, weight=round(float(array @ other_vector), 4))
            self.last_of_group[group] = (qid, array)
            self.query_ids.append(qid)
            if (order + 1) % INSIGHT_EVERY == 0:
                rule = f"rule {self.insights}: for '{TEMPLATES[group[0]].split()[0]}' tasks check the likely place first"
                iid = insight_id(NAMESPACE, rule)
                nodes.append(NodeRecord(
                    id=iid, namespace=NAMESPACE, kind=INSIGHT, text=rule,
                    properties={"text": rule, "status": "active", "score": self.rng.randrange(-2, 6), "created_order": self.insights},
                ))
                for supported in {qid, *self.rng.sample(self.query_ids, min(SUPPORT - 1, len(self.query_ids)))}:
                    rel("SUPPORTED_BY", iid, supported)
                self.insights += 1
        return nodes, relationships


class CountingStore:
    """A store whose public coroutine methods count their calls (only the outermost: a call runs on the real store).

    Given to the runner in place of the store, so ``calls`` is what the retrieval asked of the store."""

    def __init__(self, store: GraphStore) -> None:
        self.store = store
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.store, name)
        if name.startswith("_") or not inspect.iscoroutinefunction(value):
            return value

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return await value(*args, **kwargs)

        return counted


class StatementCounter:
    """Counts the Cypher statements the Neo4j driver sends: auto-commit ``session.run`` and ``tx.run`` in managed
    transactions (``execute_query`` runs its statement through the latter, so nothing is counted twice)."""

    TARGETS = ((neo4j.AsyncSession, "run"), (neo4j.AsyncManagedTransaction, "run"), (neo4j.AsyncTransaction, "run"))

    def __init__(self) -> None:
        self.count = 0

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        """While inside, every statement sent increments ``count`` (the driver's classes are restored after)."""
        originals = [(cls, name, cls.__dict__.get(name)) for cls, name in self.TARGETS]
        for cls, name in self.TARGETS:
            setattr(cls, name, self._wrap(getattr(cls, name)))
        try:
            yield
        finally:
            for cls, name, original in originals:
                if original is None:
                    delattr(cls, name)
                else:
                    setattr(cls, name, original)

    def _wrap(self, run: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return await run(*args, **kwargs)

        return counted


async def neighbour_pages(store: GraphStore, node_id: str) -> tuple[list[Any], dict[str, NodeRecord]]:
    """Every relationship touching a node, page by page, with the nodes at their other ends."""
    relationships: list[Any] = []
    nodes: dict[str, NodeRecord] = {}
    offset = 0
    while True:
        page = await store.neighbours(NAMESPACE, node_id, limit=100, offset=offset)
        relationships += page.relationships
        nodes.update((node.id, node) for node in page.nodes)
        offset += len(page.relationships)
        if offset >= page.total or not page.relationships:
            return relationships, nodes


async def after_seeds(store: GraphStore, vector: list[float], seeds: list[str], related: set[str]) -> dict[str, Any]:
    """What retrieval does once it has seeds and related queries: split, insights by support, interactions."""
    records = [record for record in await store.get_nodes(NAMESPACE, sorted(related)) if record]
    successes = [r for r in records if r.properties["status"] == "resolved"]
    failures = [r for r in records if r.properties["status"] == "failed"]
    if len(successes) < SUCCESS_K:  # backfill by a search filtered on the outcome, as retrieval does
        successes = [hit.node for hit in await store.vector_search(NAMESPACE, vector, kind=QUERY, k=SUCCESS_K, filters={"status": "resolved"})]
    if FAILURE_K and len(failures) < FAILURE_K:
        failures = [hit.node for hit in await store.vector_search(NAMESPACE, vector, kind=QUERY, k=FAILURE_K, filters={"status": "failed"})]
    probes = {hit.node.id for hit in await store.vector_search(NAMESPACE, vector, kind=QUERY, k=4, filters={"status": "resolved"})}
    probes |= {hit.node.id for hit in await store.vector_search(NAMESPACE, vector, kind=QUERY, k=2, filters={"status": "failed"})}
    support: dict[str, int] = {}
    for probe in sorted(probes | set(seeds)):
        for relationship in (await neighbour_pages(store, probe))[0]:
            if relationship.type == "SUPPORTED_BY" and relationship.target_id == probe:
                support[relationship.source_id] = support.get(relationship.source_id, 0) + 1
    best = sorted(support, key=lambda insight: (-support[insight], insight))[:INSIGHTS_K]
    insights = [record for record in await store.get_nodes(NAMESPACE, best) if record]
    utterances = 0
    for success in successes[: SUCCESS_K // 2 or 1]:
        relationships, _ = await neighbour_pages(store, success.id)
        utterances += sum(1 for relationship in relationships if relationship.type == "HAS_UTTERANCE")
    return {"related": len(related), "insights": len(insights), "utterances": utterances}


async def stand_in(store: GraphStore, embedder: HashingEmbedder, task: str) -> dict[str, Any]:
    """The retrieval's store calls: seeds by vector search, one hop over SIMILAR, then ``after_seeds``."""
    vector = (await embedder.embed([task]))[0]
    seeds = [hit.node.id for hit in await store.vector_search(NAMESPACE, vector, kind=QUERY, k=SEEDS)]
    related = set(seeds)
    for seed in seeds:
        relationships, _ = await neighbour_pages(store, seed)
        related |= {r.source_id if r.target_id == seed else r.target_id for r in relationships if r.type == "SIMILAR"}
    return await after_seeds(store, vector, seeds, related)


async def full_scan(store: GraphStore, embedder: HashingEmbedder, task: str, ids: list[str]) -> dict[str, Any]:
    """The O(N) reference: every query's vector read and scored in numpy; no index, no SIMILAR links."""
    vector = (await embedder.embed([task]))[0]
    records: list[NodeRecord] = []
    for start in range(0, len(ids), CHUNK):
        records += [record for record in await store.get_nodes(NAMESPACE, ids[start : start + CHUNK]) if record]
    matrix = np.asarray([record.embedding for record in records], dtype=np.float32)
    scores = matrix @ np.asarray(vector, dtype=np.float32)
    top = np.argsort(-scores)[: SEEDS + 2]  # the seed and about as many as one SIMILAR hop brings
    seeds = [records[int(index)].id for index in top[:SEEDS]]
    return await after_seeds(store, vector, seeds, {records[int(index)].id for index in top})


async def latency(
    label: str,
    call: Callable[[str], Awaitable[dict[str, Any]]],
    warm: list[str],
    timed: list[str],
    budget: float | None = None,
    store: CountingStore | None = None,
    statements: StatementCounter | None = None,
) -> dict[str, Any]:
    """Percentiles of ``call`` over the ``timed`` tasks after the ``warm`` ones; with ``store`` (and
    ``statements``), what each timed task sent."""
    for task in warm:
        await call(task)
    timings: list[float] = []
    calls: list[Counter[str]] = []
    sent: list[int] = []
    shape: dict[str, Any] = {}
    for task in timed:
        if store is not None:
            store.calls = Counter()
        with statements.counting() if statements is not None else contextlib.nullcontext():
            before = statements.count if statements is not None else 0
            started = time.perf_counter()
            shape = await call(task)
            timings.append(time.perf_counter() - started)
            sent.append(statements.count - before if statements is not None else 0)
        if store is not None:
            calls.append(store.calls)
        if budget is not None and len(timings) >= BASELINE_MIN and sum(timings) > budget:
            break
    result: dict[str, Any] = {
        "p50_ms": round(percentile(timings, 0.50) * 1000, 2),
        "p95_ms": round(percentile(timings, 0.95) * 1000, 2),
        "mean_ms": round(sum(timings) / len(timings) * 1000, 2),
        "timed": len(timings),
        "last_result": shape,
    }
    if calls:
        totals = [sum(counts.values()) for counts in calls]
        by_method = sum(calls, Counter())
        result["store_calls"] = {
            "median": percentile([float(t) for t in totals], 0.5), "max": max(totals),
            "by_method": {name: round(count / len(calls), 2) for name, count in sorted(by_method.items())},
        }
    if statements is not None:
        result["statements"] = {"median": percentile([float(n) for n in sent], 0.5), "max": max(sent), "mean": round(sum(sent) / len(sent), 2)}
    print(f"  {label}: p50 {result['p50_ms']} ms, p95 {result['p95_ms']} ms"
          + (f", {result['store_calls']['median']:.0f} store calls" if calls else "")
          + (f", {result['statements']['median']:.0f} statements" if statements is not None else ""), file=sys.stderr, flush=True)
    return result


def graph_caller(
    store: GraphStore, embedder: HashingEmbedder, settings: Settings
) -> tuple[str, Callable[[str], Awaitable[dict[str, Any]]], GraphRunner | None]:
    """The library graph when it exists, else the stand-in; returns (which, call, runner or None)."""
    try:
        find_graph(GRAPH)
    except FileNotFoundError:  # not in the library yet
        return "stand-in", lambda task: stand_in(store, embedder, task), None
    runner = GraphRunner(load_graph(GRAPH), store=store, embedder=embedder, llm=offline_llm(), settings=settings, checkpointer=None)

    async def call(task: str) -> dict[str, Any]:
        state = (await runner.run({"task": task}, namespace=NAMESPACE)).state
        if state.get("errors"):
            raise RuntimeError(f"{GRAPH} reported errors: {state['errors']}")
        return {"related": len(state.get("related", [])), "insights": len(state.get("insights", [])),
                "trajectories": len(state.get("trajectories", []))}

    return GRAPH, call, runner


async def run_backend(name: str, store: GraphStore, sizes: list[int], settings: Settings) -> dict[str, Any]:
    await store.setup()
    embedder = HashingEmbedder(384)
    generator = Generator(store)
    counted = CountingStore(store)
    statements = StatementCounter() if name == "neo4j" else None
    which, call, runner = graph_caller(counted, embedder, settings)  # a proxy: the runner counts as the store
    rng = random.Random(1234)
    result: dict[str, Any] = {"retrieval": which, "write_batch_rows": CHUNK, "sizes": {}}
    try:
        if runner is not None:
            await runner.__aenter__()
        for size in sizes:
            load = await generator.grow(size, f"{name} load")
            counts = {kind: await store.count_nodes(NAMESPACE, kind) for kind in (QUERY, UTTERANCE, INSIGHT)}
            print(f"{name} @ {size}: {counts}", file=sys.stderr, flush=True)
            warm = [task_text(rng)[0] for _ in range(FIRST_WARMUPS if size == sizes[0] else WARMUPS)]
            timed = [task_text(rng)[0] for _ in range(TIMED)]
            result["sizes"][str(size)] = {
                "stored": counts,
                "relationships": await store.count_relationships(NAMESPACE),
                "load": load,
                "graph": await latency(
                    f"{name} {size} graph ({which})", call, warm, timed, store=counted, statements=statements
                ),
                "baseline": await latency(
                    f"{name} {size} full scan",
                    lambda task: full_scan(store, embedder, task, generator.query_ids),
                    warm[:BASELINE_WARMUPS], timed, budget=BASELINE_BUDGET_S,
                ),
            }
    finally:
        if runner is not None:
            await runner.__aexit__(None, None, None)
        await store.close()
    first, last = result["sizes"][str(sizes[0])], result["sizes"][str(sizes[-1])]
    result["p95_largest_over_smallest"] = round(last["graph"]["p95_ms"] / first["graph"]["p95_ms"], 2)
    if sizes[0] == 1000 and sizes[-1] == 100_000:
        result["p95_100k_over_1k"] = result["p95_largest_over_smallest"]
    result["baseline_p95_largest_over_smallest"] = round(last["baseline"]["p95_ms"] / first["baseline"]["p95_ms"], 2)
    sent = "statements" if statements is not None else "store_calls"
    result["statements_per_retrieval"] = max(row["graph"][sent]["median"] for row in result["sizes"].values())
    result["statements_counted"] = (
        "Cypher statements sent by the driver, median per task, largest over the sizes" if statements is not None
        else "store calls (each one job on the store's SQLite thread), median per task, largest over the sizes"
    )
    return result


def table(results: dict[str, Any]) -> str:
    header = f"{'backend':<8} {'queries':>8} {'graph p50':>10} {'graph p95':>10} {'scan p50':>10} {'scan p95':>10} {'load s':>8}"
    warmups = results["warmups"]
    lines = [
        f"retrieval latency in ms ({results['timed']} timed after {warmups['first_size']} warm-ups at the first size, "
        f"{warmups['other_sizes']} at the others)", header, "-" * len(header),
    ]
    for name, backend in results["backends"].items():
        for size, row in backend["sizes"].items():
            lines.append(f"{name:<8} {size:>8} {row['graph']['p50_ms']:>10} {row['graph']['p95_ms']:>10} "
                         f"{row['baseline']['p50_ms']:>10} {row['baseline']['p95_ms']:>10} {row['load']['seconds']:>8}")
    return "\n".join(lines)


def goals(backends: dict[str, Any], sizes: list[int]) -> dict[str, dict[str, Any]]:
    """Issue #23's goals measured in this run (those whose sizes and backends ran); adds the Neo4j/SQLite ratio."""
    found: dict[str, dict[str, Any]] = {}
    if "neo4j" in backends:
        found["neo4j.statements_per_retrieval"] = {"value": backends["neo4j"]["statements_per_retrieval"], "max": GOALS["statements_per_retrieval"]}
    if {"neo4j", "sqlite"} <= backends.keys() and 1000 in sizes:
        ratio = round(backends["neo4j"]["sizes"]["1000"]["graph"]["p50_ms"] / backends["sqlite"]["sizes"]["1000"]["graph"]["p50_ms"], 2)
        backends["neo4j"]["p50_over_sqlite_1k"] = ratio
        found["neo4j.p50_over_sqlite_1k"] = {"value": ratio, "max": GOALS["p50_over_sqlite_1k"]}
    for name, backend in backends.items():
        if "p95_100k_over_1k" in backend:
            found[f"{name}.p95_100k_over_1k"] = {"value": backend["p95_100k_over_1k"], "max": GOALS["p95_100k_over_1k"]}
    return {goal: {**verdict, "met": verdict["value"] <= verdict["max"]} for goal, verdict in found.items()}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="stored queries at each measurement, ascending")
    parser.add_argument("--backends", default="sqlite,neo4j")
    parser.add_argument("--output", type=Path, default=Path("bench/results/gmemory.json"))
    args = parser.parse_args()
    sizes = sorted(int(size) for size in args.sizes.split(","))
    backends = [name.strip() for name in args.backends.split(",") if name.strip()]
    configure_logging(LogSettings(level="warning", format="json"), stream=open(os.devnull, "w"), force=True)  # noqa: SIM115
    results: dict[str, Any] = {
        "command": "make bench-gmemory",
        "baseline": "full scan: every GQuery read by id and scored in numpy, then the same support and interaction reads",
        "sizes": sizes,
        "per_query": {"utterances": UTTERANCES, "similar_links": "<=1", "insight_every": INSIGHT_EVERY, "support_per_insight": SUPPORT},
        "warmups": {"first_size": FIRST_WARMUPS, "other_sizes": WARMUPS},
        "timed": TIMED,
        "embedder": "hashing-v1-384",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "backends": {},
    }
    with tempfile.TemporaryDirectory() as folder_name:
        folder = Path(folder_name)
        settings = Settings(store=StoreSettings(sqlite_path=folder / "memory.db"))
        if "sqlite" in backends:
            sqlite = SQLiteStore(folder / "memory.db", embedding_model="hashing-v1-384", embedding_dimension=384)
            results["backends"]["sqlite"] = await run_backend("sqlite", sqlite, sizes, settings)
        if "neo4j" in backends:
            uri = os.environ.get("NEO4J_URI")
            if not uri:
                raise SystemExit("NEO4J_URI is not set: run `make bench-gmemory`, which starts a throwaway Neo4j")
            store = Neo4jStore(uri, embedding_model="hashing-v1-384", embedding_dimension=384)
            neo4j_settings = Settings(store=StoreSettings(backend="neo4j", sqlite_path=folder / "memory.db"))
            results["backends"]["neo4j"] = await run_backend("neo4j", store, sizes, neo4j_settings)
    results["goals"] = goals(results["backends"], sizes)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    for goal, verdict in results["goals"].items():
        print(f"{goal}: {verdict['value']} (goal <= {verdict['max']}): {'met' if verdict['met'] else 'NOT met'}")
    print(f"written to {args.output}")


if __name__ == "__main__":
    asyncio.run(main())
