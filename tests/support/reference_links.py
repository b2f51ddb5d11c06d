"""A slow, obviously right ``GraphStore.neighbours_of``: one node at a time, through ``neighbours`` pages, filtered
in Python. The backends answer in one query; tests compare them with this."""

from __future__ import annotations

from collections.abc import Sequence

from mnemoflow.memory.batches import check_direction, check_ids, check_links_limit
from mnemoflow.memory.names import validate_namespace
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import Direction, Link


async def links_by_pages(
    store: GraphStore,
    namespace: str,
    node_ids: Sequence[str],
    *,
    relationship_types: Sequence[str] | None,
    direction: Direction,
    kinds: Sequence[str] | None,
    limit: int,
) -> dict[str, list[Link]]:
    """``GraphStore.neighbours_of`` through ``neighbours`` pages, one node at a time."""
    validate_namespace(namespace)
    check_direction(direction)
    check_links_limit(limit)
    ids = check_ids(node_ids)
    types = None if relationship_types is None else set(store.registry.relationship_types(relationship_types))
    kind_names = None if kinds is None else {store.registry.kind(kind).name for kind in kinds}
    found: dict[str, list[Link]] = {}
    for node_id in dict.fromkeys(ids):
        links: list[Link] = []
        offset, total = 0, 1
        while offset < total and len(links) < limit:
            page = await store.neighbours(namespace, node_id, limit=1000, offset=offset)
            if page.node is None:
                break
            found[node_id] = links
            total, offset = page.total, offset + 1000
            others = {other.id: other for other in page.nodes}
            for relationship in page.relationships:
                outgoing, incoming = relationship.source_id == node_id, relationship.target_id == node_id
                if (types is not None and relationship.type not in types) or (direction == "out" and not outgoing) or (
                    direction == "in" and not incoming
                ):
                    continue
                other = others.get(relationship.target_id if outgoing else relationship.source_id, page.node)
                if kind_names is None or other.kind in kind_names:
                    links.append(Link(relationship=relationship, node=other))
        if node_id in found:
            found[node_id] = links[:limit]
    return found
