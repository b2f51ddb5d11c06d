"""A question's workspace in the store: Question, Cycle, Probe and MemoryUnit records and their links.

Every record has a stable id (question id + cycle + probe + layer, see :mod:`mnemoflow.nodes.comorag.model`), so a
retried or resumed step rewrites the same records instead of adding new ones.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mnemoflow.errors import LLMOutputError
from mnemoflow.memory.records import NodeRecord, RelationshipRecord
from mnemoflow.nodes.comorag.agents import CueReply, cue_messages
from mnemoflow.nodes.comorag.model import CYCLE, MEMORY_UNIT, PROBE, QUESTION, cycle_id, memory_unit_id, probe_id
from mnemoflow.nodes.comorag.state import EvidenceItem, Unit
from mnemoflow.nodes.context import RunContext

__all__ = ["cycle_records", "encode", "question_record", "set_in_pool", "store_fusion"]


def question_record(
    namespace: str,
    question_id: str,
    *,
    book_id: str,
    question: str,
    options: dict[str, str],
    status: str,
    final_answer: str,
    cycles: int,
) -> NodeRecord:
    """The Question record: the question asked of a book, its status and final answer after ``cycles`` cycles."""
    properties = {"book_id": book_id, "question": question, "options": options}
    return NodeRecord(
        id=question_id,
        namespace=namespace,
        kind=QUESTION,
        text=question,
        properties={**properties, "status": status, "final_answer": final_answer, "cycles": cycles},
    )


def cycle_records(
    namespace: str, question: str, index: int, properties: dict[str, Any]
) -> tuple[NodeRecord, list[RelationshipRecord]]:
    """Cycle ``index`` of a question, its HAS_CYCLE link and the NEXT link from the cycle before."""
    node = NodeRecord(id=cycle_id(question, index), namespace=namespace, kind=CYCLE, properties={"index": index, **properties})
    links = [RelationshipRecord(namespace=namespace, type="HAS_CYCLE", source_id=question, target_id=node.id)]
    if index:
        links.append(
            RelationshipRecord(namespace=namespace, type="NEXT", source_id=cycle_id(question, index - 1), target_id=node.id)
        )
    return node, links


async def _cue(context: RunContext, question: str, probe: str, items: list[EvidenceItem]) -> str:
    """The comprehension agent's cue; "" when the layer has no evidence or the reply never validated
    (an error is never stored as a cue)."""
    if not items:
        return ""
    try:
        reply = await context.llm.structured(cue_messages(question, probe, [item.text for item in items]), CueReply)
    except LLMOutputError as exc:
        context.log.warning("comorag.cue_unreadable", probe=probe, error=str(exc))
        return ""
    return reply.cue()


async def _embedded_cue(context: RunContext, question: str, probe: str, items: list[EvidenceItem]) -> tuple[str, list[float]]:
    """A layer's cue and the vector of its unit (``probe cue``), embedded as soon as the cue is written: the other
    layers' cue calls queue at a server that answers one at a time, so the embedding leaves the model's critical
    path. No cue, no vector."""
    cue = await _cue(context, question, probe, items)
    if not cue:
        return "", []
    [vector] = await context.embedder.embed([f"{probe} {cue}"])
    return cue, vector


async def encode(
    context: RunContext, *, question_id: str, question: str, probe: str, cycle: int, evidence: dict[str, list[EvidenceItem]]
) -> list[Unit]:
    """Mem-Encode: one cue per layer with evidence (calls in parallel), stored as memory units of ``cycle``.

    Writes the cycle, the probe (ISSUED by the cycle), the units (YIELDED by the probe) and their EVIDENCE.
    """
    layers = list(evidence)
    namespace = context.namespace
    cycle_node, links = cycle_records(namespace, question_id, cycle, {"prediction": "", "failed": False})
    cued, [answered] = await asyncio.gather(
        asyncio.gather(*(_embedded_cue(context, question, probe, evidence[layer]) for layer in layers)),
        context.store.get_nodes(namespace, [cycle_node.id]),  # read while the model writes the cues
    )
    units: list[Unit] = []
    vectors: list[list[float]] = []
    for layer, (cue, vector) in zip(layers, cued, strict=True):
        if cue:
            unit_id = memory_unit_id(question_id, cycle, probe, layer)
            evidence_ids = [item.id for item in evidence[layer]]
            units.append(Unit(id=unit_id, layer=layer, probe=probe, cycle=cycle, cue=cue, evidence=evidence_ids))
            vectors.append(vector)
    if answered is not None:  # the cycle was answered before it was encoded (encode_first off): keep what it answered
        cycle_node = cycle_node.model_copy(update={"properties": {**cycle_node.properties, **answered.properties}})
    probe_node = NodeRecord(
        id=probe_id(question_id, cycle, probe), namespace=namespace, kind=PROBE, text=probe, properties={"text": probe}
    )
    records = [cycle_node, probe_node] + [
        NodeRecord(
            id=unit.id,
            namespace=namespace,
            kind=MEMORY_UNIT,
            text=unit.cue,
            embedding=vector,
            properties={"layer": unit.layer, "probe": unit.probe, "cycle": cycle, "in_pool": False, "question_id": question_id},
        )
        for unit, vector in zip(units, vectors, strict=True)
    ]
    links.append(RelationshipRecord(namespace=namespace, type="ISSUED", source_id=cycle_node.id, target_id=probe_node.id))
    for unit in units:
        links.append(RelationshipRecord(namespace=namespace, type="YIELDED", source_id=probe_node.id, target_id=unit.id))
        links += [
            RelationshipRecord(
                namespace=namespace, type="EVIDENCE", source_id=unit.id, target_id=target, properties={"rank": rank}
            )
            for rank, target in enumerate(unit.evidence)
        ]
    await context.store.upsert_nodes(records)
    await context.store.upsert_relationships(links)
    return units


async def set_in_pool(context: RunContext, ids: list[str]) -> None:
    """Mark memory units as pool members (Mem-Update)."""
    records = [record for record in await context.store.get_nodes(context.namespace, ids) if record is not None]
    await context.store.upsert_nodes(
        [record.model_copy(update={"properties": {**record.properties, "in_pool": True}}) for record in records]
    )


async def store_fusion(context: RunContext, *, question_id: str, unit: Unit, fused_from: list[str]) -> None:
    """Store a fusion unit (embedded from its narrative) and its FUSED_FROM links to the pool units it merged."""
    [embedding] = await context.embedder.embed([unit.cue])
    namespace = context.namespace
    await context.store.upsert_nodes(
        [
            NodeRecord(
                id=unit.id,
                namespace=namespace,
                kind=MEMORY_UNIT,
                text=unit.cue,
                embedding=embedding,
                properties={
                    "layer": unit.layer,
                    "probe": unit.probe,
                    "cycle": unit.cycle,
                    "in_pool": False,
                    "question_id": question_id,
                },
            )
        ]
    )
    await context.store.upsert_relationships(
        [RelationshipRecord(namespace=namespace, type="FUSED_FROM", source_id=unit.id, target_id=target) for target in fused_from]
    )
