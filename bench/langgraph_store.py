"""LangGraph store benchmark: MnemoflowStore on SQLite and Neo4j against LangGraph's InMemoryStore and the project's own
API, side by side in one process, with the same embedder and the same items.

Run with ``make bench-langgraph-store`` (a throwaway Neo4j is started for it), or ``.venv/bin/python
bench/langgraph_store.py --backends sqlite`` for the SQLite section alone (``--quick`` for a small run while
developing). Writes ``bench/results/langgraph_store.json`` and prints a table.

Each setup holds ``--items`` items (1,000) under ten namespaces ``("users", "u0".."u9", "memories")``, values
``{"text": <12 words>, "topic": 0..4, "score": 0..99}``, ``text`` indexed, embedded by the hashing embedder (384
dimensions: cheap, so the figures are the stores' own cost, not a model's). Measured:

- ``put``: the items written in batches of ``--batch`` (100), one ``abatch`` of that many ``PutOp`` per batch
  (ours: one embedder call, one ``upsert_nodes``); ms per item, median over the batches.
- ``filter_search``: ``asearch(("users", "uN"), filter={"topic": T}, limit=10)``; ms per search, median.
- ``query_search``: ``asearch(("users",), query=<4 words>, limit=10)``; ms per search, median.

Setups: ``in_memory`` (LangGraph's InMemoryStore, index ``fields=["text"]``, the embedder as its async embed
function: the baseline), ``mnemoflow_<backend>`` (MnemoflowStore) and ``own_api_<backend>`` (the GraphStore
directly on the same records in another namespace: the embedder and ``upsert_nodes`` for puts;
``list_nodes(where=<prefix labels and the filter's equalities>)`` then the same filter in Python; ``vector_search(k=10, filters=<prefix
labels>)`` after embedding the query). Ratios: each setup over ``in_memory``, and MnemoflowStore over the own API
on the same backend (the adapter's overhead: items, TTL and filter checks, the batching task).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from langgraph.store.base import BaseStore, PutOp  # noqa: E402
from langgraph.store.memory import InMemoryStore  # noqa: E402

from mnemoflow.memory import GraphStore, HashingEmbedder, Neo4jStore, SQLiteStore  # noqa: E402
from mnemoflow.memory.langgraph_items import KIND, index_text, item_record, matches_filter, prefix_where, value_where  # noqa: E402
from mnemoflow.memory.langgraph_store import MnemoflowStore  # noqa: E402

WORDS = ["salt", "road", "river", "caravan", "trader", "ford", "spring", "flood", "cloth", "market", "north", "south", "camel", "well", "oasis", "dune", "tent", "lamp", "copper", "silver", "spice", "tea", "bread", "harbour", "ship", "sail", "rope", "net", "fish", "reef", "tide", "storm", "cliff", "path", "bridge", "mill", "grain"]
FIELDS = ["text"]
EMBEDDER = HashingEmbedder(384)


def items(count: int, seed: int) -> list[tuple[tuple[str, ...], str, dict[str, Any]]]:
    rng = random.Random(seed)
    return [
        (
            ("users", f"u{index % 10}", "memories"),
            f"item{index}",
            {"text": " ".join(rng.choices(WORDS, k=12)), "topic": index % 5, "score": rng.randrange(100)},
        )
        for index in range(count)
    ]


def searches(count: int, seed: int) -> list[tuple[tuple[str, ...], dict[str, Any], str]]:
    """Per search: a prefix for the filter search, its filter, and a query for the query search."""
    rng = random.Random(seed + 1)
    return [((("users", f"u{rng.randrange(10)}")), {"topic": rng.randrange(5)}, " ".join(rng.choices(WORDS, k=4))) for _ in range(count)]


class LangGraphSetup:
    """A BaseStore measured through LangGraph's interface."""

    def __init__(self, store: BaseStore) -> None:
        self.store = store

    async def put(self, batch: list[tuple[tuple[str, ...], str, dict[str, Any]]]) -> None:
        await self.store.abatch([PutOp(namespace, key, value) for namespace, key, value in batch])

    async def filter_search(self, prefix: tuple[str, ...], filter: dict[str, Any]) -> int:
        return len(await self.store.asearch(prefix, filter=filter, limit=10))

    async def query_search(self, query: str) -> int:
        return len(await self.store.asearch(("users",), query=query, limit=10))


class OwnApiSetup:
    """The GraphStore called directly on the records MnemoflowStore writes, in a namespace of their own."""

    def __init__(self, store: GraphStore, namespace: str) -> None:
        self.store, self.namespace = store, namespace

    async def put(self, batch: list[tuple[tuple[str, ...], str, dict[str, Any]]]) -> None:
        texts = [index_text(value, FIELDS) for _, _, value in batch]
        vectors = await EMBEDDER.embed(texts)
        now = time.time()
        await self.store.upsert_nodes(
            [
                item_record(self.namespace, namespace, key, value, text=text, embedding=vector, ttl_minutes=None, now=now)
                for (namespace, key, value), text, vector in zip(batch, texts, vectors, strict=True)
            ]
        )

    async def filter_search(self, prefix: tuple[str, ...], filter: dict[str, Any]) -> int:
        found, offset = [], 0
        while len(found) < 10:
            page = await self.store.list_nodes(self.namespace, kind=KIND, where={**prefix_where(prefix), **value_where(filter)}, limit=50, offset=offset)
            offset += len(page)
            found += [record for record in page if matches_filter(record.properties["value"], filter)]
            if len(page) < 50:
                break
        return len(found[:10])

    async def query_search(self, query: str) -> int:
        [vector] = await EMBEDDER.embed([query])
        return len(await self.store.vector_search(self.namespace, vector, kind=KIND, k=10, filters=prefix_where(("users",))))


async def embed_function(texts: list[str]) -> list[list[float]]:
    return await EMBEDDER.embed(texts)


async def seconds(work: Awaitable[Any]) -> float:
    """Seconds until ``work`` (a coroutine not yet started) is done."""
    started = time.perf_counter()
    await work
    return time.perf_counter() - started


async def measure(setups: dict[str, Any], data: list[Any], queries: list[Any], batch: int) -> dict[str, dict[str, float]]:
    """Every setup's figures, the setups taking turns batch by batch and search by search (who goes first rotates),
    so each sees the same machine load (other processes share the cores) and none always follows another's write."""
    names = list(setups)

    def turns(turn: int) -> list[tuple[str, Any]]:
        order = names[turn % len(names) :] + names[: turn % len(names)]
        return [(name, setups[name]) for name in order]

    put: dict[str, list[float]] = {name: [] for name in setups}
    filtered: dict[str, list[float]] = {name: [] for name in setups}
    queried: dict[str, list[float]] = {name: [] for name in setups}
    for setup in setups.values():  # warm: the first write of a kind creates its indexes
        await setup.put([(("warm",), "warm", {"text": "warm up", "topic": 0, "score": 0})])
    for turn, start in enumerate(range(0, len(data), batch)):
        for name, setup in turns(turn):
            put[name].append(await seconds(setup.put(data[start : start + batch])) / len(data[start : start + batch]))
    for setup in setups.values():  # warm: first reads of a fresh store build caches and plans
        await setup.filter_search(*queries[0][:2])
        await setup.query_search(queries[0][2])
    for turn, (prefix, filter, query) in enumerate(queries):
        for name, setup in turns(turn):
            filtered[name].append(await seconds(setup.filter_search(prefix, filter)))
            queried[name].append(await seconds(setup.query_search(query)))
    return {
        name: {
            "put_ms_per_item": round(1000 * statistics.median(put[name]), 4),
            "filter_search_ms": round(1000 * statistics.median(filtered[name]), 4),
            "query_search_ms": round(1000 * statistics.median(queried[name]), 4),
        }
        for name in setups
    }


async def backend_setups(store: GraphStore, backend: str) -> dict[str, Any]:
    """MnemoflowStore and the own API on one set-up store, each in a namespace of its own."""
    await store.setup()
    adapter = MnemoflowStore(store, namespace="bench-langgraph", embedder=EMBEDDER, index={"fields": FIELDS})
    return {f"mnemoflow_{backend}": LangGraphSetup(adapter), f"own_api_{backend}": OwnApiSetup(store, "bench-own-api")}


def ratios(results: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    base = results["in_memory"]
    out: dict[str, dict[str, float]] = {}
    for name, figures in results.items():
        if name != "in_memory":
            out[f"{name}/in_memory"] = {metric: round(value / base[metric], 2) for metric, value in figures.items()}
    for name in results:
        if name.startswith("mnemoflow_"):
            own = results[name.replace("mnemoflow_", "own_api_")]
            out[f"{name}/own_api"] = {metric: round(value / own[metric], 2) for metric, value in results[name].items()}
    return out


def table(results: dict[str, dict[str, float]], ratio: dict[str, dict[str, float]]) -> str:
    metrics = ["put_ms_per_item", "filter_search_ms", "query_search_ms"]
    lines = [f"{'setup':<28}" + "".join(f"{metric:>20}" for metric in metrics)]
    lines += [f"{name:<28}" + "".join(f"{figures[m]:>20.3f}" for m in metrics) for name, figures in results.items()]
    lines += [f"{name:<28}" + "".join(f"{figures[m]:>19.2f}x" for m in metrics) for name, figures in ratio.items()]
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=100, help="items per abatch")
    parser.add_argument("--searches", type=int, default=100, help="searches of each kind")
    parser.add_argument("--backends", default="sqlite,neo4j", help="neo4j needs NEO4J_URI (make bench-langgraph-store)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="200 items, 20 searches, while developing")
    parser.add_argument("--output", type=Path, default=Path("bench/results/langgraph_store.json"))
    args = parser.parse_args()
    if args.quick:
        args.items, args.searches = 200, 20
    data, queries = items(args.items, args.seed), searches(args.searches, args.seed)
    backends = set(args.backends.split(","))
    index = {"dims": EMBEDDER.dimension, "embed": embed_function, "fields": FIELDS}
    setups: dict[str, Any] = {"in_memory": LangGraphSetup(InMemoryStore(index=index))}  # type: ignore[typeddict-item]
    stores: list[GraphStore] = []
    with tempfile.TemporaryDirectory() as folder:
        if "sqlite" in backends:
            stores.append(SQLiteStore(Path(folder) / "memory.db", embedding_model=EMBEDDER.model, embedding_dimension=EMBEDDER.dimension))
            setups |= await backend_setups(stores[-1], "sqlite")
        if "neo4j" in backends:
            uri = os.environ.get("NEO4J_URI")
            if uri:
                password = os.environ.get("NEO4J_PASSWORD")
                auth = (os.environ.get("NEO4J_USER", "neo4j"), password) if password else None
                stores.append(Neo4jStore(uri, auth=auth, embedding_model=EMBEDDER.model, embedding_dimension=EMBEDDER.dimension))
                setups |= await backend_setups(stores[-1], "neo4j")
            else:
                print("NEO4J_URI is not set: no neo4j section (make bench-langgraph-store starts a Neo4j)", file=sys.stderr)
        try:
            results = await measure(setups, data, queries, args.batch)
        finally:
            for setup in setups.values():
                task = getattr(setup.store, "_task", None)
                if task is not None:
                    task.cancel()
            for store in stores:
                await store.close()
    ratio = ratios(results)
    output = {
        "command": "make bench-langgraph-store" + (" (--quick)" if args.quick else ""),
        "items": args.items,
        "batch": args.batch,
        "searches": args.searches,
        "embedder": EMBEDDER.model,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "results": results,
        "ratios": ratio,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(output, indent=2) + "\n")
    print(table(results, ratio))


if __name__ == "__main__":
    asyncio.run(main())
