"""A flow run's settings: the worker's environment with the run's overrides, and the nodes its graphs use."""

from __future__ import annotations

from typing import Literal

from mnemoflow.logging import configure_logging
from mnemoflow.nodes import import_node_modules, load_builtin_nodes
from mnemoflow.settings import Settings

__all__ = ["Backend", "flow_settings"]

Backend = Literal["sqlite", "neo4j"]


def flow_settings(*, store: Backend | None = None, namespace: str | None = None) -> Settings:
    """Settings from the worker's environment, with a flow run's overrides of backend and namespace; the built-in
    nodes and the modules of ``MNEMOFLOW_NODE_MODULES`` are registered, so graphs can use the nodes."""
    settings = Settings.load(store=store, namespace=namespace)
    load_builtin_nodes()
    import_node_modules(settings.node_module_names)
    configure_logging(settings.log, stdlib=False)  # Prefect's handlers ship the run's logs to its API
    return settings
