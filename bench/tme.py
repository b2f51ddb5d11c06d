"""TME benchmark: the answer prompt built from the task memory against the full-history prompt, on the scenarios.

Each scenario (trip planning, cooking, meeting scheduling, shopping cart, as the paper evaluates them, and two of
ours: two tasks sharing a step name, a check about replaced values; the
conversations in ``bench/evaluation/data/tme/scenarios.yaml``, scripted by ``tests/support/tme_scenarios.py``)
runs turn by turn through the ``tme-turn`` graph, against the scripted model server over HTTP and a SQLite store
in a temporary folder. Per turn it compares the answer
request TME sent (system text and prompt, as received by the server) with the prompt a linear agent would
send: the same system text, every earlier user message and reply, then the new message. Tokens are counted
alike for both (``mnemoflow.nodes.tokens.count_tokens``); stale facts are the values the user has replaced that
appear in a prompt outside the current message and a checked step's lines of earlier values (``stale_facts``). Goals: from the sixth turn on, TME's
answer prompts at least 30% smaller in total; no stale fact in any TME prompt. TME also spends tokens on its
decompose, classify and re-derive calls; those are reported as ``tme_all_calls_tokens``, not in the goal.
Writes ``bench/results/tme.json``; run with ``make bench-tme``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnemoflow.graphs import GraphRunner  # noqa: E402
from mnemoflow.logging import configure_logging  # noqa: E402
from mnemoflow.memory import HashingEmbedder, SQLiteStore  # noqa: E402
from mnemoflow.settings import LogSettings, Settings, StoreSettings  # noqa: E402
from tests.support.openai_server import ScriptedOpenAIServer  # noqa: E402
from tests.support.tme_scenarios import SCENARIOS, Scenario, TurnRecord, play, script_scenario, turn_graph  # noqa: E402

FROM_TURN = 6
"""The token goal counts turns from this one on: a short conversation has little history to save on."""
TOKEN_GOAL = 0.7
"""TME's answer-prompt tokens at most this fraction of the baseline's (at least 30% fewer)."""


async def run_scenario(scenario: Scenario, folder: Path) -> list[TurnRecord]:
    """One scenario on its own server, store and session."""
    embedder = HashingEmbedder(384)
    settings = Settings(store=StoreSettings(sqlite_path=folder / f"{scenario.name}.db"))
    with ScriptedOpenAIServer() as server:
        script_scenario(server, scenario)
        llm = server.gateway()
        try:
            async with SQLiteStore(
                folder / f"{scenario.name}.db", embedding_model=embedder.model, embedding_dimension=embedder.dimension
            ) as store:
                runner = GraphRunner(
                    turn_graph(scenario, folder), store=store, embedder=embedder, llm=llm, settings=settings, checkpointer=None
                )
                async with runner:
                    records = await play(scenario, runner, "bench", scenario.name, server=server)
        finally:
            await llm.aclose()
    for record in records:
        if record.state["errors"] or record.state["response"] != record.turn.answer:
            raise RuntimeError(f"{scenario.name} turn {record.number} did not run as scripted: {record.state['errors']}")
    return records


def summarize(records: list[TurnRecord]) -> dict[str, Any]:
    late = [record for record in records if record.number >= FROM_TURN]
    tme = sum(record.tme_tokens for record in late)
    baseline = sum(record.baseline_tokens for record in late)
    all_calls = sum(record.all_calls_tokens for record in late)
    tme_stale = sum(len(record.tme_stale) for record in records)
    baseline_stale = sum(len(record.baseline_stale) for record in records)
    ratio = tme / baseline if baseline else None
    return {
        "turns": len(records),
        f"tme_tokens_from_turn_{FROM_TURN}": tme,
        f"baseline_tokens_from_turn_{FROM_TURN}": baseline,
        "token_ratio": round(ratio, 3) if ratio is not None else None,
        "tokens_saved_pct": round(100 * (1 - ratio), 1) if ratio is not None else None,
        f"tme_all_calls_tokens_from_turn_{FROM_TURN}": all_calls,
        "all_calls_token_ratio": round(all_calls / baseline, 3) if baseline else None,
        "tme_tokens_all_turns": sum(record.tme_tokens for record in records),
        "baseline_tokens_all_turns": sum(record.baseline_tokens for record in records),
        "tme_stale_facts": tme_stale,
        "baseline_stale_facts": baseline_stale,
        "tme_turns_with_stale_facts": [record.number for record in records if record.tme_stale],
        "baseline_turns_with_stale_facts": [record.number for record in records if record.baseline_stale],
        "token_goal_met": None if ratio is None else ratio <= TOKEN_GOAL,  # None: no turn that late (a short scenario)
        "stale_goal_met": tme_stale == 0,
    }


def table(results: dict[str, Any]) -> str:
    late = f"from turn {FROM_TURN}"
    header = f"{'scenario':<10} {'turns':>5} {'TME tok':>8} {'base tok':>8} {'ratio':>6} {'all-calls':>9} {'TME stale':>9} {'base stale':>10}"
    lines = [f"answer-prompt tokens {late} (TME vs full history) and stale facts over all turns", header, "-" * len(header)]
    rows = [(name, scenario["summary"]) for name, scenario in results["scenarios"].items()] + [("overall", results["overall"])]
    for name, summary in rows:
        lines.append(
            f"{name:<10} {summary['turns']:>5} {summary[f'tme_tokens_from_turn_{FROM_TURN}']:>8} "
            f"{summary[f'baseline_tokens_from_turn_{FROM_TURN}']:>8} {summary['token_ratio']!s:>6} "
            f"{summary['all_calls_token_ratio']!s:>9} {summary['tme_stale_facts']:>9} {summary['baseline_stale_facts']:>10}"
        )
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("bench/results/tme.json"))
    args = parser.parse_args()
    configure_logging(LogSettings(level="warning", format="json"), stream=open(os.devnull, "w"), force=True)  # noqa: SIM115
    results: dict[str, Any] = {
        "command": "make bench-tme",
        "from_turn": FROM_TURN,
        "token_goal_ratio": TOKEN_GOAL,
        "token_counter": "mnemoflow.nodes.tokens.count_tokens (words and punctuation marks)",
        "scenarios": {},
    }
    every: list[TurnRecord] = []
    with tempfile.TemporaryDirectory() as folder_name:
        for scenario in SCENARIOS:
            records = await run_scenario(scenario, Path(folder_name))
            every += records
            results["scenarios"][scenario.name] = {
                "title": scenario.title,
                "stresses": scenario.stresses,
                "rederive": scenario.rederive,
                "summary": summarize(records),
                "turns": [record.summary() for record in records],
            }
    results["overall"] = {
        key: value
        for key, value in summarize(every).items()
        if key not in ("tme_turns_with_stale_facts", "baseline_turns_with_stale_facts")
    }
    results["goals_met"] = {
        "tokens": results["overall"]["token_goal_met"],
        "stale_facts": results["overall"]["stale_goal_met"],
        "tokens_per_scenario": {name: s["summary"]["token_goal_met"] for name, s in results["scenarios"].items()},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"written to {args.output}")


if __name__ == "__main__":
    asyncio.run(main())
