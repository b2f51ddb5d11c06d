"""Orchestration next to a real model: ComoRAG's wall time over the model server's busy time, per phase.

With the local model server (llama-cpp-python, SmolLM2-135M) the script ingests the ComoRAG demo's book and asks
its questions through the library graphs (``comorag-ingest``, ``comorag-qa``, with the small-model budgets the demo
and ``mnemoflow eval`` use), by ``GraphRunner`` on a SQLite store with a checkpointer, as the CLI runs them, with
the in-process MiniLM embedder (``MNEMOFLOW_EMBEDDING_PROVIDER=local``, as ``make eval``) and no reply cache.

**Server busy time** is the server's own: every reply of llama-cpp-python's server carries an
``openai-processing-ms`` header, the time its route handler spent on the request (chat template, grammar, prompt
evaluation, sampling); the gateway keeps it (``Completion.server_seconds``). A request's busy interval is the
``server_seconds`` that end when its reply arrived; a phase's busy time is the union of its requests' intervals
(merged, should any overlap). As a cross-check the server's log gives, per completion, llama.cpp's own
``llama_perf_context_print`` ``total time`` (the completion without HTTP, template and grammar): their sum over
the phase is ``perf_log_total_s``.

**Wall** is the phase's time in this process: a run of the ingest graph, or one question's run (the figure is
the sum over the questions, the ratio that of the sums; each question's ratio is listed too). The ratio
``wall_over_model_busy`` is wall / busy: 1.0 would mean the model never waited for us (the goal: at most 1.1).

**Where the rest goes**: time of the phase when the server was not busy, given to the first of these that was
running then: the model's transport (a request in flight, the server not yet or no longer on it), embedding
(``Embedder.embed``), the store (every ``GraphStore`` call, the run records' writes included), clustering
(``cluster_level``), other node code (a node running, none of the above), and the graph engine (no node running:
steps, checkpoints, state merges). The server's log of a question also says whether any requests overlapped
(``concurrent_requests``: the most in flight at once; the server answers one at a time, ``SLOTS = 1``).

Run: ``.venv/bin/python bench/orchestration.py --output bench/results/orchestration.json`` (about 5-10 minutes on 2
cores); it starts a throwaway server unless ``MNEMOFLOW_TEST_MODEL_HOME`` names a running one's home (as
``infra/with-model.sh`` sets). ``--questions 1`` for a short run. ``make model`` must have installed the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnemoflow.graphs import GraphRunner, load_graph, with_node_config  # noqa: E402
from mnemoflow.graphs.budgets import SMALL_MODEL_BUDGETS, SMALL_MODEL_INPUTS  # noqa: E402
from mnemoflow.graphs.parts import RunParts, open_run_parts  # noqa: E402
from mnemoflow.graphs.runner import RunResult  # noqa: E402
from mnemoflow.llm.backends import Backend, ChatRequest, Completion  # noqa: E402
from mnemoflow.llm.local_server import running_local_server, start_local_server, stop_local_server  # noqa: E402
from mnemoflow.nodes.comorag import ingest as comorag_ingest  # noqa: E402
from mnemoflow.settings import EmbeddingSettings, LLMSettings, LocalServerSettings, Settings, StoreSettings  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "nodes" / "comorag" / "data"
BOOK_ID = "the-salt-road"
GOAL = 1.1
CATEGORIES = ("model_transport", "embedding", "store", "clustering", "node_code", "graph_engine")
"""Where time the server was not busy went, in the order it is given out (the first one running takes it)."""
Interval = tuple[float, float]


# -- intervals --------------------------------------------------------------------------------------------------


def merged(intervals: Iterable[Interval]) -> list[Interval]:
    """The union of ``intervals`` as sorted, disjoint intervals."""
    union: list[Interval] = []
    for start, end in sorted(intervals):
        if union and start <= union[-1][1]:
            union[-1] = (union[-1][0], max(union[-1][1], end))
        elif end > start:
            union.append((start, end))
    return union


def length(intervals: Iterable[Interval]) -> float:
    return sum(end - start for start, end in merged(intervals))


def minus(intervals: Iterable[Interval], taken: Iterable[Interval]) -> list[Interval]:
    """The parts of ``intervals`` that no interval of ``taken`` covers."""
    blocked = merged(taken)
    left: list[Interval] = []
    for start, end in merged(intervals):
        cursor = start
        for low, high in blocked:
            if high <= cursor or low >= end:
                continue
            if low > cursor:
                left.append((cursor, low))
            cursor = max(cursor, high)
        if cursor < end:
            left.append((cursor, end))
    return left


def clipped(intervals: Iterable[Interval], window: Interval) -> list[Interval]:
    return [(max(start, window[0]), min(end, window[1])) for start, end in intervals if end > window[0] and start < window[1]]


def most_at_once(intervals: Iterable[Interval]) -> int:
    """The most intervals open at one moment."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    current = peak = 0
    for _, step in edges:
        current += step
        peak = max(peak, current)
    return peak


# -- what ran when -----------------------------------------------------------------------------------------------


@dataclass
class Timeline:
    """Intervals (``time.time()`` seconds) of what ran, per category, plus each request's server time."""

    spans: dict[str, list[Interval]] = field(default_factory=dict)
    server: list[Interval] = field(default_factory=list)
    requests: list[Interval] = field(default_factory=list)

    def add(self, category: str, start: float, end: float) -> None:
        self.spans.setdefault(category, []).append((start, end))

    def timed(self, category: str, call: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def run(*args: Any, **kwargs: Any) -> Any:
            start = time.time()
            try:
                return await call(*args, **kwargs)
            finally:
                self.add(category, start, time.time())

        return run


class TimedBackend:
    """The model's transport, recording each request's flight and the server's own time on it."""

    def __init__(self, inner: Backend, timeline: Timeline) -> None:
        self.inner, self.timeline = inner, timeline
        self.name, self.endpoint = inner.name, inner.endpoint

    async def complete(self, request: ChatRequest) -> Completion:
        start = time.time()
        completion = await self.inner.complete(request)
        end = time.time()
        if completion.server_seconds is None:
            raise RuntimeError(f"{self.endpoint} sends no openai-processing-ms header: its busy time is unknown")
        self.timeline.requests.append((start, end))
        self.timeline.server.append((max(start, end - completion.server_seconds), end))
        return completion

    async def close(self) -> None:
        await self.inner.close()


class TimedParts:
    """Every awaitable method of a store or an embedder, timed into one category."""

    def __init__(self, inner: Any, category: str, timeline: Timeline) -> None:
        self._inner, self._category, self._timeline = inner, category, timeline

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if asyncio.iscoroutinefunction(value):
            return self._timeline.timed(self._category, value)
        return value


def perf_total(log: Path, offset: int) -> tuple[float, int]:
    """Seconds of llama.cpp's ``total time`` lines in the server's log after ``offset``, and the log's end."""
    with log.open("rb") as file:
        file.seek(offset)
        text = file.read().decode("utf-8", "replace")
    totals = re.findall(r"llama_perf_context_print:\s+total time =\s+([\d.]+) ms", text)
    return sum(float(value) for value in totals) / 1000, offset + len(text.encode("utf-8"))


def breakdown(timeline: Timeline, window: Interval, trace: list[dict[str, Any]]) -> dict[str, Any]:
    """Wall, server busy time, their ratio and where the rest went, over ``window``."""
    wall = window[1] - window[0]
    busy = merged(clipped(timeline.server, window))
    nodes = [(event["started_at"], event["started_at"] + event["duration_s"]) for event in trace]
    claims = {
        "model_transport": clipped(timeline.requests, window),
        "embedding": clipped(timeline.spans.get("embedding", []), window),
        "store": clipped(timeline.spans.get("store", []), window),
        "clustering": clipped(timeline.spans.get("clustering", []), window),
        "node_code": clipped(nodes, window),
        "graph_engine": [window],
    }
    taken, rest = list(busy), {}
    for category in CATEGORIES:
        own = minus(claims[category], taken)
        rest[category] = round(length(own), 3)
        taken = merged([*taken, *own])
    requests = clipped(timeline.requests, window)
    return {
        "wall_s": round(wall, 3),
        "model_busy_s": round(length(busy), 3),
        "wall_over_model_busy": round(wall / length(busy), 3) if busy else None,
        "not_busy_s": round(wall - length(busy), 3),
        "not_busy_by_cause_s": rest,
        "model_requests": len(requests),
        "concurrent_requests": most_at_once(requests),
        "server_intervals_overlap": most_at_once(busy) > 1 or length(clipped(timeline.server, window)) > length(busy) + 1e-6,
        "embedding_calls": len(claims["embedding"]),
        "store_calls": len(claims["store"]),
    }


# -- the run -----------------------------------------------------------------------------------------------------


async def phase(runner: GraphRunner, values: dict[str, Any], timeline: Timeline, log: Path, offset: int) -> tuple[dict[str, Any], RunResult, int]:
    start = time.time()
    result = await runner.run(values, namespace="bench")
    await runner.flush()
    end = time.time()
    figures = breakdown(timeline, (start, end), result.trace)
    perf, offset = perf_total(log, offset)
    figures["perf_log_total_s"] = round(perf, 3)
    figures["llm_calls"] = result.llm_calls
    figures["steps"] = len(result.steps)
    return figures, result, offset


def summed(phases: list[dict[str, Any]]) -> dict[str, Any]:
    """Questions together: sums of the figures, the ratio of the sums."""
    wall = sum(item["wall_s"] for item in phases)
    busy = sum(item["model_busy_s"] for item in phases)
    return {
        "wall_s": round(wall, 3),
        "model_busy_s": round(busy, 3),
        "wall_over_model_busy": round(wall / busy, 3) if busy else None,
        "per_question_wall_over_model_busy": [item["wall_over_model_busy"] for item in phases],
        "not_busy_by_cause_s": {
            category: round(sum(item["not_busy_by_cause_s"][category] for item in phases), 3) for category in CATEGORIES
        },
        "perf_log_total_s": round(sum(item["perf_log_total_s"] for item in phases), 3),
        "model_requests": sum(item["model_requests"] for item in phases),
        "concurrent_requests": max(item["concurrent_requests"] for item in phases),
        "questions": phases,
    }


async def measure(home: Path, workdir: Path, questions: int) -> dict[str, Any]:
    server = running_local_server(home)
    assert server is not None
    log = Path(server.log)
    settings = Settings(
        store=StoreSettings(sqlite_path=workdir / "memory.db"),
        local_server=LocalServerSettings(home=home),
        llm=LLMSettings(cache=False),
        embedding=EmbeddingSettings(provider="local"),
    )
    timeline = Timeline()
    clustering = comorag_ingest.cluster_level  # type: ignore[attr-defined]

    def cluster_level(*args: Any, **kwargs: Any) -> Any:
        start = time.time()
        try:
            return clustering(*args, **kwargs)
        finally:
            timeline.add("clustering", start, time.time())

    comorag_ingest.cluster_level = cluster_level  # type: ignore[attr-defined]  # timed where the node calls it
    items = json.loads((DATA / "questions.json").read_text(encoding="utf-8"))[:questions]
    story = (DATA / "the-salt-road.txt").read_text(encoding="utf-8")
    async with open_run_parts(settings, wrap_backend=lambda backend: TimedBackend(backend, timeline)) as opened:
        parts: RunParts = replace(
            opened, store=TimedParts(opened.store, "store", timeline), embedder=TimedParts(opened.embedder, "embedding", timeline)
        )
        await parts.embedder.embed(["warm up"])  # the embedder reads its weights on first use: not the phase's
        offset = log.stat().st_size

        def graph(name: str) -> Any:
            return with_node_config(load_graph(name), SMALL_MODEL_BUDGETS[name])

        async with GraphRunner.from_parts(graph("comorag-ingest"), parts) as runner:
            values = {"book_id": BOOK_ID, "title": story.split("\n", 1)[0], "text": story, **SMALL_MODEL_INPUTS["comorag-ingest"]}
            ingest, indexed, offset = await phase(runner, values, timeline, log, offset)
        ingest["chunks"] = len(indexed.state.get("chunk_ids", []))
        ingest["semantic_levels"] = indexed.state.get("semantic_levels")
        ingest["episodes"] = indexed.state.get("episodes")
        print(f"ingest: {json.dumps(ingest)}", file=sys.stderr)
        asked = []
        async with GraphRunner.from_parts(graph("comorag-qa"), parts) as runner:
            for item in items:
                values = {"question": item["question"], "book_id": BOOK_ID, "options": item.get("options", {})}
                figures, result, offset = await phase(runner, {**values, **SMALL_MODEL_INPUTS["comorag-qa"]}, timeline, log, offset)
                figures["status"] = result.state.get("status")
                figures["cycles"] = result.state.get("cycle", 0)
                print(f"question: {json.dumps(figures)}", file=sys.stderr)
                asked.append(figures)
    return {"ingest": ingest, "question": summed(asked)}


async def throughput(urls: list[str], requests: int) -> float:
    """Seconds to answer ``requests`` identical requests spread over the servers at ``urls``, one at a time on each."""
    from openai import AsyncOpenAI

    clients = [AsyncOpenAI(base_url=url, api_key="none", max_retries=0, timeout=600) for url in urls]
    sent = 0

    async def serve(client: AsyncOpenAI, count: int) -> None:
        nonlocal sent
        for _ in range(count):
            sent += 1  # each prompt its own from the first token: no request reuses another's evaluated prompt
            text = f"Note {sent}. Summarize in one sentence: " + " ".join(["The salt road ran east."] * 40)
            await client.chat.completions.create(
                model="local", messages=[{"role": "user", "content": text}], max_tokens=48, temperature=0
            )

    await asyncio.gather(*(serve(client, 1) for client in clients))  # warm every server alike
    start = time.perf_counter()
    await asyncio.gather(*(serve(client, requests // len(clients)) for client in clients))
    elapsed = time.perf_counter() - start
    for client in clients:
        await client.close()
    return elapsed


def slots_check(workdir: Path, requests: int) -> dict[str, Any]:
    """One server answering every request against two server processes (the only way to a second slot: each
    llama-cpp-python server runs one completion at a time behind a global lock), each with one thread for replies."""
    homes = [workdir / "slot-a", workdir / "slot-b"]
    try:
        one = start_local_server(LocalServerSettings(home=homes[0]))
        single = asyncio.run(throughput([one.base_url], requests))
        stop_local_server(homes[0])
        both = [start_local_server(LocalServerSettings(home=home, threads=1)) for home in homes]
        double = asyncio.run(throughput([server.base_url for server in both], requests))
    finally:
        for home in homes:
            stop_local_server(home)
    return {
        "requests": requests,
        "one_server_s": round(single, 3),
        "two_servers_s": round(double, 3),
        "two_over_one": round(double / single, 3),
        "what": "requests of about 250 prompt tokens (each different from its first token) and 48 reply tokens: one default server, one at a time, "
        "against two server processes with one reply thread each, one request at a time on each",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=3, help="Questions of the demo's to ask (at most 3).")
    parser.add_argument("--output", type=Path, help="Where to write the JSON (default: print it).")
    parser.add_argument("--slots", type=int, default=0, help="Also time this many requests on one server and on two (0: skip).")
    parser.add_argument("--no-comorag", action="store_true", help="Skip ComoRAG (keep the figures --output holds).")
    arguments = parser.parse_args()
    given = os.environ.get("MNEMOFLOW_TEST_MODEL_HOME")
    with tempfile.TemporaryDirectory(prefix="mnemoflow-orchestration-") as folder:
        workdir = Path(folder)
        home = Path(given) if given else workdir / "model"
        comorag: dict[str, Any] | None = None
        if not arguments.no_comorag:
            if not given:
                start_local_server(LocalServerSettings(home=home))
            try:
                comorag = asyncio.run(measure(home, workdir, arguments.questions))
            finally:
                if not given:
                    stop_local_server(home)
        slots = slots_check(workdir, arguments.slots) if arguments.slots else None
    kept = json.loads(arguments.output.read_text(encoding="utf-8")) if arguments.output and arguments.output.exists() else {}
    result = {
        **kept,
        "command": "make bench-orchestration",
        "model": "SmolLM2-135M-Instruct (llama-cpp-python's server, one request at a time)",
        "cores": os.cpu_count(),
        "busy_source": "the server's openai-processing-ms reply header per request, busy intervals merged",
        "baseline": "the model server's own busy time on the same phase's requests, in the same run (1.0: the model never waited)",
        "goal": f"wall_over_model_busy <= {GOAL}",
        **({"comorag": comorag} if comorag else {}),
        **({"server_slots": slots} if slots else {}),
    }
    text = json.dumps(result, indent=2)
    if arguments.output:
        arguments.output.parent.mkdir(parents=True, exist_ok=True)
        arguments.output.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
