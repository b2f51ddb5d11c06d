"""The gateway the settings describe: the endpoint :func:`~mnemoflow.llm.endpoint.resolve_endpoint` finds, its
cache and limits, or the offline stand-in when no model is configured."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from mnemoflow.llm.backends import Backend, OfflineBackend, OpenAIBackend
from mnemoflow.llm.cache import ResponseCache
from mnemoflow.llm.endpoint import resolve_endpoint
from mnemoflow.llm.gateway import LLM, RequestSlot
from mnemoflow.settings import Settings

__all__ = ["llm_from_settings", "uses_offline_model"]


def uses_offline_model(settings: Settings) -> bool:
    """Whether the settings call for the offline stand-in (see :func:`resolve_endpoint`)."""
    return resolve_endpoint(settings).kind == "offline"


def llm_from_settings(
    settings: Settings,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    request_slot: RequestSlot | None = None,
    wrap_backend: Callable[[Backend], Backend] | None = None,
) -> LLM:
    """The gateway to the model :func:`resolve_endpoint` finds; ``wrap_backend`` wraps the transport (a meter of
    every request, say)."""
    config, endpoint = settings.llm, resolve_endpoint(settings)
    wrap = wrap_backend or (lambda backend: backend)
    if endpoint.kind == "offline":
        return LLM(wrap(OfflineBackend()), config, cache=None, sleep=sleep, request_slot=request_slot)
    cache = ResponseCache(config.cache_path) if config.cache else None
    backend = wrap(OpenAIBackend(base_url=endpoint.base_url, api_key=endpoint.api_key, timeout=config.request_timeout))
    llm = LLM(backend, config, cache=cache, sleep=sleep, request_slot=request_slot, slots=endpoint.slots, model=endpoint.model)
    if endpoint.native_tools is not None:
        llm.capabilities.native_tools = endpoint.native_tools
    return llm
