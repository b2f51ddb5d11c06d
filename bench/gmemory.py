"""G-Memory benchmark: retrieval latency as the memory grows, against a full scan, on SQLite and Neo4j.

A synthetic memory is written straight through the store API (no model), in one namespace per backend that
grows to each size in turn (1k, 10k, 100k stored queries by default), so the vector index holds exactly the
queries measured. Per query (record contract: ``nodes/gmemory/model.py``): one ``GQuery`` embedded with
``HashingEmbedder(384)`` over a task drawn from templates x objects x places (so similar tasks exist),
three ``GUtterance`` records (``HAS_UTTERANCE``, ``NEXT``), one ``SIMILAR`` link to the last earlier query
of the same template and object; per ten queries one ``GInsight`` ``SUPPORTED_BY`` five queries.

At each size, with 5 warm-ups then 30 timed tasks (new task texts from the same vocabulary):

- **graph**: the ``gmemory-retrieve`` library graph through ``GraphRunner`` with the offline model (so model
  latency does not count); where that graph is missing, a stand-in making the same kinds of store calls
  (``stand_in``; the JSON's ``retrieval`` says which ran).
- **baseline**: a full scan: every ``GQuery`` of the namespace read with ``get_nodes`` (the ids the bench wrote),
  cosine top-k in numpy, then the stand-in's support and interaction reads (``after_seeds``: lighter than the
  graph's, so the comparison favours the baseline). The store API has no call listing every relationship, and
  one ``neighbours`` read per insight would be N/10 reads per task, so support is counted from the probe
  queries' pages. At 100k a scan takes many seconds, so it gets one warm-up and as many timed tasks as fit in
  60 s (at least 3); ``timed`` in the JSON says how many.

Goal: on Neo4j, p95 at the largest size at most 3x p95 at the smallest (index-backed, sublinear).
Writes ``bench/results/gmemory.json``; run with
``infra/with-neo4j.sh .venv/bin/python .venv/bin/python bench/gmemory.py --output bench/results/gmemory.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

_ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _ROOT / "bench"]  # bench/gmemory.py is not the nodes package
sys.path.insert(0, str(_ROOT))

import mnemoflow.nodes.gmemory.state  # noqa: E402, F401  (registers the kinds and the state)
from mnemoflow.graphs import GraphRunner, load_graph  # noqa: E402
from mnemoflow.graphs.loader import find_graph  # noqa: E402
from mnemoflow.logging import configure_logging  # noqa: E402
from mnemoflow.memory import HashingEmbedder, Neo4jStore, NodeRecord, RelationshipRecord, SQLiteStore  # noqa: E402
from mnemoflow.memory.protocol import GraphStore  # noqa: E402
from mnemoflow.nodes.gmemory.model import INSIGHT, QUERY, UTTERANCE, insight_id, query_id, utterance_id  # noqa: E402
from mnemoflow.settings import LogSettings, Settings, StoreSettings  # noqa: E402
from tests.conftest import offline_llm  # noqa: E402

NAMESPACE = "bench-gmemory"
GRAPH = "gmemory-retrieve"
CHUNK = 5_000
"""Records per store call while loading: bounds memory; both backends take far more in one call."""
WARMUPS, TIMED = 5, 30
BASELINE_WARMUPS, BASELINE_MIN, BASELINE_BUDGET_S = 1, 3, 60.0
"""The full scan takes many seconds per task at 100k on Neo4j: one warm-up, then TIMED tasks or as many as fit in
BASELINE_BUDGET_S seconds, at least BASELINE_MIN."""
GOAL_RATIO = 3.0
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
            written["nodes"] += await self.store.upsert_nodes(nodes)
            for start in range(0, len(relationships), CHUNK * 2):
                written["relationships"] += await self.store.upsert_relationships(relationships[start : start + CHUNK * 2])
            elapsed = time.perf_counter() - started
            print(f"{label}: {len(self.query_ids)}/{target} queries, {written['nodes']} nodes and "
                  f"{written['relationships']} relationships in {elapsed:.1f}s", file=sys.stderr, flush=True)
        seconds = time.perf_counter() - started
        return {**written, "seconds": round(seconds, 1), "records_per_s": round(sum(written.values()) / max(seconds, 1e-9))}

    def chunk(self, count: int) -> tuple[list[NodeRecord], list[RelationshipRecord]]:
        nodes: list[NodeRecord] = []
        relationships: list[RelationshipRecord] = []
        rel = lambda type_, source, target, **props: relationships.append(  # noqa: E731
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


async def neighbour_pages(store: GraphStore, node_id: str) -> tuple[list[Any], dict[str, NodeRecord]]:
    """Every relationship touching a node, page by page, with the nodes at their other ends."""
    relationships, nodes, offset = [], {}, 0
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
    label: str, call: Callable[[str], Awaitable[dict[str, Any]]], tasks: list[str], warmups: int = WARMUPS, budget: float | None = None
) -> dict[str, Any]:
    for task in tasks[:warmups]:
        await call(task)
    timings: list[float] = []
    shape: dict[str, Any] = {}
    for task in tasks[WARMUPS:]:
        started = time.perf_counter()
        shape = await call(task)
        timings.append(time.perf_counter() - started)
        if budget is not None and len(timings) >= BASELINE_MIN and sum(timings) > budget:
            break
    result = {
        "p50_ms": round(percentile(timings, 0.50) * 1000, 2),
        "p95_ms": round(percentile(timings, 0.95) * 1000, 2),
        "mean_ms": round(sum(timings) / len(timings) * 1000, 2),
        "timed": len(timings),
        "last_result": shape,
    }
    print(f"  {label}: p50 {result['p50_ms']} ms, p95 {result['p95_ms']} ms", file=sys.stderr, flush=True)
    return result


def graph_caller(store: GraphStore, embedder: HashingEmbedder, settings: Settings) -> tuple[str, Callable[[str], Awaitable[dict[str, Any]]], Any]:
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
    which, call, runner = graph_caller(store, embedder, settings)
    rng = random.Random(1234)
    result: dict[str, Any] = {"retrieval": which, "sizes": {}}
    try:
        if runner is not None:
            await runner.__aenter__()
        for size in sizes:
            load = await generator.grow(size, f"{name} load")
            counts = {kind: await store.count_nodes(NAMESPACE, kind) for kind in (QUERY, UTTERANCE, INSIGHT)}
            print(f"{name} @ {size}: {counts}", file=sys.stderr, flush=True)
            tasks = [task_text(rng)[0] for _ in range(WARMUPS + TIMED)]
            result["sizes"][str(size)] = {
                "stored": counts,
                "relationships": await store.count_relationships(NAMESPACE),
                "load": load,
                "graph": await latency(f"{name} {size} graph ({which})", call, tasks),
                "baseline": await latency(
                    f"{name} {size} full scan",
                    lambda task: full_scan(store, embedder, task, generator.query_ids), tasks,
                    warmups=BASELINE_WARMUPS, budget=BASELINE_BUDGET_S,
                ),
            }
    finally:
        if runner is not None:
            await runner.__aexit__(None, None, None)
        await store.close()
    first, last = result["sizes"][str(sizes[0])], result["sizes"][str(sizes[-1])]
    result["graph_p95_ratio_largest_to_smallest"] = round(last["graph"]["p95_ms"] / first["graph"]["p95_ms"], 2)
    result["baseline_p95_ratio_largest_to_smallest"] = round(last["baseline"]["p95_ms"] / first["baseline"]["p95_ms"], 2)
    return result


def table(results: dict[str, Any]) -> str:
    header = f"{'backend':<8} {'queries':>8} {'graph p50':>10} {'graph p95':>10} {'scan p50':>10} {'scan p95':>10} {'load s':>8}"
    lines = [f"retrieval latency in ms ({results['timed']} timed after {results['warmups']} warm-ups)", header, "-" * len(header)]
    for name, backend in results["backends"].items():
        for size, row in backend["sizes"].items():
            lines.append(f"{name:<8} {size:>8} {row['graph']['p50_ms']:>10} {row['graph']['p95_ms']:>10} "
                         f"{row['baseline']['p50_ms']:>10} {row['baseline']['p95_ms']:>10} {row['load']['seconds']:>8}")
    return "\n".join(lines)


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
        "sizes": sizes,
        "per_query": {"utterances": UTTERANCES, "similar_links": "<=1", "insight_every": INSIGHT_EVERY, "support_per_insight": SUPPORT},
        "warmups": WARMUPS,
        "timed": TIMED,
        "embedder": "hashing-v1-384",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "backends": {},
    }
    with tempfile.TemporaryDirectory() as folder_name:
        folder = Path(folder_name)
        settings = Settings(store=StoreSettings(sqlite_path=folder / "memory.db"))
        if "sqlite" in backends:
            store = SQLiteStore(folder / "memory.db", embedding_model="hashing-v1-384", embedding_dimension=384)
            results["backends"]["sqlite"] = await run_backend("sqlite", store, sizes, settings)
        if "neo4j" in backends:
            uri = os.environ.get("NEO4J_URI")
            if not uri:
                raise SystemExit("NEO4J_URI is not set: run `make bench-gmemory`, which starts a throwaway Neo4j")
            store = Neo4jStore(uri, embedding_model="hashing-v1-384", embedding_dimension=384)
            neo4j_settings = Settings(store=StoreSettings(backend="neo4j", sqlite_path=folder / "memory.db"))
            results["backends"]["neo4j"] = await run_backend("neo4j", store, sizes, neo4j_settings)
    if "neo4j" in results["backends"]:
        ratio = results["backends"]["neo4j"]["graph_p95_ratio_largest_to_smallest"]
        results["goal"] = {"neo4j_p95_ratio_max": GOAL_RATIO, "neo4j_p95_ratio": ratio, "met": ratio <= GOAL_RATIO}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    if "goal" in results:
        print(f"Neo4j graph p95 {sizes[-1]}/{sizes[0]}: {results['goal']['neo4j_p95_ratio']}x (goal <= {GOAL_RATIO}x): "
              f"{'met' if results['goal']['met'] else 'NOT met'}")
    print(f"written to {args.output}")


if __name__ == "__main__":
    asyncio.run(main())
