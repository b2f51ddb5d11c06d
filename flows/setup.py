"""Prepare a Prefect server for mnemoflow, idempotently: the process work pool, the automation that
reschedules runs whose worker died, and the model limit.

A run whose worker dies mid-run stays ``Running`` on the server: nothing reports its end. With heartbeats on
(``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``, 30 s or more, in the workers' environment), the automation notices a
deployment run of ours that has gone silent and sets it back to ``AwaitingRetry``; the next worker to poll
takes it, and the graph resumes from its last checkpoint because the thread id is the flow run's id. Each
reschedule is an ``AwaitingRetry`` state in the run's history with :data:`RESCHEDULED` in its message:
:func:`reschedules` counts them, so a run that kills its worker every time is not rescheduled forever (see
``MNEMOFLOW_PREFECT_MAX_RESCHEDULES``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from prefect import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate, WorkPoolCreate
from prefect.client.schemas.objects import State, StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

__all__ = ["RESCHEDULED", "RESCHEDULE_AUTOMATION", "TAG", "ensure_model_limit", "reschedules", "setup_prefect"]

TAG = "mnemoflow"
"""The tag of every deployment in ``prefect.yaml``; the automation only touches runs that carry it."""
RESCHEDULE_AUTOMATION = "mnemoflow: reschedule runs whose worker died"
RESCHEDULED = "its worker is gone; rescheduled to resume"
"""How the message of the state the automation sets ends: what tells its reschedules from other retries."""


def reschedules(states: Iterable[State]) -> int:
    """How many times the automation rescheduled a flow run, from its state history, since the run last ended: a
    run retried by hand after it ended (Failed, Crashed...) starts its count again."""
    count = 0
    for state in sorted(states, key=lambda state: state.timestamp):
        if state.is_final():
            count = 0
        elif state.name == "AwaitingRetry" and (state.message or "").endswith(RESCHEDULED):
            count += 1
    return count


def reschedule_automation(silence: timedelta) -> AutomationCore:
    """Reschedule a deployment run tagged ``mnemoflow`` that sent no heartbeat (nor ended) for ``silence``."""
    return AutomationCore(
        name=RESCHEDULE_AUTOMATION,
        description="A run whose worker died stops sending heartbeats; set it to AwaitingRetry so another worker "
        "takes it and the graph resumes from its last checkpoint.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related=[{"prefect.resource.role": "deployment"}, {"prefect.resource.id": f"prefect.tag.{TAG}"}],
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=silence,
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.SCHEDULED,
                name="AwaitingRetry",
                message=f"no heartbeat for {silence.total_seconds():.0f} s: {RESCHEDULED}",
                force=True,
            )
        ],
    )


async def ensure_model_limit(name: str, limit: int, *, slot_decay_per_second: float | None = None) -> None:
    """Create or update the global concurrency limit that caps requests to the model across workers."""
    async with get_client() as client:
        decay = {"slot_decay_per_second": slot_decay_per_second} if slot_decay_per_second else {}
        try:
            await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit, **decay))
        else:
            await client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=limit, **decay))


async def setup_prefect(pool: str = "mnemoflow", *, silence: timedelta = timedelta(seconds=90)) -> list[str]:
    """Create what is missing on the server ``PREFECT_API_URL`` names; what was done, one line each."""
    done = []
    async with get_client() as client:
        try:
            await client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
            done.append(f"created the process work pool {pool!r}")
        except ObjectAlreadyExists:
            done.append(f"the work pool {pool!r} exists")
        for existing in await client.read_automations_by_name(RESCHEDULE_AUTOMATION):
            await client.delete_automation(existing.id)
        await client.create_automation(reschedule_automation(silence))
        done.append(f"automation {RESCHEDULE_AUTOMATION!r}: reschedules a run silent for {silence.total_seconds():.0f} s")
    return done
