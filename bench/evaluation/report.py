"""An evaluation's result: the JSON every run writes (comparable across runs and models) and its Markdown table.

The shape::

    {"mechanism", "model", "endpoint", "date", "items",
     "systems": {NAME: {"score", "scores": {...}, "calls", "prompt_tokens", "completion_tokens", "seconds", ...}},
     "per_item": [{"item", "group", "system", "score", "scores", "calls", "prompt_tokens", "completion_tokens",
                   "seconds", "detail", "error"?}, ...]}

``score`` is the mechanism's main score in 0..1 (:attr:`~mnemoflow.evaluation.harness.Evaluation.score_name`),
a system's the mean over its items unless the evaluation says otherwise (:meth:`~mnemoflow.evaluation.harness.Evaluation.score`);
a system's ``scores`` are the means of its items' scores (each over the items that have it) and what the
evaluation adds (:meth:`~mnemoflow.evaluation.harness.Evaluation.summarize`); calls, tokens and seconds are summed
over the items, the set-up's (indexing a book, say) apart under ``setup``.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnemoflow.evaluation.harness import Attempt, Evaluation, Item, mean

if TYPE_CHECKING:
    from mnemoflow.llm.endpoint import Endpoint
    from mnemoflow.settings import Settings

__all__ = ["markdown_table", "result_of", "write_result"]


def result_of(
    evaluation: Evaluation,
    endpoint: Endpoint,
    settings: Settings,
    started_at: datetime,
    items: list[Item],
    attempts: list[Attempt],
    setup: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    systems: dict[str, Any] = {}
    for system in evaluation.chosen_systems:
        mine = [attempt for attempt in attempts if attempt.system == system]
        keys = sorted({key for attempt in mine for key in attempt.outcome.scores})
        scores = {key: round(mean([a.outcome.scores[key] for a in mine if key in a.outcome.scores]), 4) for key in keys}
        systems[system] = {
            "score": round(evaluation.score(system, mine), 4),
            "scores": {**scores, **evaluation.summarize(system, mine)},
            "calls": sum(attempt.usage.calls for attempt in mine),
            "prompt_tokens": sum(attempt.usage.prompt_tokens for attempt in mine),
            "completion_tokens": sum(attempt.usage.completion_tokens for attempt in mine),
            "seconds": round(sum(attempt.seconds for attempt in mine), 3),
            "attempts": len(mine),
            "failed": sum(attempt.error is not None for attempt in mine),
            "setup": setup.get(system, {}),
        }
    return {
        "mechanism": evaluation.mechanism,
        "model": endpoint.model,
        "endpoint": endpoint.kind,
        "date": started_at.isoformat(timespec="seconds"),
        "items": len(items),
        "quick": evaluation.options.quick,
        "score": evaluation.score_name,
        "embedder": f"{settings.embedding.provider}:{settings.embedding.model or 'default'}",
        "data": evaluation.describe(),
        "systems": systems,
        "per_item": [attempt.as_dict() for attempt in attempts],
    }


def markdown_table(result: dict[str, Any]) -> str:
    """The systems side by side: main score, the other scores, and what each spent."""
    systems: dict[str, Any] = result["systems"]
    keys = sorted({key for system in systems.values() for key, value in system["scores"].items() if isinstance(value, int | float)})
    header = ["system", f"score ({result['score']})", *keys, "items", "failed", "calls", "prompt tokens", "completion tokens", "seconds"]
    lines = [
        f"**{result['mechanism']}** on {result['model']} ({result['endpoint']}), {result['date']}, {result['items']} items",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for name, system in systems.items():
        row = [
            name,
            f"{system['score']:.3f}",
            *(_number(system["scores"].get(key)) for key in keys),
            str(system["attempts"]),
            str(system["failed"]),
            str(system["calls"]),
            str(system["prompt_tokens"]),
            str(system["completion_tokens"]),
            f"{system['seconds']:.0f}",
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _number(value: Any) -> str:
    return "" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def write_result(result: dict[str, Any], path: Path) -> Path:
    """Write the result as JSON at ``path`` and its table beside it (``.md``); the table's path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    table = path.with_suffix(".md")
    table.write_text(markdown_table(result) + "\n", encoding="utf-8")
    return table
