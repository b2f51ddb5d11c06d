"""Mermaid text of a graph file, offline: routes with outcome labels, fan-outs and subgraphs."""

from __future__ import annotations

from collections.abc import Collection

from mnemoflow.graphs.loader import LoadedGraph
from mnemoflow.graphs.spec import END, START

__all__ = ["to_mermaid"]


def _id(name: str) -> str:
    return {START: "__start__", END: "__end__"}.get(name, f"n_{name}")


def _label(text: str) -> str:
    return text.replace('"', "#quot;")


def to_mermaid(graph: LoadedGraph, *, visited: Collection[str] = ()) -> str:
    """A ``flowchart`` of the graph: ``-->`` edges, ``-- outcome -->`` routes, ``-. each field .->`` fan-outs.

    Nodes named in ``visited`` (a run's steps; ``stats/count`` marks the subgraph node ``stats``) get the
    class ``visited``, drawn green.
    """
    spec = graph.spec
    lines = ["flowchart TD", f"    %% {spec.name} v{spec.version}", "    __start__([START])", "    __end__([END])"]
    for name, node in spec.nodes.items():
        if node.use is not None:
            lines.append(f'    {_id(name)}["{_label(name)}<br/><small>{_label(node.use)}</small>"]')
        else:
            sub = graph.subgraphs.get(name)
            target = sub.spec.name if sub else node.graph
            lines.append(f'    {_id(name)}[["{_label(name)}<br/><small>graph: {_label(str(target))}</small>"]]')
    for edge in spec.edges:
        lines.append(f"    {_id(edge.from_)} --> {_id(edge.to)}")
    for route in spec.routes:
        for outcome, target in route.outcomes.items():
            lines.append(f'    {_id(route.from_)} -- "{_label(outcome)}" --> {_id(target)}')
    for fanout in spec.fanouts:
        lines.append(f'    {_id(fanout.from_)} -. "each {_label(fanout.over)}" .-> {_id(fanout.to)}')
    marked = sorted({step.split("/", 1)[0] for step in visited} & spec.nodes.keys())
    if marked:
        lines.append("    classDef visited fill:#d1fae5,stroke:#047857,stroke-width:2px")
        lines.append("    class " + ",".join(_id(node) for node in marked) + " visited")
    return "\n".join(lines) + "\n"
