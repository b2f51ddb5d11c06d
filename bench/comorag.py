"""ComoRAG benchmark: wall time per question against the reference code's schedule of calls, and the critical path.

The test server answers every call after a fixed 200 ms; the script forces two impasse cycles of three
probes each, then an answer. Each question runs (a) as mnemoflow runs it (parallel cues, probe workers in a
fan-out, calls concurrent within the gateway's cap); (b) on the reference code's schedule: every call waits for
the one before, except the three cue calls of one Mem-Encode (one per layer), which the reference sends together
from a thread pool (``PoolAgent.fusion``), and which go together here too (:class:`ReferenceSchedule`); and
(c) one call at a time, cue calls included, the stricter baseline this benchmark reported first. (d) is the
bound: the number of calls that must happen one after another (3 at step 0: fact filter, cues, answer; 5 per
cycle: probes, fact filter, cues, fusion, answer) times 200 ms. LLM and embedding calls per question are
compared with the reference code's counts. Writes ``bench/results/comorag.json``; run with ``make bench-comorag``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnemoflow.graphs import GraphRunner, load_graph  # noqa: E402
from mnemoflow.llm import LLM, ChatRequest, Completion, OpenAIBackend  # noqa: E402
from mnemoflow.llm.backends import Backend  # noqa: E402
from mnemoflow.logging import configure_logging  # noqa: E402
from mnemoflow.memory import SQLiteStore  # noqa: E402
from mnemoflow.memory.checkpoints import open_checkpointer  # noqa: E402
from mnemoflow.nodes.comorag.agents import CUE_SYSTEM  # noqa: E402
from mnemoflow.settings import LLMSettings, LogSettings, Settings, StoreSettings  # noqa: E402
from tests.conftest import offline_llm  # noqa: E402
from tests.support.embedders import CountingEmbedder  # noqa: E402
from tests.support.openai_server import Rule, ScriptedOpenAIServer  # noqa: E402

LATENCY = 0.2
CYCLES, PROBES = 2, 3
CONCURRENCY = 16
"""The gateway's cap (MNEMOFLOW_LLM_CONCURRENCY) in the parallel runs: a cycle makes up to 9 cue calls at once."""
CRITICAL_CALLS = 3 + 5 * CYCLES
REFERENCE_ROUNDS = 3 + CYCLES * (3 + 2 * PROBES)
"""Waits one after another on the reference's schedule: filter, cues, answer at step 0; per cycle the probe call,
each probe's fact filter and its cues in turn, the fusion and the answer."""
REFERENCE_LLM_CALLS = 5 + CYCLES * (3 + 4 * PROBES)  # the reference code's: 5 at step 0, 3 + 4|P| per failed cycle
REFERENCE_EMBEDDINGS = 4 + CYCLES * (4 * PROBES + 3)  # ~4 per tri_retrieve; 4|P| + 3 per cycle
QUESTION = "Who was the guardian of Tobin Orsk after Hedda Vale married?"
BOOK = "the-salt-road"
STORY = Path(__file__).resolve().parents[1] / "nodes" / "comorag" / "data" / "the-salt-road.txt"


class ReferenceSchedule:
    """A transport that lets requests through in the reference code's order of waiting: one at a time, except the
    cue calls of one Mem-Encode (the same question and probe), which go together, as its thread pool sends them."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name = inner.name
        self.endpoint = inner.endpoint
        self._turn = asyncio.Condition()
        self._holder: object | None = None
        self._inside = 0
        self.rounds = 0
        """How many times a call or a group of cue calls took the line: the waits, one after another."""

    async def complete(self, request: ChatRequest) -> Completion:
        group = _encode_group(request) or object()  # any other call goes alone
        async with self._turn:
            await self._turn.wait_for(lambda: self._holder is None or self._holder == group)
            self.rounds += self._holder is None
            self._holder, self._inside = group, self._inside + 1
        try:
            return await self.inner.complete(request)
        finally:
            async with self._turn:
                self._inside -= 1
                if not self._inside:
                    self._holder = None
                    self._turn.notify_all()

    async def close(self) -> None:
        await self.inner.close()


def _encode_group(request: ChatRequest) -> str | None:
    """The Mem-Encode a cue call belongs to (its "Questions:" line names the question and the probe), else None."""
    system, user = (str(request.messages[index].get("content", "")) for index in (0, -1))
    return user.split("\n", 1)[0] if system == CUE_SYSTEM else None


def script(server: ScriptedOpenAIServer) -> None:
    probes = [{"probes": [f"Probe {cycle}.{n} about the Orsk children?" for n in range(PROBES)]} for cycle in range(CYCLES)]
    answers = [{"analysis": "...", "final_answer": "*"}] * CYCLES + [{"analysis": "...", "final_answer": "Corvin Ashe"}]
    server.rules.clear()
    server.script(Rule(system="recognition memory", json={"keep": [1, 2]}))
    server.script(Rule(system="narrative analyst", json={"findings": ["Key finding about the guardian of Tobin Orsk."]}))
    server.script(Rule(system="regulation agent", replies=list(probes)))
    server.script(Rule(system="integration agent", json={"narrative": "Corvin Ashe became the guardian."}))
    server.script(Rule(system="careful reader", replies=list(answers)))


def qa_graph(folder: Path) -> Path:
    """The library graph retrieving one item per layer, so every probe brings new evidence from the story."""
    spec = yaml.safe_load((Path(__file__).resolve().parents[1] / "graphs" / "library" / "comorag-qa.yaml").read_text())
    for name in ("retrieve", "probe_worker"):
        spec["nodes"][name]["with"] = {"ver_top_k": 1, "sem_top_k": 1, "epi_top_k": 1}
    path = folder / "comorag-qa.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


async def index_story(store: SQLiteStore, embedder: CountingEmbedder, settings: Settings) -> None:
    """Index the bundled story once, with the offline model (the benchmark times questions, not ingestion)."""
    runner = GraphRunner(load_graph("comorag-ingest"), store=store, embedder=embedder.inner, llm=offline_llm(), settings=settings, checkpointer=None)
    async with runner:
        await runner.run({"book_id": BOOK, "title": "The Salt Road", "text": STORY.read_text()}, namespace="bench")


async def one_question(
    server: ScriptedOpenAIServer,
    store: SQLiteStore,
    settings: Settings,
    graph: Path,
    label: str,
    concurrency: int,
    *,
    reference_schedule: bool = False,
) -> dict[str, Any]:
    embedder = CountingEmbedder()
    backend: Backend = OpenAIBackend(base_url=server.base_url, api_key="bench", timeout=30)
    schedule = ReferenceSchedule(backend) if reference_schedule else None
    llm = LLM(schedule or backend, LLMSettings(cache=False, concurrency=concurrency))
    script(server)
    before = server.count("/chat/completions")
    async with open_checkpointer(settings) as checkpointer:
        runner = GraphRunner(load_graph(graph), store=store, embedder=embedder, llm=llm, settings=settings, checkpointer=checkpointer)
        started = time.perf_counter()
        async with runner:
            result = await runner.run({"question": QUESTION, "book_id": BOOK}, namespace="bench", thread_id=label)
        seconds = time.perf_counter() - started
    await llm.aclose()
    assert result.state["final_answer"] == "Corvin Ashe" and result.state["cycle"] == CYCLES, result.state
    assert schedule is None or schedule.rounds == REFERENCE_ROUNDS, f"{schedule.rounds} waits, not {REFERENCE_ROUNDS}"
    return {
        "seconds": seconds,
        "llm_calls": result.llm_calls,
        "requests": server.count("/chat/completions") - before,
        "embedding_calls": embedder.calls,
        "embedded_texts": len(embedder.texts),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=3)
    parser.add_argument("--output", type=Path, default=Path("bench/results/comorag.json"))
    args = parser.parse_args()
    configure_logging(LogSettings(level="warning", format="json"), stream=open(os.devnull, "w"), force=True)  # noqa: SIM115
    with ScriptedOpenAIServer(latency=LATENCY) as server, tempfile.TemporaryDirectory() as folder_name:
        folder = Path(folder_name)
        settings = Settings(store=StoreSettings(sqlite_path=folder / "memory.db"))
        embedder = CountingEmbedder()
        async with SQLiteStore(folder / "memory.db", embedding_model=embedder.model, embedding_dimension=embedder.dimension) as store:
            await index_story(store, embedder, settings)
            graph = qa_graph(folder)
            parallel, reference, sequential = [], [], []
            for index in range(args.questions):  # alternate, so drift hits all alike
                parallel.append(await one_question(server, store, settings, graph, f"parallel{index}", concurrency=CONCURRENCY))
                reference.append(
                    await one_question(
                        server, store, settings, graph, f"reference{index}", concurrency=CONCURRENCY, reference_schedule=True
                    )
                )
                sequential.append(await one_question(server, store, settings, graph, f"sequential{index}", concurrency=1))
    mean = lambda runs, key: sum(run[key] for run in runs) / len(runs)  # noqa: E731
    ours, one_by_one, bound = mean(parallel, "seconds"), mean(sequential, "seconds"), CRITICAL_CALLS * LATENCY
    as_reference = mean(reference, "seconds")
    results = {
        "command": "make bench-comorag",
        "latency_s": LATENCY,
        "cycles": CYCLES,
        "probes_per_cycle": PROBES,
        "questions": args.questions,
        "gateway_concurrency": CONCURRENCY,
        "seconds_per_question": round(ours, 3),
        "reference_schedule_seconds_per_question": round(as_reference, 3),
        "reference_schedule_waits": REFERENCE_ROUNDS,
        "speedup_vs_reference_schedule": round(as_reference / ours, 3),
        "sequential_seconds_per_question": round(one_by_one, 3),
        "speedup_vs_sequential": round(one_by_one / ours, 3),
        "critical_path_seconds": round(bound, 3),
        "ratio_to_critical_path": round(ours / bound, 3),
        "llm_calls_per_question": mean(parallel, "llm_calls"),
        "reference_llm_calls_per_question": REFERENCE_LLM_CALLS,
        "embedding_calls_per_question": mean(parallel, "embedding_calls"),
        "embedded_texts_per_question": mean(parallel, "embedded_texts"),
        "reference_embedding_calls_per_question": REFERENCE_EMBEDDINGS,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
