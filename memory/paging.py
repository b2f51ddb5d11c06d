"""Reading all of something through the store's pages: every node of a kind, every relationship of a node.

For the mechanisms' housekeeping (revising insights, scoring demonstrations); a page is never larger than
``PAGE``, so memory grows with what is read, not with a single query's result.
"""

from __future__ import annotations

from collections.abc import Mapping

from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import JsonScalar, NodeRecord, RelationshipRecord

__all__ = ["PAGE", "all_neighbours", "all_nodes"]

PAGE = 1000


async def all_nodes(
    store: GraphStore, namespace: str, kind: str, *, where: Mapping[str, JsonScalar] | None = None
) -> list[NodeRecord]:
    """Every node of ``kind`` in the namespace (those whose properties equal ``where``'s, when given: see
    :meth:`GraphStore.list_nodes`), newest first, without embeddings."""
    found: list[NodeRecord] = []
    while True:
        page = await store.list_nodes(namespace, kind=kind, where=where, limit=PAGE, offset=len(found))
        found += page
        if len(page) < PAGE:
            return found


async def all_neighbours(store: GraphStore, namespace: str, node_id: str) -> tuple[list[RelationshipRecord], dict[str, NodeRecord]]:
    """Every relationship touching the node, and the nodes at their other ends by id."""
    relationships: list[RelationshipRecord] = []
    nodes: dict[str, NodeRecord] = {}
    while True:
        page = await store.neighbours(namespace, node_id, limit=PAGE, offset=len(relationships))
        relationships += page.relationships
        nodes.update((node.id, node) for node in page.nodes)
        if not page.relationships or len(relationships) >= page.total:
            return relationships, nodes
