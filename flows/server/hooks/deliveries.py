"""Deliveries remembered in the store, with their outcome, so a redelivery never starts a second run.

One ``WebhookDelivery`` record per (hook, delivery id), and one ``WebhookSignature`` record per signature
naming the delivery it was first received with, in the hooks namespace, both expiring after the retention (``maintain_memory``
removes them then). The signature records catch a replay that the delivery id cannot: GitHub does not sign
its delivery id, and no scheme signs the hook's name, so a captured request resent under a fresh id, or to
another hook with the same secret, carries a signature already seen, and never runs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

from mnemoflow.memory.names import REGISTRY
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import NodeRecord, stable_id

__all__ = ["DELIVERY_KIND", "DeliveryLog", "Outcome", "PastDelivery", "RecordedDelivery"]

DELIVERY_KIND = "WebhookDelivery"
"""The kind of the record each delivery is remembered as."""

REGISTRY.register_kind(DELIVERY_KIND, description="A webhook delivery received by `mnemoflow serve`, and its outcome.")
REGISTRY.register_kind("WebhookSignature", description="A webhook signature already received, and the delivery it signed.")

Outcome = Literal["triggered", "ignored", "rejected", "unavailable", "pending"]
"""triggered: a run was created; ignored: filtered out by events/when; rejected: the payload or parameters
were refused; unavailable: Prefect could not take the run (a redelivery retries); pending: recorded before Prefect
was asked, and still so when the server stopped before its answer was recorded (a redelivery processes it again,
and Prefect's idempotency key returns the run if the first call got through)."""

FINAL_OUTCOMES: frozenset[str] = frozenset({"triggered", "ignored"})
"""Outcomes a redelivery repeats instead of processing again."""


@dataclass(frozen=True)
class PastDelivery:
    outcome: str
    flow_run_id: str | None
    reason: str | None
    attempts: int


@dataclass(frozen=True)
class RecordedDelivery:
    """A remembered delivery as a listing shows it (the UI's deliveries page): what was received, what became of it."""

    hook: str
    delivery_id: str
    event: str | None
    """The provider's event name (GitHub's ``X-GitHub-Event``, Slack's event type) as received; ``None`` when it sent none."""
    outcome: str
    deployment: str | None
    attempts: int
    """How many times the delivery was processed (a redelivery after ``unavailable`` or ``pending`` is one more)."""
    reason: str | None
    flow_run_id: str | None
    """The Prefect flow run the delivery created, when it triggered one."""
    received_at: float | None
    """When the delivery was first received (Unix epoch seconds)."""
    updated_at: float | None
    """When its record last changed: its latest attempt."""
    expires_at: float | None
    """When it is forgotten, after which a redelivery would trigger a new run."""


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _epoch(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _recorded(record: NodeRecord) -> RecordedDelivery:
    properties = record.properties
    attempts = properties.get("attempts")
    first = record.created_at.timestamp() if record.created_at is not None else _epoch(properties.get("received_at"))
    return RecordedDelivery(
        hook=str(properties.get("hook", "")),
        delivery_id=str(properties.get("delivery_id", "")),
        event=_text(properties.get("event")),
        outcome=str(properties.get("outcome", "")),
        deployment=_text(properties.get("deployment")),
        attempts=attempts if isinstance(attempts, int) and not isinstance(attempts, bool) else 1,
        reason=_text(properties.get("reason")),
        flow_run_id=_text(properties.get("flow_run_id")),
        received_at=first,
        updated_at=record.updated_at.timestamp() if record.updated_at is not None else _epoch(properties.get("received_at")),
        expires_at=_epoch(properties.get("expires_at")),
    )


class DeliveryLog:
    """The deliveries of every hook, in one namespace of the store."""

    def __init__(self, store: GraphStore, *, namespace: str, retention_days: float) -> None:
        self.store = store
        self.namespace = namespace
        self.retention_s = retention_days * 86_400
        self._locks: dict[str, asyncio.Lock] = {}
        self._holders: dict[str, int] = {}
        """How many deliveries hold or wait for each key's lock: the lock is dropped when none does."""

    @asynccontextmanager
    async def handling(self, *keys: str) -> AsyncIterator[None]:
        """Held while a delivery is handled, so two copies arriving together start one run (in this process;
        Prefect's idempotency key covers several). Keys are the delivery's id and its signature: copies and
        replays share one of them, and only they wait for each other (one lock per key, not a shared pool)."""
        ordered = sorted(set(keys))  # one order everywhere: no deadlock
        for key in ordered:
            self._holders[key] = self._holders.get(key, 0) + 1
            self._locks.setdefault(key, asyncio.Lock())
        try:
            async with AsyncExitStack() as held:
                for key in ordered:
                    await held.enter_async_context(self._locks[key])
                yield
        finally:
            for key in ordered:
                self._holders[key] -= 1
                if not self._holders[key]:
                    del self._holders[key], self._locks[key]

    def _id(self, hook: str, delivery_id: str) -> str:
        return stable_id(self.namespace, DELIVERY_KIND, hook, delivery_id)

    def _signature_id(self, signature: str) -> str:
        return stable_id(self.namespace, "WebhookSignature", signature)

    async def find(self, hook: str, delivery_id: str) -> PastDelivery | None:
        (record,) = await self.store.get_nodes(self.namespace, [self._id(hook, delivery_id)])
        if record is None:
            return None
        properties = record.properties
        return PastDelivery(
            properties["outcome"], properties.get("flow_run_id"), properties.get("reason"), properties.get("attempts", 1)
        )

    async def recent(self, *, limit: int = 50, offset: int = 0) -> list[RecordedDelivery]:
        """One page of the deliveries of every hook, the most recently changed first (the store's order of
        ``list_nodes``); ``limit`` and ``offset`` are checked by the store."""
        records = await self.store.list_nodes(self.namespace, kind=DELIVERY_KIND, limit=limit, offset=offset)
        return [_recorded(record) for record in records]

    async def first_signed(self, signature: str) -> tuple[str, str] | None:
        """The hook and delivery id a signature was first received with, or None."""
        (record,) = await self.store.get_nodes(self.namespace, [self._signature_id(signature)])
        return None if record is None else (record.properties["hook"], record.properties["delivery_id"])

    async def remember(
        self,
        hook: str,
        delivery_id: str,
        *,
        event: str | None,
        outcome: Outcome,
        deployment: str,
        attempts: int,
        signature: str | None,
        reason: str | None = None,
        flow_run_id: str | None = None,
    ) -> None:
        now = time.time()
        properties: dict[str, Any] = {
            "hook": hook,
            "delivery_id": delivery_id,
            "event": event,
            "outcome": outcome,
            "deployment": deployment,
            "attempts": attempts,
            "reason": reason,
            "flow_run_id": flow_run_id,
            "received_at": now,
            "expires_at": now + self.retention_s,
        }
        text = f"{hook} {event or ''} {outcome} {reason or ''}".strip()
        record = NodeRecord(
            id=self._id(hook, delivery_id), namespace=self.namespace, kind=DELIVERY_KIND, text=text, properties=properties
        )
        records = [record]
        if signature is not None:  # first received: later copies and replays find it
            first = {"hook": hook, "delivery_id": delivery_id, "received_at": now, "expires_at": now + self.retention_s}
            records.append(
                NodeRecord(
                    id=self._signature_id(signature),
                    namespace=self.namespace,
                    kind="WebhookSignature",
                    text=f"{hook} {delivery_id}",
                    properties=first,
                )
            )
        await self.store.upsert_nodes(records)
