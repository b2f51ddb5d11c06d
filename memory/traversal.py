"""Breadth-first neighbourhoods, shared by every backend: a backend supplies one hop, this walks them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from memory.records import NodeRecord, RelationshipRecord, Subgraph

__all__ = ["ExpandHop", "breadth_first"]

ExpandHop = Callable[[list[str]], Awaitable[list[tuple[RelationshipRecord, NodeRecord]]]]
"""One hop: for frontier node ids, each allowed relationship touching them with the node at its other end."""


async def breadth_first(start: NodeRecord, depth: int, expand: ExpandHop) -> Subgraph:
    """Collect nodes within ``depth`` hops of ``start`` and the relationships followed to reach them."""
    distances = {start.id: 0}
    nodes = {start.id: start}
    relationships: dict[str, RelationshipRecord] = {}
    frontier = [start.id]
    for hop in range(1, depth + 1):
        if not frontier:
            break
        next_frontier: list[str] = []
        for relationship, neighbour in await expand(frontier):
            relationships[relationship.id] = relationship
            if neighbour.id not in distances:
                distances[neighbour.id] = hop
                nodes[neighbour.id] = neighbour
                next_frontier.append(neighbour.id)
        frontier = sorted(next_frontier)
    ordered = sorted(nodes.values(), key=lambda node: (distances[node.id], node.id))
    return Subgraph(
        nodes=ordered,
        relationships=sorted(relationships.values(), key=lambda relationship: relationship.id),
        distances=distances,
    )
