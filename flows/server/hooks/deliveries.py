"""Deliveries remembered in the store, with their outcome, so a redelivery never starts a second run.

One ``WebhookDelivery`` record per (hook, delivery id), in the hooks namespace, expiring after the
retention (``maintain_memory`` removes it then).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Literal

from mnemoflow.memory.names import REGISTRY
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import NodeRecord, stable_id

__all__ = ["DeliveryLog", "Outcome", "PastDelivery"]

REGISTRY.register_kind("WebhookDelivery", description="A webhook delivery received by `mnemoflow serve`, and its outcome.")

Outcome = Literal["triggered", "ignored", "rejected", "unavailable"]
"""triggered: a run was created; ignored: filtered out by events/when; rejected: the payload or parameters
were refused; unavailable: Prefect could not take the run (a redelivery retries)."""

FINAL_OUTCOMES: frozenset[str] = frozenset({"triggered", "ignored"})
"""Outcomes a redelivery repeats instead of processing again."""


@dataclass(frozen=True)
class PastDelivery:
    outcome: str
    flow_run_id: str | None
    reason: str | None
    attempts: int


class DeliveryLog:
    """The deliveries of every hook, in one namespace of the store."""

    def __init__(self, store: GraphStore, *, namespace: str, retention_days: float) -> None:
        self.store = store
        self.namespace = namespace
        self.retention_s = retention_days * 86_400
        self._locks = [asyncio.Lock() for _ in range(64)]

    def lock(self, hook: str, delivery_id: str) -> asyncio.Lock:
        """Held while a delivery is handled, so two copies arriving together start one run (in this process;
        Prefect's idempotency key covers several)."""
        return self._locks[hash((hook, delivery_id)) % len(self._locks)]

    def _id(self, hook: str, delivery_id: str) -> str:
        return stable_id(self.namespace, "WebhookDelivery", hook, delivery_id)

    async def find(self, hook: str, delivery_id: str) -> PastDelivery | None:
        (record,) = await self.store.get_nodes(self.namespace, [self._id(hook, delivery_id)])
        if record is None:
            return None
        properties = record.properties
        return PastDelivery(properties["outcome"], properties.get("flow_run_id"), properties.get("reason"), properties.get("attempts", 1))

    async def remember(
        self,
        hook: str,
        delivery_id: str,
        *,
        event: str | None,
        outcome: Outcome,
        deployment: str,
        attempts: int,
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
        record = NodeRecord(id=self._id(hook, delivery_id), namespace=self.namespace, kind="WebhookDelivery", text=text, properties=properties)
        await self.store.upsert_nodes([record])
