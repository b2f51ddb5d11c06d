"""ComoRAG benchmark: wall time per question against calls made one after another, and the critical path.

The test server answers every call after a fixed 200 ms; the script forces two impasse cycles of three
probes each, then an answer. Each question runs (a) as mnemoflow runs it (parallel cues, probe workers in a
fan-out, calls concurrent within the gateway's cap) and (b) with the gateway's concurrency cap at 1, so every
call waits for the one before, as the reference code makes them. (c) is the bound: the number of calls that
must happen one after another (3 at step 0: fact filter, cues, answer; 5 per cycle: probes, fact filter,
cues, fusion, answer) times 200 ms. LLM and embedding calls per question are compared with the reference
code's counts. Writes ``bench/results/comorag.json``; run with ``make bench-comorag``.
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
from mnemoflow.llm import LLM, OpenAIBackend  # noqa: E402
from mnemoflow.logging import configure_logging  # noqa: E402
from mnemoflow.memory import SQLiteStore  # noqa: E402
from mnemoflow.memory.checkpoints import open_checkpointer  # noqa: E402
from mnemoflow.settings import LLMSettings, LogSettings, Settings, StoreSettings  # noqa: E402
from tests.conftest import offline_llm  # noqa: E402
from tests.support.embedders import CountingEmbedder  # noqa: E402
from tests.support.openai_server import Rule, ScriptedOpenAIServer  # noqa: E402

LATENCY = 0.2
CYCLES, PROBES = 2, 3
CONCURRENCY = 16
"""The gateway's cap (MNEMOFLOW_LLM_CONCURRENCY) in the parallel runs: a cycle makes up to 9 cue calls at once."""
CRITICAL_CALLS = 3 + 5 * CYCLES
REFERENCE_LLM_CALLS = 5 + CYCLES * (3 + 4 * PROBES)  # the reference code's: 5 at step 0, 3 + 4|P| per failed cycle
REFERENCE_EMBEDDINGS = 4 + CYCLES * (4 * PROBES + 3)  # ~4 per tri_retrieve; 4|P| + 3 per cycle
QUESTION = "Who was the guardian of Tobin Orsk after Hedda Vale married?"
BOOK = "the-salt-road"
STORY = Path(__file__).resolve().parents[1] / "nodes" / "comorag" / "data" / "the-salt-road.txt"


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
    server: ScriptedOpenAIServer, store: SQLiteStore, settings: Settings, graph: Path, label: str, concurrency: int
) -> dict[str, Any]:
    embedder = CountingEmbedder()
    llm = LLM(OpenAIBackend(base_url=server.base_url, api_key="bench", timeout=30), LLMSettings(cache=False, concurrency=concurrency))
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
            parallel, sequential = [], []
            for index in range(args.questions):  # alternate, so drift hits both alike
                parallel.append(await one_question(server, store, settings, graph, f"parallel{index}", concurrency=CONCURRENCY))
                sequential.append(await one_question(server, store, settings, graph, f"sequential{index}", concurrency=1))
    mean = lambda runs, key: sum(run[key] for run in runs) / len(runs)  # noqa: E731
    ours, one_by_one, bound = mean(parallel, "seconds"), mean(sequential, "seconds"), CRITICAL_CALLS * LATENCY
    results = {
        "command": "make bench-comorag",
        "latency_s": LATENCY,
        "cycles": CYCLES,
        "probes_per_cycle": PROBES,
        "questions": args.questions,
        "gateway_concurrency": CONCURRENCY,
        "seconds_per_question": round(ours, 3),
        "sequential_seconds_per_question": round(one_by_one, 3),
        "critical_path_seconds": round(bound, 3),
        "speedup_vs_sequential": round(one_by_one / ours, 3),
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
