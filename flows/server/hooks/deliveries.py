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

__all__ = ["DeliveryLog", "Outcome", "PastDelivery"]

REGISTRY.register_kind("WebhookDelivery", description="A webhook delivery received by `mnemoflow serve`, and its outcome.")
REGISTRY.register_kind("WebhookSignature", description="A webhook signature already received, and the delivery it signed.")

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

    @asynccontextmanager
    async def handling(self, *keys: str) -> AsyncIterator[None]:
        """Held while a delivery is handled, so two copies arriving together start one run (in this process;
        Prefect's idempotency key covers several). Keys are the delivery's id and its signature: copies and
        replays share one of them."""
        stripes = sorted({hash(key) % len(self._locks) for key in keys})  # one order everywhere: no deadlock
        async with AsyncExitStack() as held:
            for stripe in stripes:
                await held.enter_async_context(self._locks[stripe])
            yield

    def _id(self, hook: str, delivery_id: str) -> str:
        return stable_id(self.namespace, "WebhookDelivery", hook, delivery_id)

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
            id=self._id(hook, delivery_id), namespace=self.namespace, kind="WebhookDelivery", text=text, properties=properties
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
