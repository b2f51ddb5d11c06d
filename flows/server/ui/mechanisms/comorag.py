"""The ComoRAG views: a namespace's indexed books, a book with the questions asked of it, and a question's workspace.

What ComoRAG stores is :mod:`mnemoflow.nodes.comorag.model`'s contract. A question's workspace hangs from its
``Question`` record: ``HAS_CYCLE`` to each ``Cycle`` (one answer attempt: its prediction and whether it failed),
``ISSUED`` to the probes whose units that attempt reads, ``YIELDED`` to the memory units (one per layer with
evidence: the cue), ``EVIDENCE {rank}`` to the chunks and summaries each unit read. All of that is one
``neighbourhood`` read (four hops, out, those four types). A fusion unit hangs from nothing (it only points
``FUSED_FROM`` the pool units it merged), but its id is known: one per cycle from 1, from the question's id, cycle
and text; the fusions are one ``get_nodes``, their sources one short ``neighbourhood`` each. Everything goes through
the store API, so both backends serve the views.

A book's index is shown by what its ``Book`` record holds (the generation it points to, chunks and the episodic
window, hence the number of windows) and the namespace's count of each index kind (one ``count_nodes_by_kind``): the
store counts kinds per namespace, not per book, and a namespace usually holds one book (while an ingest of it is
under way, or after one was interrupted, the counts include the records of the index it was writing).

Pages: ``/mechanisms/comorag`` (books, optionally of one ``namespace``), ``/mechanisms/comorag/book?namespace=&book=``
and ``/mechanisms/comorag/question?namespace=&id=``. APIs, the same data as JSON: ``/api/mechanisms/comorag/books``,
``/api/mechanisms/comorag/book`` and ``/api/mechanisms/comorag/question``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from mnemoflow.flows.server.state import ServerState, server_state
from mnemoflow.flows.server.ui import pages
from mnemoflow.flows.server.ui.views import UIError, record_url, store_errors
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import NodeRecord, RelationshipRecord
from mnemoflow.nodes.comorag.model import (
    BOOK,
    CHUNK,
    CYCLE,
    EPISODIC_SUMMARY,
    INDEX_KINDS,
    LAYERS,
    MEMORY_UNIT,
    PROBE,
    QUESTION,
    SEMANTIC_SUMMARY,
    book_record_id,
    generation_of,
    memory_unit_id,
    question_id,
)

__all__ = [
    "INGEST_GRAPH",
    "QA_GRAPH",
    "book_url",
    "book_view",
    "books_view",
    "question_url",
    "question_view",
    "record_links",
    "router",
    "run_links",
]

QA_GRAPH = "comorag-qa"
"""The library graph whose runs build a question's workspace."""
INGEST_GRAPH = "comorag-ingest"
"""The library graph whose runs index a book."""
MAX_BOOKS = 200
"""Books listed per namespace, most recently changed first."""
MAX_QUESTIONS = 500
"""A namespace's questions read to list a book's (most recently changed first): the store cannot filter by book."""
EVIDENCE_CHARS = 1500
"""Characters of an evidence record's text shown in the workspace; its record page has the rest."""
WORKSPACE_TYPES = ("HAS_CYCLE", "ISSUED", "YIELDED", "EVIDENCE")
"""The relationships followed from a question to its cycles, probes, units and their evidence (four hops)."""
EVIDENCE_LAYERS = {CHUNK: "veridical", SEMANTIC_SUMMARY: "semantic", EPISODIC_SUMMARY: "episodic"}
"""The layer each kind of evidence record belongs to."""

router = APIRouter(include_in_schema=False)
State = Annotated[ServerState, Depends(server_state)]
Namespace = Annotated[str, Query(min_length=1, max_length=200, description="The namespace the run wrote to.")]
BookId = Annotated[str, Query(min_length=1, max_length=200, description="The book's id, as ingested.")]
QuestionId = Annotated[str, Query(min_length=1, max_length=512, description="The Question record's id.")]


def question_url(namespace: str, question: str) -> str:
    """The workspace page of the question with record id ``question``."""
    return "/mechanisms/comorag/question?" + urlencode({"namespace": namespace, "id": question})


def book_url(namespace: str, book_id: str) -> str:
    """The page of one indexed book."""
    return "/mechanisms/comorag/book?" + urlencode({"namespace": namespace, "book": book_id})


def _plain(values: object, name: str) -> str | None:
    """``values[name]`` when it is a non-empty string (a previewed long string is a marker dict: not usable as a key)."""
    value = values.get(name) if isinstance(values, dict) else None
    return value if isinstance(value, str) and value else None


def run_links(run: dict[str, Any]) -> list[dict[str, str]]:
    """A ``comorag-qa`` run links to its question's workspace (its ``question_id`` output, else the id its input and
    thread give) and to the book; a ``comorag-ingest`` run to the book it indexed."""
    namespace, graph = run.get("namespace"), run.get("graph")
    if not namespace or graph not in (QA_GRAPH, INGEST_GRAPH):
        return []
    namespace = str(namespace)
    values, outputs = run.get("input"), run.get("outputs")
    book = _plain(outputs, "book_id") or _plain(values, "book_id")
    links = []
    if graph == QA_GRAPH:
        question = _plain(outputs, "question_id")
        text, thread = _plain(values, "question"), run.get("thread_id")
        if question is None and text and book and thread:
            question = question_id(namespace, book, text, str(thread))
        if question:
            links.append(
                {
                    "label": "ComoRAG question workspace: attempts, probes, evidence and fusions",
                    "url": question_url(namespace, question),
                }
            )
    if book:
        links.append({"label": f"ComoRAG book {book}: its index and questions", "url": book_url(namespace, book)})
    return links


def record_links(node: dict[str, Any]) -> list[dict[str, str]]:
    """The views a record's page links to (``node`` as :func:`~mnemoflow.flows.server.ui.views.node_json` gives it):
    a question or one of its memory units to the workspace, a book or a record of its index to the book."""
    namespace, kind, properties = node.get("namespace"), node.get("kind"), node.get("properties")
    p = properties if isinstance(properties, dict) else {}
    if not namespace:
        return []
    links = []
    question = node.get("id") if kind == QUESTION else _plain(p, "question_id") if kind == MEMORY_UNIT else None
    if isinstance(question, str) and question:
        links.append({"label": "ComoRAG question workspace", "url": question_url(str(namespace), question)})
    book = _plain(p, "book_id")
    if book and kind in (BOOK, QUESTION, *INDEX_KINDS):
        links.append({"label": f"ComoRAG book {book}", "url": book_url(str(namespace), book)})
    return links


# -- books -------------------------------------------------------------------------------------------------


def _timestamp(record: NodeRecord) -> float | None:
    return record.updated_at.timestamp() if record.updated_at else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _book_json(record: NodeRecord) -> dict[str, Any]:
    """A Book record: its id, title, the generation of its current index (``""`` for a book indexed before
    generations), chunks, episodic window and the number of windows (a timeline entry each)."""
    p = record.properties
    book_id = str(p.get("book_id") or record.text or "")
    chunks, window = _int(p.get("chunks")), _int(p.get("window"))
    return {
        "namespace": record.namespace,
        "book_id": book_id,
        "id": record.id,
        "title": str(p.get("title") or record.text or book_id),
        "generation": generation_of(record),
        "chunks": chunks,
        "window": window,
        "episodes": math.ceil(chunks / window) if chunks is not None and window else None,
        "updated_at": _timestamp(record),
        "url": book_url(record.namespace, book_id),
        "record_url": record_url(record.namespace, record.id),
    }


def _question_brief(record: NodeRecord) -> dict[str, Any]:
    p = record.properties
    return {
        "id": record.id,
        "question": str(p.get("question") or record.text or ""),
        "book_id": str(p.get("book_id") or ""),
        "status": str(p.get("status") or "open"),
        "final_answer": str(p.get("final_answer") or ""),
        "cycles": _int(p.get("cycles")) or 0,
        "updated_at": _timestamp(record),
        "url": question_url(record.namespace, record.id),
    }


async def _questions(store: GraphStore, namespace: str) -> list[NodeRecord]:
    with store_errors():
        return await store.list_nodes(namespace, kind=QUESTION, limit=MAX_QUESTIONS)


async def books_view(store: GraphStore, namespace: str | None) -> list[dict[str, Any]]:
    """The indexed books of a namespace (or of every namespace), most recently changed first within each, at most
    ``MAX_BOOKS`` per namespace: ``[{"namespace", "book_id", "id", "title", "generation", "chunks", "window", "episodes",
    "questions", "updated_at", "url", "record_url"}]`` (``questions``: how many of the namespace's ``MAX_QUESTIONS``
    most recent questions ask it)."""
    with store_errors():
        names = [namespace] if namespace else [summary.name for summary in await store.namespaces()]
        found: list[dict[str, Any]] = []
        for name in names:
            books = await store.list_nodes(name, kind=BOOK, limit=MAX_BOOKS)
            if not books:
                continue
            asked: defaultdict[str, int] = defaultdict(int)
            for question in await _questions(store, name):
                asked[str(question.properties.get("book_id") or "")] += 1
            for record in books:
                book = _book_json(record)
                book["questions"] = asked[book["book_id"]]
                found.append(book)
    return found


async def book_view(store: GraphStore, namespace: str, book_id: str) -> dict[str, Any]:
    """A book: its Book record (as in :func:`books_view`), ``index`` (the namespace's count of each index kind, by
    kind; ``index_scope`` says it is the namespace's) and ``questions`` asked of it, most recently changed first
    (``[{"id", "question", "book_id", "status", "final_answer", "cycles", "updated_at", "url"}]``, from the
    namespace's ``MAX_QUESTIONS`` most recent); 404 when the namespace has no such book."""
    with store_errors():
        [record] = await store.get_nodes(namespace, [book_record_id(namespace, book_id)])
        if record is None or record.kind != BOOK:
            raise UIError(404, f"no ComoRAG book {book_id!r} in namespace {namespace!r}")
        counts = await store.count_nodes_by_kind(namespace)
    book = _book_json(record)
    questions = [_question_brief(q) for q in await _questions(store, namespace) if q.properties.get("book_id") == book_id]
    book.update(
        index={kind: counts.get(kind, 0) for kind in INDEX_KINDS},
        index_scope="namespace",
        books_in_namespace=counts.get(BOOK, 0),
        questions=questions,
    )
    return book


# -- a question's workspace ----------------------------------------------------------------------------------


def _evidence_json(record: NodeRecord, rank: object) -> dict[str, Any]:
    """A chunk or summary a unit read: its layer, rank, where it sits in the book and its text (shortened)."""
    p = record.properties
    text = record.text or ""
    if record.kind == CHUNK:
        where = f"chunk {p.get('order')}"
    elif record.kind == SEMANTIC_SUMMARY:
        where = f"summary, level {p.get('level')}"
    elif record.kind == EPISODIC_SUMMARY:
        where = f"timeline, chunks {p.get('first_order')} to {p.get('last_order')}"
    else:
        where = record.kind
    return {
        "id": record.id,
        "kind": record.kind,
        "layer": EVIDENCE_LAYERS.get(record.kind, record.kind),
        "rank": _int(rank),
        "where": where,
        "text": text[:EVIDENCE_CHARS],
        "chars": len(text),
        "url": record_url(record.namespace, record.id),
    }


def _unit_json(record: NodeRecord) -> dict[str, Any]:
    p = record.properties
    return {
        "id": record.id,
        "layer": str(p.get("layer") or ""),
        "probe": str(p.get("probe") or ""),
        "cycle": _int(p.get("cycle")),
        "cue": record.text or "",
        "in_pool": bool(p.get("in_pool")),
        "url": record_url(record.namespace, record.id),
    }


def _layer_order(unit: dict[str, Any]) -> tuple[int, str]:
    layer = unit["layer"]
    return (LAYERS.index(layer) if layer in LAYERS else len(LAYERS), layer)


class _Workspace:
    """The records of a question's workspace subgraph, by id, with each one's outgoing relationships by type."""

    def __init__(self, nodes: list[NodeRecord], relationships: list[RelationshipRecord]) -> None:
        self.nodes = {node.id: node for node in nodes}
        self.out: dict[tuple[str, str], list[RelationshipRecord]] = defaultdict(list)
        for relationship in relationships:
            self.out[(relationship.source_id, relationship.type)].append(relationship)

    def targets(self, source: str, type_: str, kind: str) -> list[tuple[RelationshipRecord, NodeRecord]]:
        """The records of ``kind`` that ``source`` points to through ``type_``, with the relationship."""
        found = []
        for relationship in self.out.get((source, type_), []):
            node = self.nodes.get(relationship.target_id)
            if node is not None and node.kind == kind:
                found.append((relationship, node))
        return found

    def unit(self, record: NodeRecord) -> dict[str, Any]:
        """A memory unit with the evidence it read, by rank."""
        unit = _unit_json(record)
        evidence = [
            _evidence_json(node, relationship.properties.get("rank"))
            for relationship in self.out.get((record.id, "EVIDENCE"), [])
            if (node := self.nodes.get(relationship.target_id)) is not None
        ]
        unit["evidence"] = sorted(evidence, key=lambda item: (item["rank"] is None, item["rank"] or 0, item["id"]))
        return unit


def _attempt_status(prediction: str, failed: bool, *, settled: bool) -> str:
    """``answered``, ``impasse`` (the attempt gave ``*`` or nothing), or ``pending`` (its probes are encoded, the
    attempt has not run yet). An attempt without a prediction is settled, so an impasse, when another attempt came
    after it or the question is closed: with ``encode_first`` off, the question's evidence is encoded after the first
    impasse, and that rewrites cycle 0's record without its prediction."""
    if failed or (settled and not prediction):
        return "impasse"
    return "answered" if prediction else "pending"


async def _fusions(store: GraphStore, namespace: str, question: str, text: str, cycles: list[int]) -> dict[int, dict[str, Any]]:
    """The fusion unit of each cycle that has one, by cycle, with the ids of the pool units it merged."""
    wanted = [index for index in cycles if index > 0]
    with store_errors():
        records = await store.get_nodes(namespace, [memory_unit_id(question, index, text, "fusion") for index in wanted])
        fusions: dict[int, dict[str, Any]] = {}
        for index, record in zip(wanted, records, strict=True):
            if record is None or record.kind != MEMORY_UNIT:
                continue
            sources = await store.neighbourhood(
                namespace, record.id, relationship_types=["FUSED_FROM"], direction="out", include_embeddings=False
            )
            fusion = _unit_json(record)
            fusion["fused_from"] = sorted(r.target_id for r in sources.relationships if r.source_id == record.id)
            fusions[index] = fusion
    return fusions


async def question_view(store: GraphStore, namespace: str, question: str) -> dict[str, Any]:
    """A question's workspace: the question, then each attempt (cycle) in order with its probes, the units each
    probe yielded with their evidence, the fusion the attempt read, and the attempt's answer and status.

    ``{"namespace", "id", "question", "book_id", "book_url", "options", "status", "final_answer", "cycles",
    "created_at", "updated_at", "record_url", "attempts": [{"index", "id", "prediction", "failed", "status",
    "probes": [{"id", "text", "is_question", "units": [unit + "evidence": [{"id", "kind", "layer", "rank", "where",
    "text", "chars", "url"}]]}], "fusion": unit + "fused_from": [ids] | None, "url"}], "units": {id: unit}}``
    where a unit is ``{"id", "layer", "probe", "cycle", "cue", "in_pool", "url"}`` (``units``: every unit of the
    workspace by id, so a fusion's sources can be named). 404 when there is no such question.
    """
    with store_errors():
        workspace = await store.neighbourhood(
            namespace,
            question,
            depth=len(WORKSPACE_TYPES),
            relationship_types=WORKSPACE_TYPES,
            direction="out",
            include_embeddings=False,
        )
    record = workspace.nodes[0] if workspace.nodes else None
    if record is None or record.kind != QUESTION:
        raise UIError(404, f"no ComoRAG question {question!r} in namespace {namespace!r}")
    p = record.properties
    text = str(p.get("question") or record.text or "")
    graph = _Workspace(workspace.nodes, workspace.relationships)
    cycles = sorted(graph.targets(record.id, "HAS_CYCLE", CYCLE), key=lambda pair: _int(pair[1].properties.get("index")) or 0)
    indexes = [_int(cycle.properties.get("index")) or 0 for _, cycle in cycles]
    fusions = await _fusions(store, namespace, record.id, text, indexes)
    attempts = []
    status = str(p.get("status") or "open")
    for position, (index, (_, cycle)) in enumerate(zip(indexes, cycles, strict=True), start=1):
        prediction, failed = str(cycle.properties.get("prediction") or ""), bool(cycle.properties.get("failed"))
        settled = position < len(cycles) or status != "open"
        probes = []
        for _, probe in graph.targets(cycle.id, "ISSUED", PROBE):
            probe_text = str(probe.properties.get("text") or probe.text or "")
            units = sorted((graph.unit(unit) for _, unit in graph.targets(probe.id, "YIELDED", MEMORY_UNIT)), key=_layer_order)
            probes.append({"id": probe.id, "text": probe_text, "is_question": probe_text == text, "units": units})
        probes.sort(key=lambda probe: (not probe["is_question"], probe["text"]))
        attempts.append(
            {
                "index": index,
                "id": cycle.id,
                "prediction": prediction,
                "failed": failed,
                "status": _attempt_status(prediction, failed, settled=settled),
                "probes": probes,
                "fusion": fusions.get(index),
                "url": record_url(namespace, cycle.id),
            }
        )
    options = p.get("options")
    book = str(p.get("book_id") or "")
    return {
        "namespace": namespace,
        "id": record.id,
        "question": text,
        "book_id": book,
        "book_url": book_url(namespace, book) if book else None,
        "options": {str(k): str(v) for k, v in options.items()} if isinstance(options, dict) else {},
        "status": status,
        "final_answer": str(p.get("final_answer") or ""),
        "cycles": _int(p.get("cycles")) or 0,
        "created_at": record.created_at.timestamp() if record.created_at else None,
        "updated_at": _timestamp(record),
        "record_url": record_url(namespace, record.id),
        "attempts": attempts,
        "units": {node.id: _unit_json(node) for node in graph.nodes.values() if node.kind == MEMORY_UNIT},
    }


# -- pages -------------------------------------------------------------------------------------------------


@router.get("/mechanisms/comorag")
async def books_page(
    request: Request, state: State, namespace: Annotated[str | None, Query(max_length=200)] = None
) -> HTMLResponse:
    books = await books_view(state.store, namespace or None)
    return pages.render(
        request, "mechanisms/comorag_books.html", section="memory", title="ComoRAG books", books=books, namespace=namespace
    )


@router.get("/mechanisms/comorag/book")
async def book_page(request: Request, state: State, namespace: Namespace, book: BookId) -> HTMLResponse:
    shown = await book_view(state.store, namespace, book)
    return pages.render(
        request, "mechanisms/comorag_book.html", section="memory", title=f"ComoRAG book {shown['title']}", book=shown
    )


@router.get("/mechanisms/comorag/question")
async def question_page(request: Request, state: State, namespace: Namespace, id: QuestionId) -> HTMLResponse:
    workspace = await question_view(state.store, namespace, id)
    return pages.render(request, "mechanisms/comorag.html", section="memory", title="ComoRAG question", workspace=workspace)


# -- APIs --------------------------------------------------------------------------------------------------


@router.get("/api/mechanisms/comorag/books")
async def books_api(
    state: State, namespace: Annotated[str | None, Query(min_length=1, max_length=200)] = None
) -> list[dict[str, Any]]:
    """The indexed books of a namespace (or of all)."""
    return await books_view(state.store, namespace)


@router.get("/api/mechanisms/comorag/book")
async def book_api(state: State, namespace: Namespace, book: BookId) -> dict[str, Any]:
    """A book: its index sizes and the questions asked of it."""
    return await book_view(state.store, namespace, book)


@router.get("/api/mechanisms/comorag/question")
async def question_api(state: State, namespace: Namespace, id: QuestionId) -> dict[str, Any]:
    """A question's workspace: attempts, probes, units with their evidence, fusions and answers."""
    return await question_view(state.store, namespace, id)
