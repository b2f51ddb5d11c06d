"""G-Memory's write path after the team has acted: record the task, credit the insights it used.

record -> learn (``learn.py``) -> credit -> revise (``revise.py``) -> merge (``merge.py``), the evolution nodes of
``graphs/library/gmemory-task.yaml``:

- ``gmemory.record``: the query (embedded task, outcome, key steps, likely mistake; its number ``order``
  claimed in the store with it, kept when the task is recorded again), its interaction graph (one
  utterance per message, ``NEXT`` in order, ``REPLY_TO`` the last message the speaker received), its
  environment steps (``HAS_STEP``, ``NEXT`` in order), and ``SIMILAR`` links to earlier queries (``learn`` links
  the insights retrieval handed the team, ``INFORMED``). The write-time filter: a step with a negative reward (an
  action that changed nothing) is stored for audit with ``kept: false``, and it and the messages of its round
  (``kept: false`` too) stay out of what the memory learns from: the stored trajectory and the key-steps and
  mistake prompts.
- ``gmemory.credit``: +1 per used insight on success, -2 on failure, as ``GCredit`` records (one per (task,
  insight), so a replay counts once); scores are recomputed from the credits; an insight at <= 0 is pruned.
- ``gmemory.revise``: every ``every`` tasks (milestone ``revision-<n>``, claimed once), the model critiques
  success/failure pairs and groups of successes against the related insights and proposes ADD / EDIT / REMOVE /
  AGREE operations, validated before anything is applied.
- ``gmemory.merge``: every ``every`` tasks (milestone ``merge-<n>``), the queries are clustered and each
  cluster's insights consolidated; a merged insight keeps the highest score of those it replaces.

Writes that read and rewrite insights run one at a time per namespace in this process (a lock per namespace);
across processes the credits (stable ids), the query numbers and the milestones (claims in the store) keep the
result exact, and the cached ``score`` is recomputed from the credits whenever an insight is touched. A reply that
cannot be read changes nothing and is reported in ``evolution``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mnemoflow.errors import ConflictError
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import NodeRecord, RelationshipRecord
from mnemoflow.nodes.context import RunContext
from mnemoflow.nodes.gmemory.agents import TEMPERATURE, KeySteps, Mistake, key_steps_messages, mistake_messages, transcript
from mnemoflow.nodes.gmemory.insights import credit_record, insight_links, rescore
from mnemoflow.nodes.gmemory.model import (
    CONTRADICTED_BY,
    HAS_STEP,
    HAS_UTTERANCE,
    INSIGHT,
    NEXT,
    ORDER,
    QUERY,
    REPLY_TO,
    SIMILAR,
    STEP,
    SUPPORTED_BY,
    UTTERANCE,
    order_id,
    query_id,
    step_id,
    utterance_id,
)
from mnemoflow.nodes.gmemory.retrieve import task_vector
from mnemoflow.nodes.gmemory.state import TaskState
from mnemoflow.nodes.locks import keyed_lock
from mnemoflow.nodes.registry import node
from mnemoflow.nodes.team.agents import Message
from mnemoflow.nodes.team.environment import Step

__all__ = ["CreditConfig", "RecordConfig", "kept_trajectory"]


# -- record --------------------------------------------------------------------------------------------------


class RecordConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    similarity: float = Field(
        0.85, ge=-1.0, le=1.0, description="Cosine at or above which a new query is linked SIMILAR to an earlier one."
    )
    neighbours: int = Field(10, ge=1, le=100, description="Earlier queries probed for similarity links.")


def _reply_to(messages: Sequence[Message]) -> list[int | None]:
    """For each message, the index of the last earlier message addressed to its speaker."""
    last_received: dict[str, int] = {}
    targets: list[int | None] = []
    for index, message in enumerate(messages):
        targets.append(last_received.get(message.speaker))
        last_received[message.addressee] = index
    return targets


def _dropped_rounds(steps: Sequence[Step]) -> set[int]:
    """The rounds whose every step changed nothing (reward < 0): their messages stay out of what is learned."""
    kept = {s.round for s in steps if s.reward >= 0}
    return {s.round for s in steps if s.reward < 0} - kept


def kept_trajectory(messages: Sequence[Message], steps: Sequence[Step]) -> str:
    """What the memory learns a task from: the kept messages as transcript lines, each kept step's observation after
    the message that opened its round (the action); without steps, the plain transcript of the messages."""
    dropped = _dropped_rounds(steps)
    observed: dict[int, list[Step]] = {}
    for s in steps:
        if s.reward >= 0:
            observed.setdefault(s.round, []).append(s)
    lines: list[str] = []
    opened: set[int] = set()
    for m in messages:
        if m.round in dropped:
            continue
        lines.append(transcript([m]))
        if m.round not in opened:
            opened.add(m.round)
            lines += [f"environment -> {m.speaker}: {s.observation}" for s in observed.get(m.round, [])]
    lines += [f"environment: {s.action} -> {s.observation}" for r, kept in observed.items() if r not in opened for s in kept]
    return "\n".join(lines) or transcript([])


def _step_records(namespace: str, qid: str, steps: Sequence[Step]) -> tuple[list[NodeRecord], list[RelationshipRecord]]:
    """The task's steps as ``GStep`` records (``kept`` false for a reward < 0), ``HAS_STEP`` and ``NEXT`` in order."""
    records = [
        NodeRecord(
            id=step_id(namespace, qid, s.number),
            namespace=namespace,
            kind=STEP,
            text=s.action or None,
            properties={
                "query_id": qid,
                "number": s.number,
                "round": s.round,
                "action": s.action,
                "observation": s.observation,
                "reward": s.reward,
                "kept": s.reward >= 0,
            },
        )
        for s in steps
    ]
    links = [
        RelationshipRecord(
            namespace=namespace, type=HAS_STEP, source_id=qid, target_id=r.id, properties={"number": r.properties["number"]}
        )
        for r in records
    ]
    links += [
        RelationshipRecord(namespace=namespace, type=NEXT, source_id=a.id, target_id=b.id)
        for a, b in zip(records, records[1:], strict=False)
    ]
    return records, links


async def _write_numbered(
    store: GraphStore, namespace: str, qid: str, records: Callable[[int], list[NodeRecord]], kept: int | None
) -> int:
    """Write ``records(order)``, ``order`` being the query's number: ``kept`` when it has one, else the next free
    number, claimed in the same transaction (its ``GQueryOrder`` written as new, the loser of a race trying the next
    one), so no two queries share a number and no number is claimed without its query. Returns the number."""
    if kept is not None:
        await store.upsert_nodes(records(kept))
        return kept
    order = max(await store.count_nodes(namespace, ORDER), await store.count_nodes(namespace, QUERY)) + 1
    while True:
        claim = NodeRecord(
            id=order_id(namespace, order), namespace=namespace, kind=ORDER, text=qid, properties={"order": order, "query_id": qid}
        )
        try:
            await store.upsert_nodes([claim, *records(order)], new=[claim.id])
        except ConflictError:
            [taken] = await store.get_nodes(namespace, [claim.id])
            if taken is None:  # refused for another reason than the number
                raise
            order += 1
            continue
        return order


@node(
    "gmemory.record",
    state=TaskState,
    reads={"task", "task_key", "task_vector", "messages", "steps", "success", "feedback", "insights"},
    writes={"query_id", "key_steps", "fail_reason", "evolution"},
    config=RecordConfig,
)
async def record(state: TaskState, config: RecordConfig, context: RunContext) -> dict[str, Any]:
    """Write the finished task: its query (outcome, key steps, likely mistake), interaction graph, steps and links."""
    store, namespace = context.store, context.namespace
    qid = query_id(namespace, state.task_key or context.thread_id)
    status = "resolved" if state.success else "failed"
    outcome = f"{status}. {state.feedback}".strip()
    trajectory = kept_trajectory(state.messages, state.steps)
    dropped = _dropped_rounds(state.steps)
    steps = (
        await context.llm.structured(key_steps_messages(state.task, trajectory, outcome), KeySteps, temperature=TEMPERATURE)
    ).steps
    reason = ""
    if not state.success:
        reason = (
            await context.llm.structured(mistake_messages(state.task, trajectory, outcome), Mistake, temperature=TEMPERATURE)
        ).reason
    embedding = await task_vector(state, context)
    [existing] = await store.get_nodes(namespace, [qid])
    hits = await store.vector_search(namespace, embedding, kind=QUERY, k=config.neighbours + 1)
    properties = {
        "task": state.task,
        "task_key": state.task_key or context.thread_id,
        "status": status,
        "feedback": state.feedback,
        "key_steps": steps,
        "fail_reason": reason,
        "trajectory": trajectory,
    }
    utterances = [
        NodeRecord(
            id=utterance_id(namespace, qid, index + 1),
            namespace=namespace,
            kind=UTTERANCE,
            text=m.text,
            properties={
                "query_id": qid,
                "order": index + 1,
                "round": m.round,
                "speaker": m.speaker,
                "addressee": m.addressee,
                "message": m.text,
            }
            | ({"kept": m.round not in dropped} if state.steps else {}),
        )
        for index, m in enumerate(state.messages)
    ]
    step_records, step_links = _step_records(namespace, qid, state.steps)

    def records(order: int) -> list[NodeRecord]:
        query = NodeRecord(
            id=qid,
            namespace=namespace,
            kind=QUERY,
            text=state.task,
            embedding=embedding,
            properties={**properties, "order": order},
        )
        return [query, *utterances, *step_records]

    kept_order = int(existing.properties["order"]) if existing is not None else None
    order = await _write_numbered(store, namespace, qid, records, kept_order)
    similar = [
        (hit.node.id, hit.score)
        for hit in hits
        if hit.node.id != qid and hit.score >= config.similarity and int(hit.node.properties.get("order", 0)) < order
    ][: config.neighbours]
    used = [
        i
        for i, found in zip(state.insights, await store.get_nodes(namespace, [i.id for i in state.insights]), strict=True)
        if found is not None and found.kind == INSIGHT
    ]
    rel = [
        RelationshipRecord(
            namespace=namespace, type=HAS_UTTERANCE, source_id=qid, target_id=u.id, properties={"order": u.properties["order"]}
        )
        for u in utterances
    ]
    rel += [
        RelationshipRecord(namespace=namespace, type=NEXT, source_id=a.id, target_id=b.id)
        for a, b in zip(utterances, utterances[1:], strict=False)
    ]
    rel += step_links
    rel += [
        RelationshipRecord(namespace=namespace, type=REPLY_TO, source_id=utterances[i].id, target_id=utterances[target].id)
        for i, target in enumerate(_reply_to(state.messages))
        if target is not None
    ]
    rel += [
        RelationshipRecord(
            namespace=namespace, type=SIMILAR, source_id=qid, target_id=other, properties={"weight": round(score, 6)}
        )
        for other, score in similar
    ]
    if rel:
        await store.upsert_relationships(rel)
    report = {
        "query": qid,
        "order": order,
        "status": status,
        "utterances": len(utterances),
        "steps": len(step_records),
        "dropped_steps": [s.number for s in state.steps if s.reward < 0],
        "similar": [other for other, _ in similar],
        "used_insights": [i.id for i in used],
    }
    return {"query_id": qid, "key_steps": steps, "fail_reason": reason, **state.with_evolution("record", report)}


# -- credit --------------------------------------------------------------------------------------------------


class CreditConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    success: int = Field(1, description="Credit to each used insight when the task succeeds.")
    failure: int = Field(-2, description="Credit to each used insight when the task fails.")


@node(
    "gmemory.credit",
    state=TaskState,
    reads={"query_id", "success", "insights", "evolution"},
    writes={"evolution"},
    config=CreditConfig,
)
async def credit(state: TaskState, config: CreditConfig, context: RunContext) -> dict[str, Any]:
    """Credit the insights the team used (+1 success, -2 failure), rescore them from their credits, prune <= 0."""
    store, namespace, qid = context.store, context.namespace, state.query_id
    if not qid or not state.insights:
        return state.with_evolution("credit", {"credited": {}, "pruned": []})
    delta = config.success if state.success else config.failure
    link = SUPPORTED_BY if state.success else CONTRADICTED_BY
    async with keyed_lock("gmemory", namespace):
        found = await store.get_nodes(namespace, [i.id for i in state.insights])
        used = [i.id for i, node_ in zip(state.insights, found, strict=True) if node_ is not None and node_.kind == INSIGHT]
        used = list(dict.fromkeys(used))
        credits = [credit_record(namespace, qid, insight, delta, "resolved" if state.success else "failed") for insight in used]
        if credits:
            await store.upsert_nodes([c for c, _ in credits])
            await store.upsert_relationships(
                [r for _, r in credits] + [r for insight in used for r in insight_links(namespace, link, insight, [qid])]
            )
        scores = await rescore(store, namespace, used)
    report = {
        "credited": {insight: delta for insight in used},
        "scores": {insight: s["score"] for insight, s in scores.items()},
        "pruned": [insight for insight, s in scores.items() if s["status"] == "pruned"],
    }
    return state.with_evolution("credit", report)
