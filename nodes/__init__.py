"""Nodes: the steps graphs are made of, their registry and the run context they receive.

Importing this package registers nothing: :func:`load_builtin_nodes` registers the mechanisms' nodes (the graph
loader calls it), :func:`import_node_modules` a project's own.
"""

from mnemoflow.nodes.builtins import BUILTIN_NODE_MODULES, load_builtin_nodes
from mnemoflow.nodes.context import RunContext, Trace, TraceEvent
from mnemoflow.nodes.registry import (
    REGISTRY,
    NoConfig,
    NodeDefinition,
    PreconditionDefinition,
    Registry,
    RouterDefinition,
    import_node_modules,
    node,
    precondition,
    router,
    state_model,
)

__all__ = [
    "BUILTIN_NODE_MODULES",
    "REGISTRY",
    "NoConfig",
    "NodeDefinition",
    "PreconditionDefinition",
    "Registry",
    "RouterDefinition",
    "RunContext",
    "Trace",
    "TraceEvent",
    "import_node_modules",
    "load_builtin_nodes",
    "node",
    "precondition",
    "router",
    "state_model",
]
