"""The shared model budget: Prefect global concurrency and rate limits held around each model request.

Every worker's flows acquire the same named limits on the Prefect server, so the cap holds across
processes and machines. A limit that is configured but missing on the server is an error, not a silent
pass: an uncapped fleet is what the setting exists to prevent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError, concurrency, rate_limit

from mnemoflow.errors import ConfigError
from mnemoflow.llm import RequestSlot
from mnemoflow.redaction import redact_urls
from mnemoflow.settings import PrefectSettings

__all__ = ["model_slot"]


def model_slot(settings: PrefectSettings) -> RequestSlot | None:
    """What the LLM gateway enters around each request, or None when no shared budget is configured."""
    limit, rate, timeout = settings.model_limit, settings.model_rate_limit, settings.slot_timeout
    if limit is None and rate is None:
        return None

    @asynccontextmanager
    async def slot() -> AsyncIterator[None]:
        async with AsyncExitStack() as held:
            try:
                if rate is not None:
                    await rate_limit(rate, timeout_seconds=timeout, strict=True)
                if limit is not None:
                    await held.enter_async_context(concurrency(limit, timeout_seconds=timeout, strict=True))
            except ConcurrencySlotAcquisitionError as exc:
                raise ConfigError(
                    f"the Prefect server is missing a model limit: {redact_urls(str(exc))} "
                    f"(MNEMOFLOW_PREFECT_MODEL_LIMIT={limit}, MNEMOFLOW_PREFECT_MODEL_RATE_LIMIT={rate}); "
                    "create it with `prefect gcl create NAME --limit N`"
                    " (and --slot-decay-per-second R for a rate limit)"
                ) from exc
            yield

    return slot
