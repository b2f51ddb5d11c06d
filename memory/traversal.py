"""Breadth-first neighbourhoods, shared by every backend: a backend supplies one hop, this walks them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from mnemoflow.memory.batches import check_depth, check_direction
from mnemoflow.memory.names import validate_namespace
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import Direction, NodeRecord, RelationshipRecord, Subgraph

__all__ = ["ExpandHop", "Hop", "breadth_first", "neighbourhood"]

ExpandHop = Callable[[list[str]], Awaitable[list[tuple[RelationshipRecord, NodeRecord]]]]
"""One hop: for frontier node ids, each allowed relationship touching them with the node at its other end."""

Hop = Callable[[str, list[str], list[str] | None, str, bool], Awaitable[list[tuple[RelationshipRecord, NodeRecord]]]]
"""A backend's hop: (namespace, frontier ids, relationship types or None for all, direction, with embeddings)."""


async def neighbourhood(
    store: GraphStore,
    hop: Hop,
    namespace: str,
    node_id: str,
    *,
    depth: int,
    relationship_types: Sequence[str] | None,
    direction: Direction,
    include_embeddings: bool = True,
) -> Subgraph:
    """``GraphStore.neighbourhood`` for any backend that can take one hop."""
    validate_namespace(namespace)
    check_depth(depth)
    check_direction(direction)
    types = None if relationship_types is None else store.registry.relationship_types(relationship_types)
    [start] = await store.get_nodes(namespace, [node_id])
    if start is None:
        return Subgraph(nodes=[], relationships=[], distances={})

    async def expand(frontier: list[str]) -> list[tuple[RelationshipRecord, NodeRecord]]:
        return await hop(namespace, frontier, types, direction, include_embeddings)

    return await breadth_first(start, depth, expand)


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
