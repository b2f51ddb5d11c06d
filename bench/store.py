"""Store benchmark: upsert throughput against a bare-driver baseline, and vector top-10 latency.

Run with ``make bench-store`` (a throwaway Neo4j is started for it) or, against a server of your own,
``NEO4J_URI=bolt://... .venv/bin/python bench/store.py``. Writes ``bench/results/store.json``.

Upserts go in batches; each of our batches is followed by the same batch sent the bare way (the same
``UNWIND`` statement through the ``neo4j`` driver, or the same ``INSERT`` through ``sqlite3``) into another
namespace, so both paths see the same server, index sizes and machine load. Latency is measured after
10k and after all nodes, with random query vectors, warm (the first query's cost is reported apart).
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
from pathlib import Path
from typing import Any

import numpy as np
from neo4j import AsyncGraphDatabase

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnemoflow.memory import Neo4jStore, NodeRecord, SQLiteStore  # noqa: E402
from mnemoflow.memory.neo4j import queries  # noqa: E402
from mnemoflow.memory.protocol import GraphStore  # noqa: E402

DIMENSION = 384
MODEL = "bench-random-384"
OURS, RAW = "bench-ours", "bench-raw"


def make_vectors(count: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((count, DIMENSION))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def records(start: int, vectors: np.ndarray) -> list[NodeRecord]:
    return [
        NodeRecord(
            id=f"n{start + offset}",
            namespace=OURS,
            kind="Chunk",
            text=f"benchmark passage number {start + offset}",
            embedding=vector.tolist(),
            properties={"position": start + offset},
        )
        for offset, vector in enumerate(vectors)
    ]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


async def vector_latency(store: GraphStore, queries_count: int, seed: int) -> dict[str, float]:
    probes = make_vectors(queries_count + 1, seed)
    started = time.perf_counter()
    await store.vector_search(OURS, probes[0].tolist(), kind="Chunk", k=10)
    first = time.perf_counter() - started
    timings = []
    for probe in probes[1:]:
        started = time.perf_counter()
        hits = await store.vector_search(OURS, probe.tolist(), kind="Chunk", k=10)
        timings.append(time.perf_counter() - started)
        assert len(hits) == 10
    return {
        "first_query_ms": round(first * 1000, 2),
        "p50_ms": round(percentile(timings, 0.50) * 1000, 2),
        "p95_ms": round(percentile(timings, 0.95) * 1000, 2),
        "queries": queries_count,
    }


class RawNeo4j:
    """The baseline: the same UNWIND statement sent with the bare driver, rows built by hand."""

    def __init__(self, uri: str) -> None:
        self.driver = AsyncGraphDatabase.driver(uri)
        self.statement = queries.upsert_nodes("Chunk")

    async def write(self, start: int, vectors: np.ndarray, now: str) -> None:
        rows = [
            {
                "values": {
                    "namespace": RAW,
                    "id": f"n{start + offset}",
                    "kind": "Chunk",
                    "properties": json.dumps({"position": start + offset}),
                    "content_hash": str(start + offset),
                    "text": f"benchmark passage number {start + offset}",
                    "embedding": vector.tolist(),
                    "p_position": start + offset,
                }
            }
            for offset, vector in enumerate(vectors)
        ]

        async def work(tx: Any) -> None:
            await (await tx.run(self.statement, rows=rows, now=now)).consume()

        async with self.driver.session() as session:
            await session.execute_write(work)


class RawSQLite:
    """The baseline: the same INSERT through the bare sqlite3 module, on the same file."""

    def __init__(self, path: Path) -> None:
        self.connection = sqlite3.connect(path, isolation_level=None, timeout=30)

    def write(self, start: int, vectors: np.ndarray, now: str) -> None:
        rows = [
            (
                RAW,
                f"n{start + offset}",
                "Chunk",
                json.dumps({"position": start + offset}),
                f"benchmark passage number {start + offset}",
                np.asarray(vector, dtype=np.float64).tobytes(),
                str(start + offset),
                now,
                now,
            )
            for offset, vector in enumerate(vectors)
        ]
        self.connection.execute("BEGIN IMMEDIATE")
        self.connection.executemany(
            "INSERT INTO nodes (namespace, id, kind, properties, text, embedding, content_hash, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (namespace, id) DO UPDATE SET properties = excluded.properties",
            rows,
        )
        self.connection.execute("COMMIT")


async def run_backend(name: str, store: GraphStore, raw: RawNeo4j | RawSQLite, nodes: int, batch: int, queries_count: int) -> dict[str, Any]:
    await store.setup()
    ours_seconds = raw_seconds = 0.0
    latency: dict[str, Any] = {}
    now = "2026-01-01T00:00:00+00:00"
    for start in range(0, nodes, batch):
        vectors = make_vectors(min(batch, nodes - start), seed=start)
        began = time.perf_counter()
        await store.upsert_nodes(records(start, vectors))
        ours_seconds += time.perf_counter() - began
        began = time.perf_counter()
        if isinstance(raw, RawNeo4j):
            await raw.write(start, vectors, now)
        else:
            raw.write(start, vectors, now)
        raw_seconds += time.perf_counter() - began
        written = start + len(vectors)
        if written in (10_000, nodes):
            latency[str(written)] = await vector_latency(store, queries_count, seed=10_000_000 + written)
        if written % 10_000 == 0:
            print(f"{name}: {written}/{nodes} ours {written / ours_seconds:.0f}/s raw {written / raw_seconds:.0f}/s", file=sys.stderr)
    await store.close()
    ours_rate, raw_rate = nodes / ours_seconds, nodes / raw_seconds
    return {
        "upsert_records_per_s": round(ours_rate, 1),
        "baseline_records_per_s": round(raw_rate, 1),
        "ratio_to_baseline": round(ours_rate / raw_rate, 3),
        "vector_top10_latency": latency,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--output", type=Path, default=Path("bench/results/store.json"))
    parser.add_argument("--backends", default="sqlite,neo4j")
    args = parser.parse_args()
    results: dict[str, Any] = {
        "command": "make bench-store",
        "nodes": args.nodes,
        "batch": args.batch,
        "dimension": DIMENSION,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "backends": {},
    }
    if "sqlite" in args.backends:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "bench.db"
            store = SQLiteStore(path, embedding_model=MODEL, embedding_dimension=DIMENSION)
            await store.setup()
            results["backends"]["sqlite"] = await run_backend("sqlite", store, RawSQLite(path), args.nodes, args.batch, args.queries)
    if "neo4j" in args.backends:
        uri = os.environ.get("NEO4J_URI")
        if not uri:
            raise SystemExit("NEO4J_URI is not set: run `make bench-store`, which starts a throwaway Neo4j")
        raw = RawNeo4j(uri)
        async with raw.driver:
            version = (await raw.driver.execute_query("CALL dbms.components() YIELD versions RETURN versions[0] AS v")).records[0]["v"]
            await raw.driver.execute_query(
                "MATCH (n:MfNode) WHERE n.namespace IN $namespaces DETACH DELETE n", namespaces=[OURS, RAW]
            )
            store = Neo4jStore(uri, embedding_model=MODEL, embedding_dimension=DIMENSION)
            results["backends"]["neo4j"] = await run_backend("neo4j", store, raw, args.nodes, args.batch, args.queries)
            results["backends"]["neo4j"]["server"] = f"Neo4j Community {version}"
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
