"""Declarative graphs: the file format, loading and checking, compilation to LangGraph, rendering, runs."""

from mnemoflow.graphs.compiler import build_state_graph, compile_graph
from mnemoflow.graphs.loader import LIBRARY, LoadedGraph, Problem, find_graph, library_graphs
from mnemoflow.graphs.render import to_mermaid
from mnemoflow.graphs.runner import GraphRunner, RunResult, run_graph
from mnemoflow.graphs.spec import GraphSpec
from mnemoflow.graphs.validate import load_graph

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
]
