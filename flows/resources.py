"""A flow run's settings: the worker's environment with the run's overrides, and the nodes its graphs use."""

from __future__ import annotations

from typing import Literal

from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging import get_run_logger

from mnemoflow.logging import HostLogger, configure_logging, route_logs_to
from mnemoflow.nodes import import_node_modules, load_builtin_nodes
from mnemoflow.settings import Settings

__all__ = ["Backend", "flow_settings", "prefect_run_logger"]

Backend = Literal["sqlite", "neo4j"]


def prefect_run_logger() -> HostLogger | None:
    """The logger of the task or flow run under way (its lines go to the run's logs on the server), or None."""
    if TaskRunContext.get() is None and FlowRunContext.get() is None:
        return None
    return get_run_logger()


def flow_settings(*, store: Backend | None = None, namespace: str | None = None) -> Settings:
    """Settings from the worker's environment, with a flow run's overrides of backend and namespace; the built-in
    nodes and the modules of ``MNEMOFLOW_NODE_MODULES`` are registered, so graphs can use the nodes, and mnemoflow's
    log lines written during a flow or task run go to that run's logs."""
    settings = Settings.load(store=store, namespace=namespace)
    load_builtin_nodes()
    import_node_modules(settings.node_module_names)
    configure_logging(settings.log, stdlib=False)  # Prefect's handlers ship the run's logs to its API
    route_logs_to(prefect_run_logger)
    return settings
