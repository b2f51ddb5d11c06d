"""Nodes: the steps graphs are made of, their registry and the run context they receive.

Importing this package registers the built-in node packages.
"""

from mnemoflow.nodes import comorag as _comorag  # noqa: E402,F401  (registers the comorag.* nodes)
from mnemoflow.nodes import experepair as _experepair  # noqa: E402,F401  (registers the experepair.* nodes)
from mnemoflow.nodes import gmemory as _gmemory  # noqa: E402,F401  (registers the gmemory.* nodes)
from mnemoflow.nodes import l2mac as _l2mac  # noqa: E402,F401  (registers the l2mac.* nodes)
from mnemoflow.nodes import team as _team  # noqa: E402,F401  (registers the team.* nodes)
from mnemoflow.nodes import text as _text  # noqa: E402,F401  (registers the text.* nodes)
from mnemoflow.nodes import tme as _tme  # noqa: E402,F401  (registers the tme.* nodes)
from mnemoflow.nodes.context import RunContext, Trace, TraceEvent
from mnemoflow.nodes.registry import (
    REGISTRY,
    NoConfig,
    NodeDefinition,
    Registry,
    RouterDefinition,
    import_node_modules,
    node,
    router,
    state_model,
)

__all__ = [
    "REGISTRY",
    "NoConfig",
    "NodeDefinition",
    "Registry",
    "RouterDefinition",
    "RunContext",
    "Trace",
    "TraceEvent",
    "import_node_modules",
    "node",
    "router",
    "state_model",
]
