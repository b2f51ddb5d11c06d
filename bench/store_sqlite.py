"""SQLite store benchmark: upserts against raw ``sqlite3`` doing the same work, and vector top-10 at 1k/10k/100k.

Measures, in one process on one temporary file:

- **upserts** (``ratio_to_baseline``): batches of 1,000 ``Chunk`` nodes (384 dims, text, one property) through
  ``SQLiteStore.upsert_nodes``, each followed by the same rows written the raw way into another namespace of
  the same file: the same ``INSERT ... ON CONFLICT`` through ``sqlite3`` in one ``BEGIN IMMEDIATE``, so the same
  table, indexes, FTS5 and vector-log triggers, from the same inputs (the record's Python list of floats, packed
  with ``array``; properties with ``json.dumps``). The store does more (validation, a content hash, the kind and
  claim checks), which is what the ratio prices.
- **vector top-10** at each size: a namespace of that many vectors, warm (the first query, which loads or
  builds the index, is reported apart), p50/p95 over random queries; ``recall_at_10`` against exact cosine top-10
  in numpy over the same vectors. The data are embeddings with 32 latent dimensions plus isotropic noise (text
  embeddings have an intrinsic dimension of that order), queries from the same distribution;
  ``isotropic_recall_at_10`` repeats the recall on isotropic Gaussian vectors, where no point is much nearer
  than another (the worst case for any graph index). ``filtered`` runs the same queries with
  ``filters={"half": ...}`` (half the nodes pass) and with a filter only 1% pass.
- **index choice** (``--compare 1000,10000``): the candidates on the same vectors, outside the store: a numpy scan,
  usearch at f32 and i8, hnswlib if installed: build seconds, query p50/p95, recall@10 with exact rescoring.

Run alone: ``.venv/bin/python bench/store_sqlite.py --output bench/results/store_sqlite.json`` (add ``--quick``
for 1k/10k and fewer queries, ``--compare SIZES`` for the index comparison); ``bench/store.py`` calls
:func:`measure_sqlite` for the ``sqlite`` section of ``bench/results/store.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sqlite3
import sys
import tempfile
import time
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnemoflow.memory import NodeRecord, SQLiteStore  # noqa: E402
from mnemoflow.memory.sqlite import vectors  # noqa: E402

DIMENSION = 384
LATENT = 32
MODEL = "bench-latent-384"
BATCH = 1_000
NOW = "2026-01-01T00:00:00+00:00"


def latent_vectors(count: int, seed: int, basis_seed: int = 0) -> np.ndarray:
    """Unit vectors ``A z + noise``: ``LATENT`` latent dimensions in ``DIMENSION``, 10% noise."""
    basis = np.random.default_rng(basis_seed).standard_normal((LATENT, DIMENSION)) / np.sqrt(LATENT)
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, LATENT)) @ basis + 0.1 * rng.standard_normal((count, DIMENSION))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def isotropic_vectors(count: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((count, DIMENSION))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def chunk_records(namespace: str, start: int, batch: np.ndarray) -> list[NodeRecord]:
    return [
        NodeRecord(
            id=f"n{start + offset}",
            namespace=namespace,
            kind="Chunk",
            text=f"benchmark passage number {start + offset}",
            embedding=vector.tolist(),
            properties={"position": start + offset, "half": (start + offset) % 2, "rare": (start + offset) % 100 == 0},
        )
        for offset, vector in enumerate(batch)
    ]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def milliseconds(seconds: float) -> float:
    return round(seconds * 1000, 3)


class RawWriter:
    """The baseline: the store's INSERT through the bare sqlite3 module, on the same file, from the same inputs."""

    def __init__(self, path: Path) -> None:
        self.connection = sqlite3.connect(path, isolation_level=None, timeout=30)
        self.connection.execute("PRAGMA synchronous=NORMAL")

    def write(self, records: list[NodeRecord]) -> None:
        rows = []
        for record in records:
            properties = json.dumps(record.properties)
            rows.append(
                (
                    "bench-raw",
                    record.id,
                    record.kind,
                    properties,
                    record.text,
                    array("d", record.embedding or ()).tobytes(),
                    properties,
                    NOW,
                    NOW,
                )
            )
        self.connection.execute("BEGIN IMMEDIATE")
        self.connection.executemany(
            "INSERT INTO nodes (namespace, id, kind, properties, text, embedding, content_hash, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (namespace, id) DO UPDATE SET properties = excluded.properties, "
            "text = excluded.text, embedding = excluded.embedding, content_hash = excluded.content_hash",
            rows,
        )
        self.connection.execute("COMMIT")


async def measure_writes(store: SQLiteStore, path: Path, nodes: int, seed: int) -> dict[str, Any]:
    raw = RawWriter(path)
    ours = baseline = 0.0
    for start in range(0, nodes, BATCH):
        batch = latent_vectors(min(BATCH, nodes - start), seed + start)
        ours_records = chunk_records("bench-ours", start, batch)
        raw_records = chunk_records("bench-raw", start, batch)
        began = time.perf_counter()
        await store.upsert_nodes(ours_records)
        ours += time.perf_counter() - began
        began = time.perf_counter()
        raw.write(raw_records)
        baseline += time.perf_counter() - began
    raw.connection.close()
    return {
        "nodes": nodes,
        "batch": BATCH,
        "upsert_records_per_s": round(nodes / ours, 1),
        "baseline_records_per_s": round(nodes / baseline, 1),
        "ratio_to_baseline": round(baseline / ours, 3),
        "baseline": "the same INSERT ... ON CONFLICT through sqlite3 into the same table (same indexes, FTS5 and "
        "vector-log triggers), one BEGIN IMMEDIATE per batch, interleaved batch by batch with ours",
    }


def exact_top10(data: np.ndarray, query: np.ndarray, keep: np.ndarray | None = None) -> set[str]:
    scores = data @ query
    if keep is not None:
        scores = np.where(keep, scores, -np.inf)
    return {f"n{index}" for index in np.argsort(-scores)[:10]}


async def fill(store: SQLiteStore, namespace: str, data: np.ndarray) -> None:
    for start in range(0, len(data), BATCH):
        await store.upsert_nodes(chunk_records(namespace, start, data[start : start + BATCH]))


async def search_timings(
    store: SQLiteStore, data: dict[str, np.ndarray], queries: np.ndarray, filters: dict[str, Any] | None, passing: Any
) -> dict[str, dict[str, Any]]:
    """Per namespace: the first query apart, then each query on every namespace in turn (interleaved, so that
    the machine's load falls on every size alike), with recall against the exact top-10 among ``passing`` rows."""
    firsts = {}
    for namespace in data:
        began = time.perf_counter()
        await store.vector_search(namespace, queries[0].tolist(), kind="Chunk", k=10, filters=filters)
        firsts[namespace] = time.perf_counter() - began
    timings: dict[str, list[float]] = {namespace: [] for namespace in data}
    found = dict.fromkeys(data, 0)
    for query in queries[1:]:
        vector = query.tolist()
        for namespace, vectors_of in data.items():
            began = time.perf_counter()
            hits = await store.vector_search(namespace, vector, kind="Chunk", k=10, filters=filters)
            timings[namespace].append(time.perf_counter() - began)
            keep = None if passing is None else passing(np.arange(len(vectors_of)))
            found[namespace] += len({hit.node.id for hit in hits} & exact_top10(vectors_of, query, keep))
    return {
        namespace: {
            "first_query_ms": milliseconds(firsts[namespace]),
            "p50_ms": milliseconds(percentile(timings[namespace], 0.5)),
            "p95_ms": milliseconds(percentile(timings[namespace], 0.95)),
            "recall_at_10": round(found[namespace] / (10 * len(timings[namespace])), 4),
            "queries": len(timings[namespace]),
        }
        for namespace in data
    }


async def measure_vectors(store: SQLiteStore, sizes: list[int], queries: int, seed: int) -> dict[str, Any]:
    data = {f"bench-vectors-{size}": latent_vectors(size, seed + size) for size in sizes}
    for namespace, vectors_of in data.items():
        await fill(store, namespace, vectors_of)
    probes = latent_vectors(queries + 1, seed + 1)
    plain = await search_timings(store, data, probes, None, None)
    few = probes[: queries // 4 + 1]
    half = await search_timings(store, data, few, {"half": 1}, lambda positions: positions % 2 == 1)
    rare = await search_timings(store, data, few, {"rare": True}, lambda positions: positions % 100 == 0)
    return {
        str(size): {
            **plain[namespace],
            "approximate": size >= vectors.EXACT_BELOW,
            "filtered": {"half_pass": half[namespace], "one_percent_pass": rare[namespace]},
        }
        for size, namespace in zip(sizes, data, strict=True)
    }


async def isotropic_recall(store: SQLiteStore, size: int, queries: int, seed: int) -> float:
    namespace = f"bench-isotropic-{size}"
    data = isotropic_vectors(size, seed)
    await fill(store, namespace, data)
    timings = await search_timings(store, {namespace: data}, isotropic_vectors(queries + 1, seed + 1), None, None)
    return float(timings[namespace]["recall_at_10"])


def compare_indexes(size: int, queries: int, seed: int) -> dict[str, Any]:
    """The candidate indexes on the same vectors, outside the store, each with exact rescoring of its candidates."""
    from usearch.index import Index

    data = latent_vectors(size, seed).astype(np.float32)
    probes = latent_vectors(queries, seed + 1).astype(np.float32)
    truth = [set(np.argsort(-(data @ probe))[:10].tolist()) for probe in probes]
    candidates = vectors.oversampled(10)

    def run(search: Any) -> dict[str, float]:
        timings, found = [], 0
        for probe, expected in zip(probes, truth, strict=True):
            began = time.perf_counter()
            keys = np.asarray(search(probe), dtype=np.int64)
            best = keys[np.argsort(-(data[keys] @ probe))[:10]]
            timings.append(time.perf_counter() - began)
            found += len(expected & set(best.tolist()))
        return {"p50_ms": milliseconds(percentile(timings, 0.5)), "p95_ms": milliseconds(percentile(timings, 0.95)), "recall_at_10": round(found / (10 * len(probes)), 4)}

    results: dict[str, Any] = {"numpy_scan": run(lambda probe: np.argpartition(-(data @ probe), 10)[:10])}
    results["numpy_scan"]["memory_mb"] = round(data.nbytes / 1e6, 1)
    for dtype in ("f32", "i8"):
        began = time.perf_counter()
        index = Index(ndim=DIMENSION, metric="cos", dtype=dtype, connectivity=16, expansion_add=128, expansion_search=vectors.SEARCH_BREADTH)
        index.add(np.arange(size, dtype=np.uint64), data)
        built = time.perf_counter() - began
        results[f"usearch_{dtype}"] = {
            "build_s": round(built, 2),
            **run(lambda probe, index=index: index.search(probe, candidates).keys),
            "memory_mb": round(index.memory_usage / 1e6, 1),
        }
    try:
        import hnswlib  # type: ignore[import-not-found]
    except ImportError:
        results["hnswlib"] = "not installed (no wheel: it compiles from source)"
    else:
        began = time.perf_counter()
        graph = hnswlib.Index(space="cosine", dim=DIMENSION)
        graph.init_index(max_elements=size, ef_construction=128, M=16)
        graph.add_items(data, np.arange(size))
        graph.set_ef(max(candidates, vectors.SEARCH_BREADTH))
        built = time.perf_counter() - began
        results["hnswlib"] = {"build_s": round(built, 2), **run(lambda probe: graph.knn_query(probe, k=candidates)[0][0])}
    results["candidates"] = candidates
    return results


async def first_query_of_a_new_store(path: Path, size: int) -> float:
    """A second store on the file (what a new process does): its first query loads the saved index."""
    store = SQLiteStore(path, embedding_model=MODEL, embedding_dimension=DIMENSION)
    await store.setup()
    try:
        began = time.perf_counter()
        await store.vector_search(f"bench-vectors-{size}", latent_vectors(1, 99)[0].tolist(), kind="Chunk", k=10)
        return milliseconds(time.perf_counter() - began)
    finally:
        await store.close()


async def measure_sqlite(sizes: list[int], *, seed: int, queries: int = 200, compare: Sequence[int] = ()) -> dict[str, Any]:
    """The ``sqlite`` section of ``bench/results/store.json``: write ratio, vector latency per size, recall."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.db"
        store = SQLiteStore(path, embedding_model=MODEL, embedding_dimension=DIMENSION)
        await store.setup()
        try:
            writes = await measure_writes(store, path, min(max(sizes), 20_000), seed)
            latency = await measure_vectors(store, sizes, queries, seed)
            reopened = await first_query_of_a_new_store(path, max(sizes))
            isotropic = await isotropic_recall(store, min(max(sizes), 10_000), queries // 2, seed + 7)
        finally:
            await store.close()
    smallest, largest = str(min(sizes)), str(max(sizes))
    result: dict[str, Any] = {
        **writes,
        "vector_top10_latency": latency,
        f"p95_{int(largest) // 1000}k_over_{int(smallest) // 1000}k": round(
            latency[largest]["p95_ms"] / latency[smallest]["p95_ms"], 2
        ),
        "recall_at_10": min(entry["recall_at_10"] for entry in latency.values()),
        "isotropic_recall_at_10": isotropic,
        f"first_query_{int(largest) // 1000}k_new_process_ms": reopened,
        "index": {
            "choice": f"usearch HNSW, int8, exact rescoring of {vectors.oversampled(10)} candidates; "
            f"a numpy scan below {vectors.EXACT_BELOW} vectors; saved next to the database file (<db>.vectors/) "
            "so a new process loads it (first_query_*_new_process_ms) instead of building it (first_query_ms)",
            "exact_below": vectors.EXACT_BELOW,
        },
        "data": f"{DIMENSION}-d unit vectors with {LATENT} latent dimensions and 10% isotropic noise",
    }
    if compare:
        result["index"]["alternatives"] = {str(size): compare_indexes(size, min(queries, 100), seed) for size in compare}
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("bench/results/store_sqlite.json"))
    parser.add_argument("--quick", action="store_true", help="1k and 10k, 50 queries")
    parser.add_argument(
        "--compare", default="", help="also measure the candidate indexes outside the store at these sizes, e.g. 1000,10000"
    )
    parser.add_argument("--seed", type=int, default=23)
    args = parser.parse_args()
    sizes = [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000]
    result = {
        "command": "python bench/store_sqlite.py" + (" --quick" if args.quick else "") + (f" --compare {args.compare}" if args.compare else ""),
        "dimension": DIMENSION,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "sqlite": sqlite3.sqlite_version},
        "sqlite": await measure_sqlite(
            sizes, seed=args.seed, queries=50 if args.quick else 200, compare=[int(size) for size in args.compare.split(",") if size]
        ),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
