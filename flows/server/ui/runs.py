"""The runs the UI shows, as plain JSON-ready dicts: the runs list with its filters and thread groups, and one run
explained (its input and outputs, each step's writes and model calls, its error, where its thread came from).

Read from the run records every run writes (``mnemoflow.graphs.runner``) through the store API; bad input raises
:class:`~mnemoflow.flows.server.ui.views.UIError` like the other views.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from mnemoflow.flows.server.ui.views import UIError, graph_detail, graph_names, local_links, namespaces, store_errors
from mnemoflow.graphs.runner import RUN_KIND, STALLED_AFTER_S
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import NodeRecord, stable_id
from mnemoflow.settings import Settings

__all__ = [
    "RUN_KIND",
    "RUN_SCAN_LIMIT",
    "RUN_SCAN_PAGE",
    "RUN_STATUSES",
    "STALLED_AFTER_S",
    "RunFilter",
    "run_detail",
    "run_listing",
    "run_summaries",
    "run_url",
    "thread_groups",
    "thread_url",
]


RUN_STATUSES = ("completed", "failed", "running", "stalled", "interrupted")
"""The statuses the runs list offers to filter by (``stalled`` is derived: see :func:`_status`)."""

RUN_SCAN_LIMIT = 300
"""At most this many of a namespace's most recent runs are read to answer a filtered runs list.

The store has no query by a run's graph, status or thread (they are properties of the ``Run`` record), so the list
reads runs newest first, one page of :data:`RUN_SCAN_PAGE` at a time, filters them in Python and stops once it has
enough or has read this many; a list of every namespace reads up to this many per namespace. Each run record is read
whole (its steps too, up to a few hundred KB for a long run), so the bound is what keeps a filter cheap: a filter
whose runs are all older is answered with what was found, and the answer says the scan stopped early."""

RUN_SCAN_PAGE = 50
"""Runs read per store call while scanning."""


def _usage(properties: dict[str, Any]) -> dict[str, Any]:
    llm = properties.get("llm")
    return llm if isinstance(llm, dict) else {}


def _status(properties: dict[str, Any]) -> str:
    """The run's status; ``stalled`` for a running run whose record has stopped changing (its process died, or was
    killed) and that nothing has settled yet: the next run on its thread, or maintenance, rewrites it ``interrupted``
    (:mod:`mnemoflow.graphs.settle`)."""
    status = str(properties.get("status", "unknown"))
    recorded_at = properties.get("recorded_at")
    if status == "running" and isinstance(recorded_at, int | float) and time.time() - recorded_at > STALLED_AFTER_S:
        return "stalled"
    return status


def _annotations(properties: dict[str, Any]) -> dict[str, Any]:
    annotations = properties.get("annotations")
    return annotations if isinstance(annotations, dict) else {}


def run_url(namespace: str, run_id: str) -> str:
    """The page of one run."""
    return f"/runs/{quote(run_id, safe='')}?{urlencode({'namespace': namespace})}"


def thread_url(namespace: str, thread_id: str) -> str:
    """The runs list filtered to one thread of one namespace."""
    return f"/runs?{urlencode({'namespace': namespace, 'thread': thread_id})}"


def _run_link(namespace: str, run_id: object) -> dict[str, str]:
    return {"run_id": str(run_id), "url": run_url(namespace, str(run_id))}


def _takeovers(namespace: str, properties: dict[str, Any]) -> dict[str, Any]:
    """How a settled run and the run that took its thread over name each other: ``resumed_by`` (the later run's link,
    or None), ``resumes`` (the earlier runs' links) and ``settled_reason`` (why the run was judged dead, or "")."""
    resumes = properties.get("resumes")
    return {
        "resumed_by": _run_link(namespace, properties["resumed_by"]) if properties.get("resumed_by") else None,
        "resumes": [_run_link(namespace, run_id) for run_id in resumes if run_id] if isinstance(resumes, list) else [],
        "settled_reason": str(properties.get("settled_reason") or ""),
    }


def _run_summary(node: NodeRecord) -> dict[str, Any]:
    properties = node.properties
    usage = _usage(properties)
    run_id = str(properties.get("run_id", ""))
    thread_id = str(properties["thread_id"]) if properties.get("thread_id") else None
    return {
        "namespace": node.namespace,
        "id": node.id,
        "run_id": run_id,
        "url": run_url(node.namespace, run_id),
        "graph": str(properties.get("graph", "")),
        "graph_version": properties.get("graph_version"),
        "thread_id": thread_id,
        "thread_url": thread_url(node.namespace, thread_id) if thread_id else None,
        "status": _status(properties),
        "resumed": bool(properties.get("resumed", False)),
        "started_at": properties.get("started_at"),
        "duration_s": properties.get("duration_s"),
        "steps": properties.get("steps", 0),
        "llm_calls": usage.get("calls", 0),
        "tokens": usage.get("tokens", 0),
        "prefect": _prefect_link(properties),
        "updated_at": node.updated_at.timestamp() if node.updated_at else None,
        **_takeovers(node.namespace, properties),
    }


def _prefect_link(properties: dict[str, Any]) -> dict[str, str] | None:
    """The Prefect flow run that ran a run (``id``, and ``url`` when it is an http(s) address), from its annotations."""
    annotations = _annotations(properties)
    if not annotations.get("prefect_flow_run_id"):
        return None
    url = str(annotations.get("prefect_flow_run_url") or "")
    return {"id": str(annotations["prefect_flow_run_id"]), "url": url if urlsplit(url).scheme in ("http", "https") else ""}


@dataclass(frozen=True)
class RunFilter:
    """What the runs list is narrowed to; ``None`` leaves a dimension open. The thread must match exactly."""

    namespace: str | None = None
    graph: str | None = None
    status: str | None = None
    thread: str | None = None

    @property
    def narrows(self) -> bool:
        """Whether runs are dropped after reading (a namespace alone is asked of the store)."""
        return any(value is not None for value in (self.graph, self.status, self.thread))

    def matches(self, run: dict[str, Any]) -> bool:
        return (
            (self.graph is None or run["graph"] == self.graph)
            and (self.status is None or run["status"] == self.status)
            and (self.thread is None or run["thread_id"] == self.thread)
        )


async def _scan(store: GraphStore, namespace: str, runs: RunFilter, wanted: int) -> tuple[list[dict[str, Any]], bool]:
    """The namespace's runs that pass ``runs``, newest first, read page by page until ``wanted`` are found, the runs
    run out or :data:`RUN_SCAN_LIMIT` are read; the flag says the bound stopped the scan with runs left unread."""
    found: list[dict[str, Any]] = []
    read = 0
    while read < RUN_SCAN_LIMIT:
        size = min(RUN_SCAN_PAGE if runs.narrows else wanted, RUN_SCAN_LIMIT - read)
        page = await store.list_nodes(namespace, kind=RUN_KIND, limit=size, offset=read)
        read += len(page)
        found += [summary for summary in map(_run_summary, page) if runs.matches(summary)]
        if len(page) < size or len(found) >= wanted:
            return found, False
    return found, True


async def _find_runs(store: GraphStore, runs: RunFilter, limit: int) -> tuple[list[dict[str, Any]], bool]:
    with store_errors():
        names = [runs.namespace] if runs.namespace is not None else [summary.name for summary in await store.namespaces()]
        found: list[dict[str, Any]] = []
        stopped_early = False
        for name in names:
            matches, stopped = await _scan(store, name, runs, limit)
            found += matches
            stopped_early = stopped_early or stopped
    found.sort(key=lambda run: float(run["started_at"] or 0), reverse=True)
    return found[:limit], stopped_early


async def run_summaries(
    store: GraphStore,
    *,
    namespace: str | None = None,
    graph: str | None = None,
    status: str | None = None,
    thread: str | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """The ``limit`` most recent runs, newest first, of one namespace or of every namespace, narrowed to a graph, a
    status and a thread when given (searching at most :data:`RUN_SCAN_LIMIT` runs per namespace)."""
    found, _ = await _find_runs(store, RunFilter(namespace, graph, status, thread), limit)
    return found


def thread_groups(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``runs`` (newest first) grouped by thread: one group per (namespace, thread), in the order of each group's newest
    run, with its ``count``, the ``status`` and ``started_at`` of that newest run, its graphs and its runs' summed steps,
    model calls and tokens. A run without a thread is a group of its own; a group of one run is shown as a plain row."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for run in runs:
        thread = str(run["thread_id"] or "")
        key = (run["namespace"], thread or f"run:{run['run_id']}")
        group = groups.get(key)
        if group is None:
            group = groups[key] = {
                "namespace": run["namespace"],
                "thread_id": thread or None,
                "thread_url": run["thread_url"],
                "status": run["status"],
                "started_at": run["started_at"],
                "graphs": [],
                "runs": [],
            }
        group["runs"].append(run)
        if run["graph"] not in group["graphs"]:
            group["graphs"].append(run["graph"])
    for group in groups.values():
        group["count"] = len(group["runs"])
        for figure in ("steps", "llm_calls", "tokens"):
            group[figure] = sum(run[figure] for run in group["runs"] if isinstance(run[figure], int))
    return list(groups.values())


async def run_listing(
    store: GraphStore,
    *,
    namespace: str | None = None,
    graph: str | None = None,
    status: str | None = None,
    thread: str | None = None,
    limit: int = 50,
) -> dict[str, Any]:
    """The runs list page: the matching runs (as :func:`run_summaries`), grouped by thread (:func:`thread_groups`),
    whether the scan stopped at its bound (``partial``), and the choices of the filters (graphs, statuses,
    namespaces)."""
    runs, partial = await _find_runs(store, RunFilter(namespace, graph, status, thread), limit)
    graphs = graph_names() | {run["graph"] for run in runs if run["graph"]} | ({graph} if graph else set())
    statuses = list(RUN_STATUSES) + sorted({run["status"] for run in runs} - set(RUN_STATUSES))
    if status and status not in statuses:
        statuses.append(status)
    return {
        "runs": runs,
        "groups": thread_groups(runs),
        "partial": partial,
        "scan_limit": RUN_SCAN_LIMIT,
        "graphs": sorted(graphs),
        "statuses": statuses,
        "namespaces": await namespaces(store),
    }


def _event_json(event: dict[str, Any]) -> dict[str, Any]:
    """A step as the page shows it: the recorded event, with ``writes`` and ``calls`` dropped when malformed."""
    shown = dict(event)
    if not isinstance(shown.get("writes"), dict):
        shown.pop("writes", None)
    calls = shown.get("calls")
    if isinstance(calls, list):
        shown["calls"] = [call for call in calls if isinstance(call, dict)]
    else:
        shown.pop("calls", None)
    return shown


def _failed_step(events: list[dict[str, Any]], status: str) -> dict[str, Any] | None:
    """The step a failed run failed in (its last error event): ``index`` (1-based, as the steps table numbers it)
    and ``node``; ``None`` for a run that did not fail, or failed before its first step."""
    if status not in ("failed", "interrupted"):
        return None
    for index in range(len(events), 0, -1):
        if events[index - 1].get("event") == "error":
            return {"index": index, "node": str(events[index - 1].get("node", ""))}
    return None


def _forked_from(namespace: str, properties: dict[str, Any]) -> dict[str, Any] | None:
    """The run and checkpoint a forked run's thread was made from (its annotations), with the page of that run."""
    annotations = _annotations(properties)
    run_id = annotations.get("forked_from_run")
    if not run_id:
        return None
    return {
        "run_id": str(run_id),
        "thread_id": str(annotations.get("forked_from_thread") or ""),
        "checkpoint_id": str(annotations.get("forked_from_checkpoint") or ""),
        "url": run_url(namespace, str(run_id)),
    }


def _value_notes(run: dict[str, Any]) -> tuple[str, str]:
    """Why a run shows no input or no outputs (empty when it has them)."""
    input_note = ""
    if run["input"] is None:
        input_note = (
            "Not recorded: this run resumed its thread from a checkpoint; the input went to the run that started the thread."
            if run["resumed"]
            else "Not recorded for this run."
        )
    outputs_note = ""
    if run["outputs"] is None:
        if run["status"] == "running":
            outputs_note = "Not yet: the run is still going."
        elif run["status"] == "completed":
            outputs_note = "Not recorded for this run."
        else:
            outputs_note = f"None: the run did not complete ({run['status']})."
    return input_note, outputs_note


async def run_detail(store: GraphStore, settings: Settings, namespace: str, run_id: str) -> dict[str, Any]:
    """One run: its summary, input and outputs (previewed values: see ``mnemoflow.graphs.preview``), its steps with the
    fields each wrote and its model calls, its error and the step it failed in, where its thread came from (a fork,
    a resume), the Prefect flow run that ran it, the mechanism views about it and, when its graph is in the library,
    the diagram with visited nodes marked."""
    # imported here: the mechanism views build on this module
    from mnemoflow.flows.server.ui import mechanisms

    with store_errors():
        [node] = await store.get_nodes(namespace, [stable_id(namespace, RUN_KIND, run_id)])
    if node is None or node.kind != RUN_KIND:
        raise UIError(404, f"no run {run_id!r} in namespace {namespace!r}")
    properties = node.properties
    detail = _run_summary(node)
    events = properties.get("events")
    detail["events"] = [_event_json(event) for event in events if isinstance(event, dict)] if isinstance(events, list) else []
    detail["llm"] = _usage(properties)
    detail["error"] = str(properties.get("error") or "")
    detail["failed_step"] = _failed_step(detail["events"], detail["status"])
    detail["input"] = properties.get("input")
    detail["outputs"] = properties.get("outputs")
    detail["input_note"], detail["outputs_note"] = _value_notes(detail)
    detail["forked_from"] = _forked_from(namespace, properties)
    visited = [str(event.get("node")) for event in detail["events"] if event.get("event") == "end"]
    detail["visited"] = sorted(set(visited))
    detail["live"] = detail["status"] == "running"
    detail["mermaid"] = None
    if detail["graph"] in graph_names():
        try:
            detail["mermaid"] = graph_detail(detail["graph"], settings, visited=visited)["mermaid"]
        except UIError:
            detail["mermaid"] = None
    detail["links"] = local_links(mechanisms.run_links(detail))
    detail["now"] = time.time()
    return detail
