"""A run's parts, opened from the settings in one place: store, embedder, model gateway, checkpointer, logger.

The CLI, the Prefect flows and the server all start this way, so a setting means the same thing everywhere::

    async with open_run_parts(Settings.load()) as parts, GraphRunner.from_parts(load_graph("comorag-qa"), parts) as runner:
        result = await runner.run({"question": "...", "book_id": "..."}, namespace=parts.settings.namespace)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver

from mnemoflow.llm import LLM, RequestSlot, llm_from_settings
from mnemoflow.llm.backends import Backend
from mnemoflow.logging import get_logger
from mnemoflow.memory.checkpoints import open_checkpointer
from mnemoflow.memory.embeddings import embedder_from_settings
from mnemoflow.memory.factory import store_from_settings
from mnemoflow.memory.protocol import Embedder, GraphStore
from mnemoflow.settings import Settings

__all__ = ["RunParts", "open_run_parts"]


@dataclass(frozen=True)
class RunParts:
    """What runs share in one process: opened by :func:`open_run_parts`, closed when it exits."""

    settings: Settings
    store: GraphStore
    """Set up (schema created or migrated) before it is handed out."""
    embedder: Embedder
    llm: LLM
    """The gateway the settings describe (the offline model when no endpoint is set)."""
    checkpointer: BaseCheckpointSaver[Any] | None
    """On the store's backend; None when opened with ``checkpointer=False``."""
    log: Any
    """A structlog logger bound to the namespace."""


@asynccontextmanager
async def open_run_parts(
    settings: Settings,
    *,
    checkpointer: bool = True,
    request_slot: RequestSlot | None = None,
    wrap_backend: Callable[[Backend], Backend] | None = None,
) -> AsyncIterator[RunParts]:
    """Open the store (and set up its schema), the embedder, the model gateway and, unless ``checkpointer`` is
    false, the checkpointer; close them all on exit, whatever happened. ``request_slot`` is held around every model
    request (the Prefect flows' shared budget); ``wrap_backend`` wraps the model's transport (the evaluation's meter)."""
    embedder = embedder_from_settings(settings)
    store = store_from_settings(settings, embedder)
    llm = llm_from_settings(settings, request_slot=request_slot, wrap_backend=wrap_backend)
    log = get_logger("mnemoflow").bind(namespace=settings.namespace)
    try:
        await store.setup()
        log.debug("parts.open", store=settings.store.backend, model=llm.model, checkpointer=checkpointer)
        if not checkpointer:
            yield RunParts(settings, store, embedder, llm, None, log)
            return
        async with open_checkpointer(settings) as saver:
            yield RunParts(settings, store, embedder, llm, saver, log)
    finally:
        await llm.aclose()
        await store.close()
