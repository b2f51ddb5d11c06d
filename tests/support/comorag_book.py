"""A tiny ComoRAG index written straight into a store, following :mod:`mnemoflow.nodes.comorag.model` (for QA tests).

It is written as a store from before index generations holds it (no ``generation`` on the Book or the records, ids
without one), so every QA test that uses it also proves that such a store still answers.
"""

from __future__ import annotations

from typing import Any

from mnemoflow.memory.protocol import Embedder, GraphStore
from mnemoflow.memory.records import NodeRecord, RelationshipRecord, stable_id
from mnemoflow.nodes.comorag.model import book_record_id, chunk_id, entity_id
from tests.support.openai_server import Rule, ScriptedOpenAIServer

BOOK = "salt-road"
CHUNKS = [
    "Hedda Vale married Anselm Roe, the ferryman of Carrow's Rest, in the spring of the third year.",
    "From that spring Corvin Ashe was the guardian of Tobin Orsk and his sister Nima.",
    "In the winter of the fourth year the Grey Wind buried the eastern salt pans under sand.",
    "Tobin sold his father's notebook with the Needle path to Jessamy Pell to pay the debt on Cistern Lane.",
    "Jessamy Pell led her caravans along the Needle path and never came back.",
]
FACTS = [
    ("Hedda Vale", "married", "Anselm Roe", 0),
    ("Anselm Roe", "ferryman of", "Carrow's Rest", 0),
    ("Corvin Ashe", "guardian of", "Tobin Orsk", 1),
    ("Grey Wind", "buried", "salt pans", 2),
    ("Tobin Orsk", "sold notebook to", "Jessamy Pell", 3),
    ("Jessamy Pell", "led caravans along", "Needle path", 4),
]
MENTIONS = {
    0: ["Hedda Vale", "Anselm Roe", "Carrow's Rest"],
    1: ["Corvin Ashe", "Tobin Orsk"],
    2: ["Grey Wind", "salt pans"],
    3: ["Tobin Orsk", "Jessamy Pell", "Needle path"],
    4: ["Jessamy Pell", "Needle path"],
}
SEMANTIC = [
    ("Family: Hedda Vale weds the ferryman Anselm Roe, and Corvin Ashe becomes guardian of the Orsk children.", [0, 1]),
    ("Trade: the salt pans are lost to the Grey Wind and the Needle path notebook is sold to Jessamy Pell.", [2, 3, 4]),
]
EPISODIC = [
    ("Third year: Hedda marries Anselm Roe; Corvin Ashe takes over as guardian of Tobin and Nima.", 0, 1),
    ("Fourth year: the Grey Wind buries the salt pans; Tobin sells the notebook; Jessamy Pell leaves.", 2, 4),
]


async def build_book(store: GraphStore, embedder: Embedder, namespace: str, book_id: str = BOOK) -> dict[str, str]:
    """Write the index; returns the ids of the chunks and summaries by their text."""
    names = sorted({name for names in MENTIONS.values() for name in names})
    facts = [f"{s} {p} {o}" for s, p, o, _ in FACTS]
    texts = CHUNKS + names + facts + [text for text, _ in SEMANTIC] + [text for text, _, _ in EPISODIC]
    vectors = iter(await embedder.embed(texts))
    book = book_record_id(namespace, book_id)
    nodes = [
        NodeRecord(
            id=book,
            namespace=namespace,
            kind="Book",
            text="The Salt Road",
            properties={"book_id": book_id, "title": "The Salt Road", "chunks": len(CHUNKS), "window": 3},
        )
    ]
    links: list[RelationshipRecord] = []
    ids: dict[str, str] = {}

    def link(kind: str, source: str, target: str, **properties: object) -> None:
        links.append(
            RelationshipRecord(namespace=namespace, type=kind, source_id=source, target_id=target, properties=properties)
        )

    for order, text in enumerate(CHUNKS):
        ids[text] = chunk_id(namespace, book_id, order)
        nodes.append(
            NodeRecord(
                id=ids[text],
                namespace=namespace,
                kind="Chunk",
                text=text,
                embedding=next(vectors),
                properties={"book_id": book_id, "order": order, "tokens": len(text.split())},
            )
        )
        link("PART_OF", ids[text], book)
        if order:
            link("NEXT", chunk_id(namespace, book_id, order - 1), ids[text])
    for name in names:
        count = sum(name in mentioned for mentioned in MENTIONS.values())
        nodes.append(
            NodeRecord(
                id=entity_id(namespace, book_id, name),
                namespace=namespace,
                kind="Entity",
                text=name,
                embedding=next(vectors),
                properties={"book_id": book_id, "name": name, "num_chunks": count},
            )
        )
    for order, mentioned in MENTIONS.items():
        for name in mentioned:
            link("MENTIONS", chunk_id(namespace, book_id, order), entity_id(namespace, book_id, name))
    for (subject, predicate, object_, order), text in zip(FACTS, facts, strict=True):
        fact = stable_id(namespace, "Fact", book_id, text)
        nodes.append(
            NodeRecord(
                id=fact,
                namespace=namespace,
                kind="Fact",
                text=text,
                embedding=next(vectors),
                properties={"book_id": book_id, "subject": subject, "predicate": predicate, "object": object_},
            )
        )
        link("SUBJECT", fact, entity_id(namespace, book_id, subject))
        link("OBJECT", fact, entity_id(namespace, book_id, object_))
        link("EXTRACTED_FROM", fact, chunk_id(namespace, book_id, order))
    for text, members in SEMANTIC:
        ids[text] = stable_id(namespace, "SemanticSummary", book_id, text)
        nodes.append(
            NodeRecord(
                id=ids[text],
                namespace=namespace,
                kind="SemanticSummary",
                text=text,
                embedding=next(vectors),
                properties={"book_id": book_id, "level": 1},
            )
        )
        for order in members:
            link("SUMMARIZES", ids[text], chunk_id(namespace, book_id, order), membership=1.0)
    previous = None
    for index, (text, first, last) in enumerate(EPISODIC):
        ids[text] = stable_id(namespace, "EpisodicSummary", book_id, first, last)
        nodes.append(
            NodeRecord(
                id=ids[text],
                namespace=namespace,
                kind="EpisodicSummary",
                text=text,
                embedding=next(vectors),
                properties={"book_id": book_id, "window_index": index, "first_order": first, "last_order": last},
            )
        )
        for order in range(first, last + 1):
            link("COVERS", ids[text], chunk_id(namespace, book_id, order))
        if previous:
            link("NEXT", previous, ids[text])
        previous = ids[text]
    await store.upsert_nodes(nodes)
    await store.upsert_relationships(links)
    return ids


def answer(text: str) -> dict[str, str]:
    """A reply of the answer agent."""
    return {"analysis": "### Content Understanding\n...\n### Key Facts\n...", "final_answer": text}


def script(server: ScriptedOpenAIServer, answers: list[Any], probes: list[Any] | None = None) -> None:
    """Rules for every ComoRAG QA agent: the answer agent replies ``answers`` in turn, the regulation agent ``probes``."""
    server.script(Rule(system="recognition memory", json={"keep": [1, 2]}))
    server.script(Rule(system="narrative analyst", json={"findings": ["Key finding about the guardian of Tobin Orsk."]}))
    server.script(Rule(system="regulation agent", replies=probes or [{"probes": []}]))
    server.script(Rule(system="integration agent", json={"narrative": "Fused narrative: Corvin Ashe became guardian."}))
    server.script(Rule(system="careful reader", replies=answers))
