"""Reading G-Memory records' links: for many records at once, the records at the other end of one relationship type,
in one direction, with one ``neighbours_of`` query (a traversal is a query, not a loop over ids).

Retrieval reads a bounded scan (:func:`scan_linked`: at most :data:`MAX_SCAN` links per record, a warning when
more were left), so one busy query never stalls a task. Evolution reads every link (:func:`linked`), because
scores and merges must see all of an insight's credits and supporters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from mnemoflow.memory.batches import MAX_LINKS
from mnemoflow.memory.paging import all_neighbours
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import NodeRecord
from mnemoflow.nodes.context import RunContext

__all__ = ["MAX_SCAN", "linked", "scan_linked"]

MAX_SCAN = MAX_LINKS - 1
"""At most this many links of one record are read (one more is asked for, to warn when more were left)."""


async def scan_linked(
    context: RunContext,
    node_ids: Sequence[str],
    relationship: str,
    direction: Literal["out", "in", "both"],
    kind: str,
    limit: int | None = None,
) -> dict[str, list[NodeRecord]]:
    """For each of the records, the records of ``kind`` at the other end of its ``relationship`` links in
    ``direction``, in the store's link order: at most ``limit`` each, and never more than ``MAX_SCAN``.

    One query for all of them; a record that does not exist maps to ``[]``; a self-loop is left out.
    """
    ids = list(dict.fromkeys(node_ids))
    if not ids:
        return {}
    cap = MAX_SCAN if limit is None else min(limit, MAX_SCAN)
    found = await context.store.neighbours_of(
        context.namespace, ids, relationship_types=[relationship], direction=direction, kinds=[kind], limit=cap + 1
    )
    others: dict[str, list[NodeRecord]] = {}
    for node_id in ids:
        links = found.get(node_id, [])
        if len(links) > cap and cap == MAX_SCAN:
            context.log.warning("gmemory.links_truncated", node=node_id, relationship=relationship, read=MAX_SCAN)
        others[node_id] = [link.node for link in links[:cap] if link.node.id != node_id]
    return others


async def linked(
    store: GraphStore, namespace: str, node_ids: Sequence[str], type: str, direction: Literal["out", "in"]
) -> dict[str, list[NodeRecord]]:
    """For each of the records, every record at the other end of its ``type`` links in ``direction``, once each.

    One query for all of them; a record with more than ``MAX_LINKS`` such links (none in practice) is read again
    alone, page by page, so the answer stays complete. A record that does not exist maps to ``[]``.
    """
    ids = list(dict.fromkeys(node_ids))
    if not ids:
        return {}
    found = await store.neighbours_of(namespace, ids, relationship_types=[type], direction=direction, limit=MAX_LINKS)
    ends: dict[str, list[NodeRecord]] = {}
    for node_id in ids:
        others = [link.node for link in found.get(node_id, [])]
        if len(others) == MAX_LINKS:
            relationships, nodes = await all_neighbours(store, namespace, node_id)
            others = [
                nodes[r.target_id if direction == "out" else r.source_id]
                for r in relationships
                if r.type == type
                and (r.source_id if direction == "out" else r.target_id) == node_id
                and (r.target_id if direction == "out" else r.source_id) in nodes
            ]
        ends[node_id] = list({other.id: other for other in others}.values())
    return ends
