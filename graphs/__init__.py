"""Declarative graphs: the file format, loading and checking, compilation to LangGraph, rendering, runs."""

from graphs.compiler import build_state_graph, compile_graph
from graphs.loader import LIBRARY, LoadedGraph, Problem, find_graph, library_graphs
from graphs.render import to_mermaid
from graphs.runner import GraphRunner, RunResult, run_graph
from graphs.spec import GraphSpec
from graphs.validate import load_graph

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
