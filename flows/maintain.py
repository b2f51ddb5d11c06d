"""The ``maintain_memory`` flow, run on a schedule: prune old checkpoints, remove expired records, settle the records of
runs whose process died, report counts."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import flow, task
from prefect.artifacts import acreate_markdown_artifact
from prefect.cache_policies import NO_CACHE

from mnemoflow.flows.resources import Backend, flow_settings
from mnemoflow.graphs.parts import open_run_parts
from mnemoflow.graphs.settle import STALLED_AFTER_S, settle_silent_runs
from mnemoflow.memory.checkpoints import open_checkpointer
from mnemoflow.memory.maintenance import prune_checkpoints
from mnemoflow.settings import Settings

__all__ = ["maintain_memory"]


@task(name="prune-checkpoints", persist_result=False, cache_policy=NO_CACHE)
async def prune_old_checkpoints(settings: Settings, older_than: datetime) -> int:
    """Delete checkpoints older than ``older_than``, keeping each thread's latest; the number deleted."""
    async with open_checkpointer(settings) as checkpointer:
        return await prune_checkpoints(checkpointer, older_than=older_than)


@task(name="remove-expired-records", persist_result=False, cache_policy=NO_CACHE)
async def remove_expired_records(settings: Settings) -> int:
    """Delete the records whose ``expires_at`` has passed, in every namespace; the number deleted."""
    async with open_run_parts(settings, checkpointer=False) as parts:
        return await parts.store.delete_expired(time.time())


@task(name="settle-silent-runs", persist_result=False, cache_policy=NO_CACHE)
async def settle_dead_runs(settings: Settings) -> int:
    """Settle every ``running`` run record silent for longer than ``STALLED_AFTER_S`` as ``interrupted``, in every
    namespace (:func:`~mnemoflow.graphs.settle.settle_silent_runs`); the number settled."""
    async with open_run_parts(settings, checkpointer=False) as parts:
        return await settle_silent_runs(parts.store)


@flow(name="maintain_memory", persist_result=True, result_serializer="json")
async def maintain_memory(retention_days: float | None = None, store: Backend | None = None) -> dict[str, Any]:
    """Prune checkpoints older than ``retention_days`` (default MNEMOFLOW_PREFECT_CHECKPOINT_RETENTION_DAYS),
    keeping each thread's latest, remove expired records and settle the records of runs silent for longer than
    ``STALLED_AFTER_S`` (their process died: they become ``interrupted``); return and report the counts."""
    settings = flow_settings(store=store)
    days = settings.prefect.checkpoint_retention_days if retention_days is None else retention_days
    older_than = datetime.now(UTC) - timedelta(days=days)
    pruned = await prune_old_checkpoints(settings, older_than)
    expired = await remove_expired_records(settings)
    settled = await settle_dead_runs(settings)
    report = {
        "backend": settings.store.backend,
        "checkpoints_older_than": older_than.isoformat(),
        "checkpoints_deleted": pruned,
        "records_expired": expired,
        "runs_settled": settled,
    }
    await acreate_markdown_artifact(
        "\n".join(
            [
                f"# Memory maintenance ({settings.store.backend})",
                "",
                "| what | count |",
                "| --- | --- |",
                f"| checkpoints older than {older_than:%Y-%m-%d %H:%M} UTC deleted (each thread keeps its latest) | {pruned} |",
                f"| expired records deleted | {expired} |",
                f"| runs silent for over {STALLED_AFTER_S:.0f} s settled as interrupted | {settled} |",
            ]
        ),
        key="maintain-memory",
        description=f"{pruned} checkpoints pruned, {expired} expired records removed, {settled} dead runs settled",
    )
    return report
