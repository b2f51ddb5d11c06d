"""L2MAC benchmark: prompt tokens per model call with a fresh context per instruction, against keeping the whole history.

The scripted model of ``tests/support/l2mac_model.py`` builds the ``tally`` package over three instructions (a loop,
a failing test fixed by the fix loop, three bad tool calls, a large file read back) through the ``l2mac`` graph,
against the scripted server over HTTP and a SQLite store in a temporary folder. Two runs in the same process:

- **l2mac**: the library graph; each instruction starts from a fresh context (system, task, instruction with the
  previous step's summary and the file list), and a context that would overflow ``--window`` tokens is summarized
  and the instruction restarted.
- **baseline**: the same graph with ``keep_history: true`` and a window too large to overflow, so every instruction
  continues the whole dialog so far (what a single long conversation with the same tools would send).

For every request the server received, the prompt is measured alike for both runs: the messages and the offered
tools' schemas, in ``mnemoflow.nodes.tokens.count_tokens`` tokens. Reported: calls, prompt tokens in total and per call, the
peak context (largest prompt sent), and the ratios l2mac / baseline. Both runs must end with the same files.
Writes ``bench/results/l2mac.json``; run with ``make bench-l2mac``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnemoflow.graphs import LoadedGraph, load_graph, run_graph  # noqa: E402
from mnemoflow.logging import configure_logging  # noqa: E402
from mnemoflow.memory import HashingEmbedder, SQLiteStore  # noqa: E402
from mnemoflow.nodes.l2mac.files import load_project  # noqa: E402
from mnemoflow.nodes.l2mac.window import context_size  # noqa: E402
from mnemoflow.nodes.tokens import count_tokens  # noqa: E402
from mnemoflow.settings import LogSettings, Settings, StoreSettings  # noqa: E402
from tests.support.graph_variants import library_variant  # noqa: E402
from tests.support.l2mac_model import FINAL_FILES, PackageModel  # noqa: E402
from tests.support.openai_server import Rule, ScriptedOpenAIServer  # noqa: E402

TASK = "Build tally, a tiny package of arithmetic helpers, with tests and a README."
BASELINE_WINDOW = 10_000_000


def prompt_tokens(body: dict[str, Any]) -> int:
    """The prompt of one request: its messages and the tools it offers."""
    tools = count_tokens(json.dumps(body["tools"])) if body.get("tools") else 0
    return context_size(body.get("messages") or []) + tools


def baseline_graph(folder: Path) -> LoadedGraph:
    marker = "    use: l2mac.start_instruction\n"
    return library_variant("l2mac", folder, {marker: marker + "    with: {keep_history: true}\n"})


async def one_run(graph: LoadedGraph, window: int, folder: Path, name: str) -> dict[str, Any]:
    embedder = HashingEmbedder(384)
    database = folder / f"{name}.db"
    settings = Settings(store=StoreSettings(sqlite_path=database))
    with ScriptedOpenAIServer() as server:
        server.script(Rule(respond=PackageModel()))
        llm = server.gateway()
        try:
            async with SQLiteStore(database, embedding_model=embedder.model, embedding_dimension=embedder.dimension) as store:
                result = await run_graph(
                    graph, {"task": TASK, "context_window": window}, store=store, embedder=embedder, llm=llm,
                    settings=settings, checkpointer=None, namespace="bench",
                )  # fmt: skip
                files = await (await load_project(store, "bench", result.thread_id)).heads()
        finally:
            await llm.aclose()
        prompts = [prompt_tokens(request["body"]) for request in server.requests]
    if files != FINAL_FILES:
        raise RuntimeError(f"the {name} run did not build the scripted package: {sorted(files)}")
    return {
        "calls": len(prompts),
        "prompt_tokens_total": sum(prompts),
        "prompt_tokens_per_call_mean": round(statistics.mean(prompts), 1),
        "prompt_tokens_per_call_median": statistics.median(prompts),
        "peak_context_tokens": max(prompts),
        "restarts": result.state.get("restarts", 0),
        "prompt_tokens_per_call": prompts,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("bench/results/l2mac.json"))
    parser.add_argument("--window", type=int, default=8_000, help="L2MAC's context window, in tokens")
    args = parser.parse_args()
    configure_logging(LogSettings(level="warning", format="json"), stream=open(os.devnull, "w"), force=True)  # noqa: SIM115
    with tempfile.TemporaryDirectory() as folder_name:
        folder = Path(folder_name)
        l2mac = await one_run(load_graph("l2mac"), args.window, folder, "l2mac")
        baseline = await one_run(baseline_graph(folder), BASELINE_WINDOW, folder, "baseline")

    def ratio(key: str) -> float:
        return round(l2mac[key] / baseline[key], 3)

    results = {
        "command": "make bench-l2mac",
        "window_tokens": args.window,
        "token_counter": "mnemoflow.nodes.tokens.count_tokens over the messages and the tools' JSON schemas",
        "l2mac": l2mac,
        "baseline_whole_history": baseline,
        "ratios_l2mac_over_baseline": {
            "prompt_tokens_per_call_mean": ratio("prompt_tokens_per_call_mean"),
            "prompt_tokens_total": ratio("prompt_tokens_total"),
            "peak_context_tokens": ratio("peak_context_tokens"),
        },
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    header = f"{'run':<10} {'calls':>5} {'total':>8} {'mean/call':>9} {'median':>7} {'peak':>6} {'restarts':>8}"
    print(header)
    print("-" * len(header))
    for name, run in (("l2mac", l2mac), ("baseline", baseline)):
        print(
            f"{name:<10} {run['calls']:>5} {run['prompt_tokens_total']:>8} {run['prompt_tokens_per_call_mean']:>9} "
            f"{run['prompt_tokens_per_call_median']:>7} {run['peak_context_tokens']:>6} {run['restarts']:>8}"
        )
    print(f"ratios l2mac / baseline: {results['ratios_l2mac_over_baseline']}")
    print(f"written to {args.output}")


if __name__ == "__main__":
    asyncio.run(main())
