"""The nodes that ship with mnemoflow, registered when asked for rather than when ``mnemoflow.nodes`` is imported.

Each module below registers, as it is imported, its nodes, routers and state models (and, through the modules it
imports, its record kinds and the offline model's answers). :func:`load_builtin_nodes` imports them all;
``load_graph`` calls it for the default registry, so a library graph always finds its nodes. A new mechanism adds
the modules that define its nodes here.
"""

from __future__ import annotations

import importlib

__all__ = ["BUILTIN_NODE_MODULES", "load_builtin_nodes"]

BUILTIN_NODE_MODULES: tuple[str, ...] = (
    "mnemoflow.nodes.text",
    "mnemoflow.nodes.team.agents",
    "mnemoflow.nodes.comorag.ingest",
    "mnemoflow.nodes.comorag.qa",
    "mnemoflow.nodes.tme.turn",
    "mnemoflow.nodes.gmemory.retrieve",
    "mnemoflow.nodes.gmemory.evolve",
    "mnemoflow.nodes.gmemory.learn",
    "mnemoflow.nodes.gmemory.revise",
    "mnemoflow.nodes.gmemory.merge",
    "mnemoflow.nodes.experepair.reproduce",
    "mnemoflow.nodes.experepair.localize",
    "mnemoflow.nodes.experepair.patch",
    "mnemoflow.nodes.experepair.validate",
    "mnemoflow.nodes.experepair.learn",
    "mnemoflow.nodes.l2mac.control",
)


def load_builtin_nodes() -> None:
    """Register every built-in node, router, state model, record kind and offline answer; later calls cost nothing."""
    for module in BUILTIN_NODE_MODULES:
        importlib.import_module(module)
