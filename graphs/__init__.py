"""Declarative graphs: the file format, loading and checking, compilation to LangGraph, rendering, runs, and
threads (their checkpoints, resuming and forking).

The file format, loading, checking and rendering load with the package; the compiler, the runner and threads
(and LangGraph) load when first used.
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
    from mnemoflow.graphs.threads import CheckpointView, ForkOrigin, edit_problems, fork_thread, thread_checkpoints

__getattr__, __dir__ = lazy.members(
    __name__,
    {
        "build_state_graph": "mnemoflow.graphs.compiler",
        "compile_graph": "mnemoflow.graphs.compiler",
        "GraphRunner": "mnemoflow.graphs.runner",
        "RunResult": "mnemoflow.graphs.runner",
        "run_graph": "mnemoflow.graphs.runner",
        "CheckpointView": "mnemoflow.graphs.threads",
        "ForkOrigin": "mnemoflow.graphs.threads",
        "edit_problems": "mnemoflow.graphs.threads",
        "fork_thread": "mnemoflow.graphs.threads",
        "thread_checkpoints": "mnemoflow.graphs.threads",
    },
)

__all__ = [
    "LIBRARY",
    "CheckpointView",
    "ForkOrigin",
    "GraphRunner",
    "GraphSpec",
    "LoadedGraph",
    "Problem",
    "RunResult",
    "build_state_graph",
    "compile_graph",
    "edit_problems",
    "find_graph",
    "fork_thread",
    "library_graphs",
    "load_graph",
    "run_graph",
    "thread_checkpoints",
    "to_mermaid",
    "with_node_config",
    "with_route_config",
]
