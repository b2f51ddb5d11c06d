"""ComoRAG question answering: probing cycles over a book's index until the impasse clears (``comorag.*``).

Graph (``graphs/library/comorag-qa.yaml``): tri_retrieve_init -> mem_encode_init -> try_answer; after an attempt,
``comorag.after_attempt`` ends the run when it answered or when the last cycle is spent (no wasted round), else
commit_pool -> self_probe -> (``comorag.has_probes``) dispatch_probes -> probe_worker per probe (fan-out) ->
mem_fuse -> assemble_context -> try_answer. With no new probes the library graph finalizes (unresolved): the
next attempt would see the same evidence. (The reference code fuses and tries again; map ``none`` to the
fuse node for that.)

Differences from the reference code, on purpose: evidence already in the pool is not retrieved again; probe
JSON may be fenced or loose; an error is never stored as a cue; each text is embedded once per question
(``query_vectors``); each layer and the history have token budgets, which cut a text too long for them
instead of dropping it; options of a multiple-choice question
reach the answer step only.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mnemoflow.errors import LLMOutputError, PreconditionError
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import NodeRecord
from mnemoflow.nodes.comorag.agents import (
    MAX_PROBES,
    AnswerReply,
    FusionReply,
    ProbeSet,
    answer_messages,
    fusion_messages,
    is_impasse,
    loose_probes,
    parse_final_answer,
    probe_messages,
)
from mnemoflow.nodes.comorag.model import BOOK, book_record_id, memory_unit_id, question_id
from mnemoflow.nodes.comorag.retrieval import RetrievalConfig, fit_budget, tri_retrieve
from mnemoflow.nodes.comorag.state import QAState, Unit
from mnemoflow.nodes.comorag.workspace import cycle_records, encode, question_record, set_in_pool, store_fusion
from mnemoflow.nodes.context import RunContext
from mnemoflow.nodes.registry import NoConfig, node, precondition, router

__all__ = ["AnswerConfig", "FuseConfig"]

SECTIONS = {"veridical": "### Detail Chunks", "semantic": "### Semantic Summary", "episodic": "### Timeline Summary"}


class AnswerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ver_tokens: int = Field(3600, ge=1, description="Token budget of the detail chunks / veridical cues.")
    sem_tokens: int = Field(900, ge=1, description="Token budget of the semantic section.")
    epi_tokens: int = Field(900, ge=1, description="Token budget of the timeline section.")
    history_tokens: int = Field(450, ge=1, description="Token budget of the fusion history.")


class FuseConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    share: float = Field(0.5, gt=0, le=1, description="Share of the pool (most similar to the question first) fused.")


def _clip(lines: list[str], tokens: int) -> str:
    """The lines that fit in ``tokens`` (``retrieval.fit_budget``: a first line alone over the budget is cut)."""
    return "\n".join(fit_budget(lines, tokens))


async def _vector(context: RunContext, state: QAState, text: str) -> tuple[list[float], dict[str, list[float]]]:
    """The embedding of ``text``, from the question's cache or embedded now (returned for the cache)."""
    if text in state.query_vectors:
        return state.query_vectors[text], {}
    [vector] = await context.embedder.embed([text])
    return vector, {text: vector}


@node(
    "comorag.tri_retrieve_init",
    state=QAState,
    reads={"question", "book_id", "options", "query_vectors"},
    writes={"question_id", "evidence", "query_vectors"},
    config=RetrievalConfig,
)
async def tri_retrieve_init(state: QAState, config: RetrievalConfig, context: RunContext) -> dict[str, Any]:
    """Open the question's workspace and retrieve its evidence from the three layers (options are not used)."""
    qid = question_id(context.namespace, state.book_id, state.question, context.thread_id)
    opened = question_record(
        context.namespace, qid, book_id=state.book_id, question=state.question, options=state.options,
        status="open", final_answer="", cycles=0,
    )  # fmt: skip
    await context.store.upsert_nodes([opened])
    vector, cached = await _vector(context, state, state.question)
    evidence = await tri_retrieve(
        context, book_id=state.book_id, query=state.question, vector=vector, exclude=set(), config=config
    )
    return {"question_id": qid, "evidence": evidence, "query_vectors": cached}


async def _encode_question(context: RunContext, state: QAState) -> list[Unit]:
    """The question's own evidence as memory units of cycle 0 (one cue call per layer)."""
    return await encode(
        context, question_id=state.question_id, question=state.question, probe=state.question, cycle=0, evidence=state.evidence
    )


@node(
    "comorag.mem_encode_init",
    state=QAState,
    reads={"question", "question_id", "evidence", "encode_first"},
    writes={"units"},
)
async def mem_encode_init(state: QAState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """Encode the question's evidence into up to three memory units of cycle 0, unless ``encode_first`` is off
    (the paper's order: the first attempt reads the raw evidence either way, so the cues wait for an impasse)."""
    return {"units": await _encode_question(context, state)} if state.encode_first else {}


@node(
    "comorag.try_answer",
    state=QAState,
    reads={"question", "options", "cycle", "evidence", "contexts", "history", "question_id"},
    writes={"prediction", "last_response", "last_context"},
    config=AnswerConfig,
)
async def try_answer(state: QAState, config: AnswerConfig, context: RunContext) -> dict[str, Any]:
    """Try to answer from the raw evidence (cycle 0) or this cycle's cues and the fusion history; '*' = impasse."""
    budgets = {"veridical": config.ver_tokens, "semantic": config.sem_tokens, "episodic": config.epi_tokens}
    parts = []
    for layer, title in SECTIONS.items():
        lines = (
            [item.text for item in state.evidence.get(layer, [])]
            if state.cycle == 0
            else state.contexts.get(layer, "").splitlines()
        )
        parts.append(f"{title}\n{_clip([line for line in lines if line.strip()], budgets[layer])}")
    if state.history:
        parts.append(f"### Historical Information\n{_clip(state.history.splitlines(), config.history_tokens)}")
    prompt_context = "\n\n".join(parts)
    try:
        reply = await context.llm.structured(answer_messages(state.question, prompt_context, state.options), AnswerReply)
    except LLMOutputError as exc:  # not JSON even after the re-ask: read the reference's markdown, else an impasse
        raw = exc.raw_replies[-1] if exc.raw_replies else ""
        marked = "final answer" in raw.lower()
        reply = AnswerReply(analysis=raw, final_answer=parse_final_answer(raw) if marked else "*")
    prediction = parse_final_answer(reply.final_answer)
    if not prediction and "final answer" in reply.analysis.lower():  # the answer was left in the analysis
        prediction = parse_final_answer(reply.analysis)
    failed = is_impasse(prediction)
    node_record, links = cycle_records(
        context.namespace, state.question_id, state.cycle, {"prediction": prediction, "failed": failed}
    )
    await context.store.upsert_nodes([node_record])
    await context.store.upsert_relationships(links)
    response = f"{reply.analysis}\n### Final Answer\n{reply.final_answer}"
    return {"prediction": prediction, "last_response": response, "last_context": prompt_context}


@router(
    "comorag.after_attempt",
    state=QAState,
    reads={"prediction", "cycle", "max_cycles"},
    outcomes={"answered", "out_of_cycles", "retry"},
)
def after_attempt(state: QAState, config: NoConfig) -> str:
    """'answered' when the attempt gave an answer; 'out_of_cycles' after the last allowed attempt; else 'retry'."""
    if not is_impasse(state.prediction):
        return "answered"
    return "out_of_cycles" if state.cycle >= state.max_cycles else "retry"


@node(
    "comorag.commit_pool",
    state=QAState,
    reads={"units", "cycle", "pool_unit_ids", "probe_history", "probes", "encode_first", "question", "question_id", "evidence"},
    writes={"units", "pool_unit_ids", "probe_history"},
)
async def commit_pool(state: QAState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """Mem-Update: this cycle's units join the pool; the cycle's probes join the probe history. After a first
    impasse with ``encode_first`` off, the question's evidence is encoded now, as the paper orders it."""
    encoded = await _encode_question(context, state) if state.cycle == 0 and not state.encode_first else []
    units = [*state.units, *encoded]
    current = [unit for unit in units if unit.cycle == state.cycle and unit.id not in state.pool_unit_ids]
    await set_in_pool(context, [unit.id for unit in current])
    issued = [*(unit.probe for unit in current if unit.layer != "fusion"), *state.probes]  # probes without units too
    history = list(dict.fromkeys([*state.probe_history, *issued]))
    return {
        "units": encoded,
        "pool_unit_ids": [*state.pool_unit_ids, *(unit.id for unit in current)],
        "probe_history": history,
    }


@node("comorag.self_probe", state=QAState, reads={"question", "last_context", "probe_history"}, writes={"probes"})
async def self_probe(state: QAState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """Ask the regulation agent for up to three new probes (fenced, numbered-key or loose JSON accepted)."""
    messages = probe_messages(state.question, state.last_context, state.probe_history)
    try:
        probes = (await context.llm.structured(messages, ProbeSet)).probes
    except LLMOutputError as exc:
        probes = loose_probes(exc.raw_replies[-1] if exc.raw_replies else "")
    seen = {probe.casefold() for probe in state.probe_history}
    fresh: list[str] = []
    for probe in (text.strip() for text in probes):
        if probe and probe.casefold() not in seen:
            seen.add(probe.casefold())
            fresh.append(probe)
    return {"probes": fresh[:MAX_PROBES]}


@router("comorag.has_probes", state=QAState, reads={"probes"}, outcomes={"probes", "none"})
def has_probes(state: QAState, config: NoConfig) -> str:
    """'probes' when the regulation agent asked something new, else 'none'."""
    return "probes" if state.probes else "none"


@node("comorag.dispatch_probes", state=QAState, reads={"probes"}, writes=set())
async def dispatch_probes(state: QAState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """Hand each probe to its own probe_worker (the fan-out leaves from here)."""
    return {}


@node(
    "comorag.probe_worker",
    state=QAState,
    reads={"question", "book_id", "probe", "units", "pool_unit_ids", "cycle", "query_vectors", "question_id"},
    writes={"units", "query_vectors"},
    config=RetrievalConfig,
)
async def probe_worker(state: QAState, config: RetrievalConfig, context: RunContext) -> dict[str, Any]:
    """Retrieve for one probe (skipping evidence the pool holds) and encode it into next cycle's units."""
    vector, cached = await _vector(context, state, state.probe)
    pool = set(state.pool_unit_ids)
    exclude = {evidence for unit in state.units if unit.id in pool for evidence in unit.evidence}
    evidence = await tri_retrieve(
        context, book_id=state.book_id, query=state.probe, vector=vector, exclude=exclude, config=config
    )
    units = await encode(
        context,
        question_id=state.question_id,
        question=state.question,
        probe=state.probe,
        cycle=state.cycle + 1,
        evidence=evidence,
    )
    return {"units": units, "query_vectors": cached}


@node(
    "comorag.mem_fuse",
    state=QAState,
    reads={"question", "question_id", "pool_unit_ids", "query_vectors", "cycle", "fusion_cues"},
    writes={"units", "fusion_cues", "query_vectors"},
    config=FuseConfig,
)
async def mem_fuse(state: QAState, config: FuseConfig, context: RunContext) -> dict[str, Any]:
    """Mem-Fuse: the pool units most similar to the question, merged by the integration agent into a fusion unit."""
    records = [record for record in await context.store.get_nodes(context.namespace, state.pool_unit_ids) if record is not None]
    if not records:
        return {}
    vector, cached = await _vector(context, state, state.question)

    def similarity(record: NodeRecord) -> float:
        other = record.embedding or []
        norm = math.sqrt(sum(v * v for v in vector)) * math.sqrt(sum(v * v for v in other))
        return sum(a * b for a, b in zip(vector, other, strict=False)) / norm if norm else 0.0

    chosen = sorted(records, key=lambda record: (-similarity(record), record.id))[: math.ceil(len(records) * config.share)]
    reply = await context.llm.structured(fusion_messages(state.question, [record.text or "" for record in chosen]), FusionReply)
    narrative = reply.narrative.strip()
    if not narrative:
        return {"query_vectors": cached}
    cycle = state.cycle + 1
    unit = Unit(
        id=memory_unit_id(state.question_id, cycle, state.question, "fusion"),
        layer="fusion",
        probe=state.question,
        cycle=cycle,
        cue=narrative,
    )
    await store_fusion(context, question_id=state.question_id, unit=unit, fused_from=[record.id for record in chosen])
    return {"units": [unit], "fusion_cues": [*state.fusion_cues, narrative], "query_vectors": cached}


@node("comorag.assemble_context", state=QAState, reads={"units", "cycle", "fusion_cues"}, writes={"contexts", "history", "cycle"})
async def assemble_context(state: QAState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """Next attempt's context: this cycle's cues per layer, and the fusion cues (newest first) as history."""
    cycle = state.cycle + 1
    current = [unit for unit in state.units if unit.cycle == cycle]
    contexts = {layer: "\n".join(unit.cue for unit in current if unit.layer == layer) for layer in SECTIONS}
    history = "\n".join(f"Finding: {' '.join(cue.split())}" for cue in reversed(state.fusion_cues))
    return {"contexts": contexts, "history": history, "cycle": cycle}


@node(
    "comorag.finalize",
    state=QAState,
    reads={"prediction", "cycle", "question_id", "question", "book_id", "options"},
    writes={"final_answer", "status"},
)
async def finalize(state: QAState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """Record the outcome on the question: its final answer, or '*' and status 'unresolved'."""
    answered = not is_impasse(state.prediction)
    final, status = (state.prediction, "answered") if answered else ("*", "unresolved")
    closed = question_record(
        context.namespace, state.question_id, book_id=state.book_id, question=state.question, options=state.options,
        status=status, final_answer=final, cycles=state.cycle,
    )  # fmt: skip
    await context.store.upsert_nodes([closed])
    return {"final_answer": final, "status": status}


@precondition("comorag.book_indexed", state=QAState, reads={"book_id"})
async def book_indexed(values: Mapping[str, Any], store: GraphStore, namespace: str) -> None:
    """The book is indexed in the run's namespace; else the error names the books that namespace holds and the
    namespaces that hold this book."""
    book = values["book_id"]
    if (await store.get_nodes(namespace, [book_record_id(namespace, book)]))[0] is not None:
        return
    here = sorted(str(record.properties.get("book_id", record.text)) for record in await store.list_nodes(namespace, kind=BOOK, limit=50))
    elsewhere = [
        summary.name
        for summary in await store.namespaces()
        if summary.name != namespace and (await store.get_nodes(summary.name, [book_record_id(summary.name, book)]))[0] is not None
    ]
    close = difflib.get_close_matches(book, here, n=1, cutoff=0.6)
    lines = [f"book {book!r} is not indexed in namespace {namespace!r}"]
    lines.append(f"books in {namespace!r}: {', '.join(here)}" if here else f"namespace {namespace!r} holds no book")
    if close:
        lines.append(f"did you mean {close[0]!r}?")
    if elsewhere:
        lines.append(f"{book!r} is indexed in " + ", ".join(f"namespace {name!r} (--namespace {name})" for name in elsewhere))
    lines.append(f"index it with: mnemoflow ingest comorag FILE --book {book} --namespace {namespace}")
    raise PreconditionError("\n  ".join(lines))
