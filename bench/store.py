"""Store benchmark: the Neo4j store against the bare driver, side by side in one process, on one server.

Run with ``make bench-store`` (a throwaway Neo4j is started for it) or, against a throwaway server of your own,
``NEO4J_URI=bolt://... .venv/bin/python bench/store.py`` (``--quick`` for a small run while developing,
``--backends neo4j`` or ``sqlite`` for one section). Writes ``bench/results/store.json``.

What it measures (``neo4j`` section):

- ``batch_rows``: upsert throughput per batch size (``upsert_nodes`` called with batches of that size and
  ``write_chunk_rows`` set to it) next to the raw write of the same rows: the same ``UNWIND`` statement sent with
  the bare driver in a managed transaction, rows built by hand. Batches of every size take turns, so each size sees
  the same index sizes and machine load; each side writes its own label, whose vector index (384 dimensions) is
  online throughout. ``chosen`` is the size the store uses (``WRITE_BATCH_ROWS``).
- ``upsert_vs_best_raw``: our throughput at the chosen size over the best raw throughput of any size.
- ``vector_vs_raw``: after loading one namespace to each size (alone in its kind's vector index) and
  ``db.awaitIndexes``, warm: our ``vector_search`` top-10 p50 over the p50 of the raw driver's ids-only call
  (``CALL db.index.vector.queryNodes(index, 10, $v) YIELD node RETURN node.id``, one auto-commit query, the
  quickest the driver offers), the two interleaved query by query.
- ``recall_at_10``: recall of our top-10 against exact search (numpy over the same vectors) with the old candidate
  pool (``max(4k, 40)``) and the new one (``VECTOR_POOL_PER_HIT`` per hit plus ``VECTOR_POOL_GROWTH`` per tenfold
  of the index's population above ``VECTOR_POOL_BASE_POPULATION``, divided by the share that survives), and
  (``raw_top10``) the raw ids-only call's own;
  ``isotropic_recall_at_10`` the same on isotropic gaussian vectors at the smallest size, in a namespace and
  kind of their own.

The vectors are embedding-like: a 24-dimensional gaussian projected to 384 dimensions plus isotropic noise, so
neighbours are about as distinct as a sentence embedder's (cosine ~0.67 to the nearest, ~0 to the median).
Isotropic random vectors would be a different benchmark: in 384 dimensions every point is nearly equidistant from
every other, and any approximate index then needs hundreds of candidates for recall@10 >= 0.99. Queries come from
the same distribution. The ``sqlite`` section is ``bench/store_sqlite.py``'s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from neo4j import AsyncDriver, AsyncGraphDatabase

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.store_sqlite import measure_sqlite  # noqa: E402
from mnemoflow.memory import Neo4jStore, NodeRecord  # noqa: E402
from mnemoflow.memory.names import NameRegistry  # noqa: E402
from mnemoflow.memory.neo4j import queries  # noqa: E402
from mnemoflow.memory.neo4j import store as neo4j_store  # noqa: E402

DIMENSION = 384
LATENT = 24
MODEL = "bench-embedding-like-384"
NAMESPACE, SWEEP_NAMESPACE, RAW_NAMESPACE, ISOTROPIC_NAMESPACE = "bench", "bench-sweep", "bench-sweep-raw", "bench-isotropic"
KIND, SWEEP_KIND, RAW_LABEL, ISOTROPIC_KIND = "BenchChunk", "BenchSweep", "BenchSweepRaw", "BenchIsotropic"
"""The measured namespace's kind, and the two labels of the write sweep (ours, raw): one vector index each."""
BATCH_SIZES = [250, 500, 1000, 2000, 5000]
OLD_POOL = (4.0, 0.0)
"""The old sizing, ``max(4k, 40)``: 4 candidates per hit at k = 10, whatever the index's population."""


def embedding_like(count: int, seed: int) -> np.ndarray:
    """Unit vectors of low intrinsic dimension, like a text embedder's (see the module docstring)."""
    basis = np.random.default_rng(7).standard_normal((LATENT, DIMENSION))
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, LATENT)) @ basis + 0.5 * rng.standard_normal((count, DIMENSION))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def bench_registry() -> NameRegistry:
    registry = NameRegistry()
    registry.register_kind(KIND, embedded=True)
    registry.register_kind(SWEEP_KIND, embedded=True)
    registry.register_kind(ISOTROPIC_KIND, embedded=True)
    return registry


def records(namespace: str, kind: str, start: int, vectors: np.ndarray) -> list[NodeRecord]:
    return [
        NodeRecord(
            id=f"n{start + offset}",
            namespace=namespace,
            kind=kind,
            text=f"benchmark passage number {start + offset}",
            embedding=vector.tolist(),
            properties={"position": start + offset},
        )
        for offset, vector in enumerate(vectors)
    ]


def raw_rows(start: int, vectors: np.ndarray) -> list[dict[str, Any]]:
    """The rows our upsert sends, built by hand as a caller of the bare driver would."""
    return [
        {
            "values": {
                "namespace": RAW_NAMESPACE,
                "id": f"n{start + offset}",
                "kind": RAW_LABEL,
                "properties": json.dumps({"position": start + offset}),
                "content_hash": str(start + offset),
                "text": f"benchmark passage number {start + offset}",
                "embedding": vector.tolist(),
                "p_position": start + offset,
            }
        }
        for offset, vector in enumerate(vectors)
    ]


def p50_ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 2)


async def raw_write(driver: AsyncDriver, rows: list[dict[str, Any]]) -> None:
    statement = queries.upsert_nodes(RAW_LABEL)

    async def work(tx: Any) -> None:
        await (await tx.run(statement, rows=rows, now="2026-01-01T00:00:00+00:00")).consume()

    async with driver.session() as session:
        await session.execute_write(work)


async def batch_sweep(uri: str, driver: AsyncDriver, rounds: int) -> dict[str, Any]:
    """Throughput per batch size, ours and raw, the sizes taking turns (see the module docstring)."""
    seconds = {size: {"ours": 0.0, "raw": 0.0, "rows": 0} for size in BATCH_SIZES}
    await driver.execute_query(queries.vector_index(RAW_LABEL, DIMENSION))
    next_id = 0
    store = Neo4jStore(uri, embedding_model=MODEL, embedding_dimension=DIMENSION, registry=bench_registry())
    await store.setup()
    for turn in range(rounds):
        for size in BATCH_SIZES:
            store.write_chunk_rows = size
            vectors = embedding_like(size, seed=1_000_000 + next_id)
            batch, rows = records(SWEEP_NAMESPACE, SWEEP_KIND, next_id, vectors), raw_rows(next_id, vectors)
            for side in ["ours", "raw"] if turn % 2 == 0 else ["raw", "ours"]:
                began = time.perf_counter()
                if side == "ours":
                    await store.upsert_nodes(batch)
                else:
                    await raw_write(driver, rows)
                seconds[size][side] += time.perf_counter() - began
            seconds[size]["rows"] += size
            next_id += size
        print(f"sweep round {turn + 1}/{rounds} done", file=sys.stderr)
    await store.close()
    per_size = {
        str(size): {
            "ours_records_per_s": round(figures["rows"] / figures["ours"], 1),
            "raw_records_per_s": round(figures["rows"] / figures["raw"], 1),
            "rows": figures["rows"],
        }
        for size, figures in seconds.items()
    }
    chosen = neo4j_store.WRITE_BATCH_ROWS
    best_raw_size = max(per_size, key=lambda size: per_size[size]["raw_records_per_s"])
    ours = per_size[str(chosen)]["ours_records_per_s"] if str(chosen) in per_size else None
    best_raw = per_size[best_raw_size]["raw_records_per_s"]
    return {
        "batch_rows": {"chosen": chosen, "per_size": per_size, "rounds": rounds},
        "upsert_vs_best_raw": None if ours is None else round(ours / best_raw, 3),
        "upsert": {
            "ours_records_per_s_at_chosen": ours,
            "best_raw_records_per_s": best_raw,
            "best_raw_batch": int(best_raw_size),
        },
    }


async def recall_at_10(
    store: Neo4jStore,
    probes: np.ndarray,
    data: np.ndarray,
    pool: tuple[float, float],
    kind: str = KIND,
    namespace: str = NAMESPACE,
) -> float:
    """Our top-10's recall against exact search, with the pool sizing ``(per hit, growth per tenfold)``."""
    exact = np.argsort(-(probes @ data.T), axis=1)[:, :10]
    saved = neo4j_store.VECTOR_POOL_PER_HIT, neo4j_store.VECTOR_POOL_GROWTH
    neo4j_store.VECTOR_POOL_PER_HIT, neo4j_store.VECTOR_POOL_GROWTH = pool
    try:
        found = 0
        for probe, truth in zip(probes, exact, strict=True):
            hits = await store.vector_search(namespace, probe.tolist(), kind=kind, k=10)
            found += len({int(hit.node.id[1:]) for hit in hits} & set(truth.tolist()))
    finally:
        neo4j_store.VECTOR_POOL_PER_HIT, neo4j_store.VECTOR_POOL_GROWTH = saved
    return round(found / (10 * len(probes)), 4)


async def raw_recall_at_10(driver: AsyncDriver, probes: np.ndarray, data: np.ndarray, kind: str = KIND) -> float:
    """The raw ids-only call's recall: its 10 ids, ranked by the index's own (quantized, approximate) scores."""
    exact = np.argsort(-(probes @ data.T), axis=1)[:, :10]
    statement = "CALL db.index.vector.queryNodes($index, 10, $vector) YIELD node RETURN node.id AS id"
    found = 0
    for probe, truth in zip(probes, exact, strict=True):
        answer = await driver.execute_query(statement, index=queries.vector_index_name(kind), vector=probe.tolist(), routing_="r")
        found += len({int(record["id"][1:]) for record in answer.records} & set(truth.tolist()))
    return round(found / (10 * len(probes)), 4)


async def latency(store: Neo4jStore, driver: AsyncDriver, probes: np.ndarray, warmup: int) -> dict[str, Any]:
    """Ours and the raw ids-only call, interleaved query by query, after ``warmup`` untimed rounds."""
    raw_statement = "CALL db.index.vector.queryNodes($index, 10, $vector) YIELD node RETURN node.id AS id"
    index = queries.vector_index_name(KIND)
    timings: dict[str, list[float]] = {"ours": [], "raw": [], "raw_execute_query": []}
    for count, probe in enumerate(probes):
        vector = probe.tolist()
        for name in timings:
            began = time.perf_counter()
            if name == "ours":
                hits = await store.vector_search(NAMESPACE, vector, kind=KIND, k=10)
                assert len(hits) == 10
            elif name == "raw":
                async with driver.session() as session:
                    result = await session.run(raw_statement, index=index, vector=vector)
                    assert len([record["id"] async for record in result]) == 10
            else:
                answer = await driver.execute_query(raw_statement, index=index, vector=vector, routing_="r")
                assert len(answer.records) == 10
            if count >= warmup:
                timings[name].append(time.perf_counter() - began)
    ours, raw = p50_ms(timings["ours"]), p50_ms(timings["raw"])
    return {
        "ours_p50_ms": ours,
        "raw_p50_ms": raw,
        "raw_execute_query_p50_ms": p50_ms(timings["raw_execute_query"]),
        "ours_p95_ms": round(float(np.percentile(timings["ours"], 95)) * 1000, 2),
        "ratio": round(ours / raw, 3),
        "queries": len(timings["ours"]),
    }


async def isotropic_recall(store: Neo4jStore, driver: AsyncDriver, size: int, probes: int) -> dict[str, Any]:
    """Recall on isotropic gaussian vectors, the worst case for an approximate index (see the module docstring)."""
    rng = np.random.default_rng(30_000_000)
    data = rng.standard_normal((size, DIMENSION))
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    for start in range(0, size, neo4j_store.WRITE_BATCH_ROWS):
        await store.upsert_nodes(
            records(ISOTROPIC_NAMESPACE, ISOTROPIC_KIND, start, data[start : start + neo4j_store.WRITE_BATCH_ROWS])
        )
    await driver.execute_query("CALL db.awaitIndexes(600)")
    queries_set = rng.standard_normal((probes, DIMENSION))
    queries_set /= np.linalg.norm(queries_set, axis=1, keepdims=True)
    return {
        "size": size,
        "old_pool": await recall_at_10(store, queries_set, data, OLD_POOL, ISOTROPIC_KIND, ISOTROPIC_NAMESPACE),
        "new_pool": await recall_at_10(store, queries_set, data, new_pool(), ISOTROPIC_KIND, ISOTROPIC_NAMESPACE),
        "probes": probes,
    }


def new_pool() -> tuple[float, float]:
    return neo4j_store.VECTOR_POOL_PER_HIT, neo4j_store.VECTOR_POOL_GROWTH


def size_label(size: int) -> str:
    return f"{size // 1000}k" if size % 1000 == 0 else str(size)


async def measure_neo4j(uri: str, sizes: list[int], rounds: int, queries_count: int, recall_probes: int) -> dict[str, Any]:
    driver = AsyncGraphDatabase.driver(uri)
    async with driver:
        version = (await driver.execute_query("CALL dbms.components() YIELD versions RETURN versions[0] AS v")).records[0]["v"]
        await driver.execute_query(
            "MATCH (n:MfNode) WHERE n.namespace IN $namespaces DETACH DELETE n",
            namespaces=[NAMESPACE, SWEEP_NAMESPACE, RAW_NAMESPACE, ISOTROPIC_NAMESPACE],
        )
        results: dict[str, Any] = {"server": f"Neo4j Community {version}", **await batch_sweep(uri, driver, rounds)}
        store = Neo4jStore(uri, embedding_model=MODEL, embedding_dimension=DIMENSION, registry=bench_registry())
        await store.setup()
        loaded: list[np.ndarray] = []
        results["vector_vs_raw"], results["recall_at_10"], results["vector_latency"] = {}, {}, {}
        began, written = time.perf_counter(), 0
        for size in sorted(sizes):
            while written < size:
                vectors = embedding_like(min(neo4j_store.WRITE_BATCH_ROWS, size - written), seed=written)
                await store.upsert_nodes(records(NAMESPACE, KIND, written, vectors))
                loaded.append(vectors.astype(np.float32))
                written += len(vectors)
            print(f"loaded {written} in {time.perf_counter() - began:.0f}s", file=sys.stderr)
            await driver.execute_query("CALL db.awaitIndexes(600)")
            data = np.vstack(loaded)
            probes = embedding_like(queries_count, seed=10_000_000 + size)
            figures = await latency(store, driver, probes, warmup=min(20, queries_count // 5))
            label = size_label(size)
            results["vector_latency"][label] = figures
            results["vector_vs_raw"][label] = figures["ratio"]
            recall_set = embedding_like(recall_probes, seed=20_000_000 + size).astype(np.float32)
            results["recall_at_10"][label] = {
                "old_pool": await recall_at_10(store, recall_set, data, OLD_POOL),
                "new_pool": await recall_at_10(store, recall_set, data, new_pool()),
                "raw_top10": await raw_recall_at_10(driver, recall_set, data),
                "probes": recall_probes,
            }
            print(f"{label}: {json.dumps(figures)} recall {results['recall_at_10'][label]}", file=sys.stderr)
        results["isotropic_recall_at_10"] = await isotropic_recall(store, driver, min(sizes), recall_probes)
        await store.close()
    results["vector_pool"] = {
        "old": {"per_hit": OLD_POOL[0], "growth_per_tenfold": OLD_POOL[1]},
        "new": {
            "per_hit": new_pool()[0],
            "growth_per_tenfold": new_pool()[1],
            "base_population": neo4j_store.VECTOR_POOL_BASE_POPULATION,
        },
    }
    return results


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="namespace sizes at which reads are measured")
    parser.add_argument("--rounds", type=int, default=3, help="turns of the batch-size sweep")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--recall-probes", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="small sizes while developing: 3k nodes, one sweep round")
    parser.add_argument("--backends", default="neo4j,sqlite")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sqlite section")
    parser.add_argument("--output", type=Path, default=Path("bench/results/store.json"))
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.rounds, args.queries, args.recall_probes = "3000", 1, 100, 50
    sizes = [int(size) for size in args.sizes.split(",")]
    backends = set(args.backends.split(","))
    results: dict[str, Any] = {
        "command": "make bench-store" + (" (--quick)" if args.quick else ""),
        "dimension": DIMENSION,
        "data": f"embedding-like: a {LATENT}-dimensional gaussian projected to {DIMENSION} dimensions plus noise",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
    }
    if "neo4j" in backends:
        uri = os.environ.get("NEO4J_URI")
        if not uri:
            raise SystemExit("NEO4J_URI is not set: run `make bench-store`, which starts a throwaway Neo4j")
        results["neo4j"] = await measure_neo4j(uri, sizes, args.rounds, args.queries, args.recall_probes)
    if "sqlite" in backends:
        results["sqlite"] = await measure_sqlite(sizes, seed=args.seed)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
