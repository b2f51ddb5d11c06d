"""Open what a flow's graph run needs, from settings: store, embedder, model gateway and checkpointer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

from langgraph.checkpoint.base import BaseCheckpointSaver

from mnemoflow.flows.budget import model_slot
from mnemoflow.llm import LLM, llm_from_settings
from mnemoflow.logging import configure_logging
from mnemoflow.memory import embedder_from_settings, store_from_settings
from mnemoflow.memory.checkpoints import open_checkpointer
from mnemoflow.memory.protocol import Embedder, GraphStore
from mnemoflow.nodes import import_node_modules
from mnemoflow.settings import Settings, StoreSettings

__all__ = ["Backend", "RunParts", "flow_settings", "open_run_parts"]

Backend = Literal["sqlite", "neo4j"]


@dataclass(frozen=True)
class RunParts:
    settings: Settings
    store: GraphStore
    embedder: Embedder
    llm: LLM
    checkpointer: BaseCheckpointSaver[Any]


def flow_settings(*, store: Backend | None = None, namespace: str | None = None) -> Settings:
    """Settings from the worker's environment, with a flow run's overrides of backend and namespace; the
    modules of ``MNEMOFLOW_NODE_MODULES`` are imported, so graphs can use the nodes they register."""
    settings = Settings()
    if store is not None:
        settings = settings.model_copy(update={"store": StoreSettings(backend=store)})
    if namespace is not None:
        settings = settings.model_copy(update={"namespace": namespace})
    import_node_modules(settings.node_module_names)
    configure_logging(settings.log, stdlib=False)  # Prefect's handlers ship the run's logs to its API
    return settings


@asynccontextmanager
async def open_run_parts(settings: Settings) -> AsyncIterator[RunParts]:
    """Everything set up, closed on exit; the gateway holds the shared model budget when one is configured."""
    embedder = embedder_from_settings(settings)
    store = store_from_settings(settings, embedder)
    llm = llm_from_settings(settings, request_slot=model_slot(settings.prefect))
    try:
        await store.setup()
        async with open_checkpointer(settings) as checkpointer:
            yield RunParts(settings, store, embedder, llm, checkpointer)
    finally:
        await llm.aclose()
        await store.close()
