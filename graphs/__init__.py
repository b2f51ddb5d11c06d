"""Declarative graphs: the file format, loading and checking, compilation to LangGraph, rendering, runs.

The file format, loading, checking and rendering load with the package; the compiler and the runner (and
LangGraph) load when first used.
"""

import typing

from mnemoflow import lazy
from mnemoflow.graphs.loader import LIBRARY, LoadedGraph, Problem, find_graph, library_graphs
from mnemoflow.graphs.render import to_mermaid
from mnemoflow.graphs.spec import GraphSpec
from mnemoflow.graphs.validate import load_graph, with_node_config, with_route_config

if typing.TYPE_CHECKING:
    from mnemoflow.graphs.compiler import build_state_graph, compile_graph
    from mnemoflow.graphs.runner import GraphRunner, RunResult, run_graph

__getattr__, __dir__ = lazy.members(
    __name__,
    {
        "build_state_graph": "mnemoflow.graphs.compiler",
        "compile_graph": "mnemoflow.graphs.compiler",
        "GraphRunner": "mnemoflow.graphs.runner",
        "RunResult": "mnemoflow.graphs.runner",
        "run_graph": "mnemoflow.graphs.runner",
    },
)

__all__ = [
    "LIBRARY",
    "GraphRunner",
    "GraphSpec",
    "LoadedGraph",
    "Problem",
    "RunResult",
    "build_state_graph",
    "compile_graph",
    "find_graph",
    "library_graphs",
    "load_graph",
    "run_graph",
    "to_mermaid",
    "with_node_config",
    "with_route_config",
]
