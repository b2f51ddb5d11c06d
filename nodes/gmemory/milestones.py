"""G-Memory's periodic work: a revision or a merge every so many recorded tasks, run exactly once.

Each multiple ``n`` of ``every`` that the namespace's query count reaches is a milestone ``<prefix>-<n>``. The
task that reaches it first claims it (the ``GMilestone`` record written as new, so a second claimer gets
``ConflictError`` and steps aside), runs the work and files its report on the milestone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from mnemoflow.errors import ConflictError
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import NodeRecord
from mnemoflow.nodes.context import RunContext
from mnemoflow.nodes.gmemory.model import MILESTONE, QUERY, milestone_id

__all__ = ["claim", "due", "finish", "run_due"]


async def claim(store: GraphStore, namespace: str, name: str) -> bool:
    """Claim milestone ``name``; False when another task already has."""
    record = NodeRecord(
        id=milestone_id(namespace, name), namespace=namespace, kind=MILESTONE, properties={"name": name, "status": "claimed"}
    )
    try:
        await store.upsert_nodes([record], new=[record.id])
    except ConflictError:
        return False
    return True


async def finish(store: GraphStore, namespace: str, name: str, report: dict[str, Any]) -> None:
    """Mark milestone ``name`` done, with its report."""
    record = NodeRecord(
        id=milestone_id(namespace, name),
        namespace=namespace,
        kind=MILESTONE,
        properties={"name": name, "status": "done", "report": report},
    )
    await store.upsert_nodes([record])


async def due(store: GraphStore, namespace: str, prefix: str, every: int) -> list[int]:
    """The multiples of ``every`` the namespace's query count has reached whose milestone nobody claimed yet."""
    count = await store.count_nodes(namespace, QUERY)
    reached = list(range(every, count + 1, every))
    claimed = await store.get_nodes(namespace, [milestone_id(namespace, f"{prefix}-{n}") for n in reached]) if reached else []
    return [n for n, found in zip(reached, claimed, strict=True) if found is None]


async def run_due(
    context: RunContext,
    prefix: str,
    every: int,
    work: Callable[[int], Awaitable[dict[str, Any]]],
    kept: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run ``work(n)`` for every due milestone ``<prefix>-<n>`` this task claims; each report (its ``kept`` keys)
    is saved on its milestone. Returns the reports by milestone name."""
    reports: dict[str, Any] = {}
    for n in await due(context.store, context.namespace, prefix, every):
        name = f"{prefix}-{n}"
        if not await claim(context.store, context.namespace, name):
            continue
        reports[name] = report = await work(n)
        await finish(context.store, context.namespace, name, {k: v for k, v in report.items() if kept is None or k in kept})
    return reports
