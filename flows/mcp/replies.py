"""What the MCP server's tools and resources answer: typed models, so each tool lists its output schema and its
result carries ``structuredContent`` (and the same JSON as text, for clients that read only text)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from mnemoflow.memory.records import NeighbourPage, NodeRecord, ScoredNode

__all__ = [
    "HIT_TEXT_CHARS",
    "AskReply",
    "Hit",
    "IngestReply",
    "KindsReply",
    "LinkReply",
    "ReadReply",
    "RecordReply",
    "RetrieveReply",
    "SearchReply",
    "TreeReply",
    "TurnReply",
    "hit_of",
    "read_reply",
    "record_of",
]

HIT_TEXT_CHARS = 500
"""Characters of a record's text a search hit shows (``memory_read`` gives all of it)."""

JsonScalar = str | int | float | bool | None


class IngestReply(BaseModel):
    book_id: str
    run_id: str = Field(description="The run's id: its record (trace, timing, model usage) is in the UI's runs.")
    outputs: dict[str, Any] = Field(description="The comorag-ingest graph's outputs.")


class AskReply(BaseModel):
    answer: str
    run_id: str = Field(description="The run's id: its record (trace, timing, model usage) is in the UI's runs.")
    outputs: dict[str, Any] = Field(description="The comorag-qa graph's outputs (final_answer, status, cycle...).")


class TurnReply(BaseModel):
    reply: str = Field(description="The assistant's answer, from the task memory's active path.")
    not_applied: list[str] = Field(description="Changes the turn asked for that could not be applied, and why.")
    stale: list[str] = Field(description="Steps marked stale because something they depend on was revised.")
    tree: str = Field(description="The session's task forest after the turn, as `mnemoflow chat` prints it.")


class TreeReply(BaseModel):
    session: str
    turns: int = Field(description="Turns saved in the session so far (0 for a new session).")
    tree: str = Field(description="The session's task forest, as `mnemoflow chat` prints it.")


class RetrieveReply(BaseModel):
    run_id: str = Field(description="The run's id: its record (trace, timing, model usage) is in the UI's runs.")
    outputs: dict[str, Any] = Field(description="The gmemory-retrieve graph's outputs: insights, per role too.")


class Hit(BaseModel):
    id: str
    kind: str
    score: float = Field(description="Keyword relevance (BM25), higher is better.")
    text: str = Field(description=f"The record's text, its first {HIT_TEXT_CHARS} characters.")
    properties: dict[str, JsonScalar] = Field(description="The record's top-level scalar properties.")


class SearchReply(BaseModel):
    hits: list[Hit] = Field(description="Best first.")


class RecordReply(BaseModel):
    id: str
    kind: str
    text: str
    properties: dict[str, Any]
    created_at: datetime | None
    updated_at: datetime | None


class LinkReply(BaseModel):
    type: str
    direction: Literal["out", "in"] = Field(description="out: from this record to the other; in: the other way.")
    other_id: str
    other_kind: str


class ReadReply(BaseModel):
    record: RecordReply
    links: list[LinkReply] = Field(description="Relationships touching the record, by type and other record's id.")
    more_links: bool = Field(description="Whether the record has more relationships than the links listed.")


class KindsReply(BaseModel):
    namespace: str
    kinds: dict[str, int] = Field(description="Records per kind; kinds without records are absent.")


def record_of(node: NodeRecord) -> RecordReply:
    return RecordReply(
        id=node.id,
        kind=node.kind,
        text=node.text or "",
        properties=node.properties,
        created_at=node.created_at,
        updated_at=node.updated_at,
    )


def hit_of(scored: ScoredNode) -> Hit:
    node = scored.node
    scalars = {key: value for key, value in node.properties.items() if isinstance(value, JsonScalar)}
    return Hit(id=node.id, kind=node.kind, score=scored.score, text=(node.text or "")[:HIT_TEXT_CHARS], properties=scalars)


def read_reply(page: NeighbourPage) -> ReadReply:
    """A record and the first page of its links; ``page.node`` must exist."""
    assert page.node is not None
    kinds = {node.id: node.kind for node in [page.node, *page.nodes]}
    links = []
    for relationship in page.relationships:
        outgoing = relationship.source_id == page.node.id
        other = relationship.target_id if outgoing else relationship.source_id
        links.append(LinkReply(type=relationship.type, direction="out" if outgoing else "in", other_id=other, other_kind=kinds[other]))
    return ReadReply(record=record_of(page.node), links=links, more_links=page.total > page.offset + len(links))
