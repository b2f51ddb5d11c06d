"""The Markdown report of a graph run, published as a Prefect artifact: the run's outputs as a table (what any
Markdown view shows), a link to the run's page in mnemoflow's UI, the graph's Mermaid diagram with the nodes the
run visited highlighted (drawn by Prefect's newer UI), the path it took, the nodes it ran again (its cycles) and its
model usage. A run that failed gets a report of its failure under the same key instead: the step that failed and
its error, the steps done before it, the link to its page.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping
from itertools import groupby
from typing import Any
from urllib.parse import quote, urlencode

from mnemoflow.graphs.loader import LoadedGraph
from mnemoflow.graphs.render import to_mermaid
from mnemoflow.graphs.runner import RunResult
from mnemoflow.redaction import redact_urls

__all__ = ["MAX_VALUE_CHARS", "artifact_key", "failure_report", "outputs_table", "run_page_url", "run_report"]

_USAGE_COLUMNS = ("calls", "requests", "retries", "reasks", "cache_hits", "prompt_tokens", "completion_tokens")
MAX_VALUE_CHARS = 300
"""An output's value is cut to this many characters in the table (the flow run's result keeps it whole)."""
_MARKDOWN = re.compile(r"([\\`*_\[\]<>|~&])")
"""What Markdown would read as markup inside a table cell (emphasis, code, links, HTML, entities, cell breaks)."""


def artifact_key(graph: LoadedGraph) -> str:
    """The key the UI groups a graph's reports under (lowercase letters, digits and dashes)."""
    return "graph-run-" + "".join(char if char.isalnum() else "-" for char in graph.spec.name.lower())


def _path(events: list[dict[str, Any]]) -> list[str]:
    """One line per step, consecutive runs of one node (a fan-out) folded into one line."""
    lines = []
    for number, (node, group) in enumerate(groupby(events, key=lambda event: (event["node"], event["event"])), 1):
        steps = list(group)
        seconds = sum(step["duration_s"] for step in steps)
        times = f" ×{len(steps)}" if len(steps) > 1 else ""
        failed = f" — **failed**: {redact_urls(steps[-1].get('error', ''))}" if node[1] == "error" else ""
        lines.append(f"{number}. `{node[0]}`{times} ({seconds:.3f} s){failed}")
    return lines


def _usage_table(events: list[dict[str, Any]], total: dict[str, Any]) -> list[str]:
    rows = [(event["node"], event["llm"]) for event in events if event.get("llm")]
    if not rows:
        return ["No model calls."]
    header = "| node | " + " | ".join(_USAGE_COLUMNS) + " |"
    lines = [header, "|" + " --- |" * (len(_USAGE_COLUMNS) + 1)]
    for node, usage in [*rows, ("**total**", total)]:
        lines.append(f"| {node} | " + " | ".join(str(usage.get(column, 0)) for column in _USAGE_COLUMNS) + " |")
    return lines


def run_page_url(ui_url: str, run_id: str, namespace: str) -> str:
    """The address of a run's page in mnemoflow's UI served at ``ui_url``."""
    return f"{ui_url.rstrip('/')}/runs/{quote(run_id, safe='')}?{urlencode({'namespace': namespace})}"


def _cell(value: Any) -> str:
    """A value as the text of one table cell: on one line, cut to :data:`MAX_VALUE_CHARS`, Markdown escaped."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    if len(text) > MAX_VALUE_CHARS:
        text = text[: MAX_VALUE_CHARS - 1].rstrip() + "…"
    return _MARKDOWN.sub(r"\\\1", text) if text else "(empty)"


def outputs_table(outputs: dict[str, Any]) -> list[str]:
    """The run's outputs as a Markdown table of field and value, long values shortened."""
    if not outputs:
        return ["No outputs."]
    return ["| output | value |", "| --- | --- |", *(f"| `{name}` | {_cell(value)} |" for name, value in outputs.items())]


def run_report(graph: LoadedGraph, result: RunResult, *, run_page: str | None = None) -> str:
    """The Markdown of one completed run; ``run_page`` is the address of its page in mnemoflow's UI, when known."""
    visited = Counter(step.split("/", 1)[0] for step in result.steps)
    fanned_out = {fanout.to for fanout in graph.spec.fanouts}
    repeated = {node: count for node, count in visited.items() if count > 1 and node not in fanned_out}
    cycles = max(repeated.values(), default=1) - 1
    diagram = to_mermaid(graph, visited=visited).rstrip("\n").split("\n")
    resumed = " It resumed an earlier attempt from its checkpoint." if result.resumed else ""
    page = [f"[The run's page in mnemoflow's UI]({run_page})", ""] if run_page else []
    lines = [
        f"# {result.graph}: {result.status}",
        "",
        f"Thread `{result.thread_id}`, run `{result.run_id}`: {len(result.steps)} steps in {result.duration_s:.2f} s, "
        f"{result.llm_calls} model calls, {result.tokens} tokens.{resumed}",
        "",
        *page,
        "## Outputs",
        "",
        *outputs_table(result.outputs),
        "",
        "## Diagram",
        "",
        "```mermaid",
        *diagram,
        "```",
        "",
        "## Path",
        "",
        *_path(result.trace),
        "",
        "## Cycles",
        "",
        (
            f"{cycles} cycle{'s' if cycles != 1 else ''}: "
            + ", ".join(f"`{node}` ran {count} times" for node, count in sorted(repeated.items()))
            if repeated
            else "No node ran twice: the run took no cycle."
        ),
        "",
        "## Model usage",
        "",
        *_usage_table(result.trace, result.llm_usage),
        "",
    ]
    return "\n".join(lines)


def _fenced(text: str) -> list[str]:
    """``text`` as a code block whose fence no run of backticks inside it can close."""
    fence = "`" * max([3, *(len(run) + 1 for run in re.findall(r"`+", text))])
    return [fence, text, fence]


def failure_report(
    graph: LoadedGraph, error: str, *, record: Mapping[str, Any] | None = None, run_page: str | None = None
) -> str:
    """The Markdown of a run that failed with ``error``: the step that failed, the error (URLs' credentials hidden),
    the path up to it. ``record`` is the properties of the run's record in the store (its trace), when the run got as
    far as writing one; ``run_page`` the address of its page in mnemoflow's UI."""
    events: list[dict[str, Any]] = list(record.get("events", [])) if record else []
    last = {event["node"]: (number, event["event"]) for number, event in enumerate(events)}
    failed = sorted((number, node) for node, (number, kind) in last.items() if kind == "error")  # not retried after
    done = sum(event["event"] == "end" for event in events)
    steps = f" after {done} step{'s' if done != 1 else ''} done"
    where = f"at step `{failed[-1][1]}`{steps}" if failed else f"between steps{steps}" if done else "before its first step"
    run = f"Thread `{record['thread_id']}`, run `{record['run_id']}`: " if record else ""
    page = [f"[The run's page in mnemoflow's UI]({run_page})", ""] if run_page else []
    return "\n".join(
        [
            f"# {graph.spec.name}: failed",
            "",
            f"{run}failed {where}.",
            "",
            *page,
            "## Error",
            "",
            *_fenced(redact_urls(error)),
            "",
            "## Path",
            "",
            *(_path(events) or ["No step ran."]),
            "",
        ]
    )
