"""Small builders shared by the conformance tests."""

from __future__ import annotations

from typing import Any

from mnemoflow.memory import NodeRecord, RelationshipRecord
from tests.conftest import EMBEDDER


def chunk(namespace: str, node_id: str, text: str | None = None, **properties: Any) -> NodeRecord:
    """An embedded ``Chunk`` whose vector is the test embedder's vector of its text."""
    body = text if text is not None else f"text of {node_id}"
    return NodeRecord(
        id=node_id,
        namespace=namespace,
        kind="Chunk",
        text=body,
        embedding=EMBEDDER.embed_one(body),
        properties=properties,
    )


def link(namespace: str, source: str, target: str, type_: str = "NEXT", **properties: Any) -> RelationshipRecord:
    return RelationshipRecord(namespace=namespace, type=type_, source_id=source, target_id=target, properties=properties)


def without_update_times(records: list[Any]) -> list[Any]:
    return [None if record is None else record.model_copy(update={"updated_at": None}) for record in records]
