"""Reading a G-Memory record's links: the records at the other end of one relationship type, in one direction.

Retrieval reads a bounded scan (:func:`scan_linked`: pages of ``neighbours``, at most :data:`MAX_SCAN`
relationships, a warning when more were left), so one busy query never stalls a task. Evolution reads every link
(:func:`linked`), because scores and merges must see all of an insight's credits and supporters.
"""

from __future__ import annotations

from typing import Literal

from mnemoflow.memory.paging import all_neighbours
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import NodeRecord, RelationshipRecord
from mnemoflow.nodes.context import RunContext

__all__ = ["MAX_SCAN", "PAGE", "linked", "scan_linked"]

PAGE = 200
"""Relationships read per ``neighbours`` page."""
MAX_SCAN = 10_000
"""At most this many relationships of one node are read (a warning says when more were left)."""


async def scan_linked(
    context: RunContext,
    node_id: str,
    relationship: str,
    direction: Literal["out", "in", "both"],
    kind: str,
    limit: int | None = None,
) -> list[tuple[RelationshipRecord, NodeRecord]]:
    """The node's ``relationship`` links in ``direction`` to nodes of ``kind``, read in pages: at most ``limit``
    matches, and at most ``MAX_SCAN`` relationships read."""
    found: list[tuple[RelationshipRecord, NodeRecord]] = []
    offset, total = 0, 1
    while offset < min(total, MAX_SCAN) and (limit is None or len(found) < limit):
        page = await context.store.neighbours(context.namespace, node_id, limit=PAGE, offset=offset)
        total, offset = page.total, offset + PAGE
        others = {other.id: other for other in page.nodes}
        for link in page.relationships:
            if link.type != relationship:
                continue
            outgoing = link.source_id == node_id
            if (direction == "out" and not outgoing) or (direction == "in" and link.target_id != node_id):
                continue
            other = others.get(link.target_id if outgoing else link.source_id)
            if other is not None and other.kind == kind and other.id != node_id:
                found.append((link, other))
    if total > MAX_SCAN:
        context.log.warning("gmemory.links_truncated", node=node_id, relationships=total, read=MAX_SCAN)
    return found if limit is None else found[:limit]


async def linked(
    store: GraphStore, namespace: str, node_id: str, type: str, direction: Literal["out", "in"]
) -> list[NodeRecord]:
    """Every record at the other end of the node's ``type`` links in ``direction``, once each, in link order."""
    relationships, nodes = await all_neighbours(store, namespace, node_id)
    ends = [
        r.target_id if direction == "out" else r.source_id
        for r in relationships
        if r.type == type and (r.source_id if direction == "out" else r.target_id) == node_id
    ]
    return [nodes[end] for end in dict.fromkeys(ends) if end in nodes]
