"""The placeholder main job: ingest a small bundled text into the store and search it both ways."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from memory.protocol import Embedder, GraphStore
from memory.records import NodeRecord, RelationshipRecord, ScoredNode, stable_id

__all__ = ["DemoResult", "bundled_text", "ingest_text", "run_demo"]


@dataclass(frozen=True)
class DemoResult:
    """What the demo wrote and found."""

    document_id: str
    chunks_written: int
    keyword_hits: list[ScoredNode]
    vector_hits: list[ScoredNode]


def bundled_text() -> tuple[str, str]:
    """The demo's title and text."""
    text = resources.files("memory").joinpath("data/lighthouse.txt").read_text(encoding="utf-8")
    title, _, body = text.partition("\n\n")
    return title.strip(), body


async def ingest_text(store: GraphStore, embedder: Embedder, namespace: str, title: str, text: str) -> tuple[str, int]:
    """Store a text as a Document and one embedded Chunk per paragraph, linked in reading order.

    Ids derive from the namespace, the title and the paragraph's position, so ingesting twice changes nothing.
    """
    paragraphs = [paragraph.strip() for paragraph in text.split("\n\n") if paragraph.strip()]
    document_id = stable_id(namespace, "Document", title)
    chunk_ids = [stable_id(namespace, "Chunk", title, position) for position in range(len(paragraphs))]
    vectors = await embedder.embed(paragraphs)
    await store.upsert_nodes(
        [NodeRecord(id=document_id, namespace=namespace, kind="Document", text=title, properties={"title": title})]
        + [
            NodeRecord(
                id=chunk_id,
                namespace=namespace,
                kind="Chunk",
                text=paragraph,
                embedding=vector,
                properties={"document": document_id, "position": position},
            )
            for position, (chunk_id, paragraph, vector) in enumerate(zip(chunk_ids, paragraphs, vectors, strict=True))
        ]
    )
    await store.upsert_relationships(
        [RelationshipRecord(namespace=namespace, type="PART_OF", source_id=chunk_id, target_id=document_id) for chunk_id in chunk_ids]
        + [
            RelationshipRecord(namespace=namespace, type="NEXT", source_id=left, target_id=right)
            for left, right in zip(chunk_ids, chunk_ids[1:], strict=False)
        ]
    )
    return document_id, len(chunk_ids)


async def run_demo(store: GraphStore, embedder: Embedder, namespace: str, query: str, *, k: int = 3) -> DemoResult:
    """Ingest the bundled text, then run a keyword and a vector search for ``query``."""
    title, text = bundled_text()
    document_id, written = await ingest_text(store, embedder, namespace, title, text)
    [query_vector] = await embedder.embed([query])
    return DemoResult(
        document_id=document_id,
        chunks_written=written,
        keyword_hits=await store.keyword_search(namespace, query, k=k, kinds=["Chunk"]),
        vector_hits=await store.vector_search(namespace, query_vector, kind="Chunk", k=k),
    )
