"""G-Memory's write path (``gmemory.*`` evolution nodes; graph ``graphs/library/gmemory-task.yaml``).

record -> credit -> revise -> merge, after the team has acted:

- ``gmemory.record``: the query (embedded task, outcome, key steps, likely mistake), its interaction graph (one
  utterance per message, ``NEXT`` in order, ``REPLY_TO`` the last message the speaker received), ``SIMILAR``
  links to earlier queries and ``USED_INSIGHT`` links to the insights retrieval handed the team.
- ``gmemory.credit``: +1 per used insight on success, -2 on failure, as ``GCredit`` records (one per (task,
  insight), so a replay counts once); scores are recomputed from the credits; an insight at <= 0 is pruned.
- ``gmemory.revise``: every ``every`` tasks (milestone ``revision-<n>``, claimed once), the model critiques
  success/failure pairs and groups of successes against the related insights and proposes ADD / EDIT / REMOVE /
  AGREE operations, validated before anything is applied.
- ``gmemory.merge``: every ``every`` tasks (milestone ``merge-<n>``), the queries are clustered and each
  cluster's insights consolidated; a merged insight keeps the highest score of those it replaces.

Writes that read and rewrite insights run one at a time per namespace in this process (a lock per namespace);
across processes the credits (stable ids) and the milestones (claims) keep the result exact, and the cached
``score`` is recomputed from the credits whenever an insight is touched. A reply that cannot be read changes
nothing and is reported in ``evolution``.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from mnemoflow.errors import ConflictError, LLMOutputError
from mnemoflow.llm import offline_handler
from mnemoflow.llm.gateway import Message as ChatMessage
from mnemoflow.memory.paging import all_neighbours, all_nodes
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import NodeRecord, RelationshipRecord, stable_id
from mnemoflow.nodes.context import RunContext
from mnemoflow.nodes.gmemory.model import (
    CREDIT,
    INSIGHT,
    MILESTONE,
    QUERY,
    UTTERANCE,
    credit_id,
    insight_id,
    milestone_id,
    query_id,
    utterance_id,
)
from mnemoflow.nodes.gmemory.retrieve import task_vector
from mnemoflow.nodes.gmemory.state import TaskState
from mnemoflow.nodes.locks import keyed_lock
from mnemoflow.nodes.registry import node

__all__ = [
    "Consolidation",
    "KeySteps",
    "Mistake",
    "Operation",
    "Operations",
    "insight_score",
    "validate_operations",
]

TEMPERATURE = 0.1


# -- reply schemas and their offline stand-ins ------------------------------------------------------------


class _Reply(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KeySteps(_Reply):
    steps: list[str] = Field(
        default_factory=list, max_length=20, description="The overall approach, then one line per essential step."
    )


class Mistake(_Reply):
    reason: str = Field(max_length=2000, description="The most likely cause of the failure, in one or two sentences.")


class Operation(_Reply):
    op: Literal["ADD", "EDIT", "REMOVE", "AGREE"]
    insight: int | None = Field(None, description="The listed insight's number (EDIT, REMOVE, AGREE); null for ADD.")
    text: str = Field("", max_length=600, description="The rule, general, in the form 'do X, because Y'.")


class Operations(_Reply):
    operations: list[Operation] = Field(default_factory=list, max_length=12)


class Consolidated(_Reply):
    text: str = Field(min_length=1, max_length=600)
    merges: list[int] = Field(min_length=1, max_length=10, description="The numbers of the listed insights it replaces.")


class Consolidation(_Reply):
    insights: list[Consolidated] = Field(default_factory=list, max_length=10)


@offline_handler(KeySteps)
def _offline_key_steps(messages: list[ChatMessage]) -> KeySteps:
    """Without a model: the solver's messages are the steps."""
    lines = str(messages[-1].get("content", "")).splitlines()
    return KeySteps(steps=[line.split(": ", 1)[-1][:200] for line in lines if line.startswith("solver ->")][:5])


@offline_handler(Mistake)
def _offline_mistake(messages: list[ChatMessage]) -> Mistake:
    return Mistake(reason="The final solution did not meet the goal the task set.")


@offline_handler(Operations)
def _offline_operations(messages: list[ChatMessage]) -> Operations:
    """Without a model the insights stay as they are."""
    return Operations(operations=[])


@offline_handler(Consolidation)
def _offline_consolidation(messages: list[ChatMessage]) -> Consolidation:
    return Consolidation(insights=[])


# -- prompts (generic: no environment or benchmark wording) -----------------------------------------------

KEY_STEPS_SYSTEM = """You summarize how a team of agents worked on a task. From the task, the team's messages and
the outcome, reply with JSON {"steps": ["...", ...]}: first the overall approach in one line, then one short line
per essential step, in order. Leave out steps that changed nothing; add nothing that is not in the messages."""

MISTAKE_SYSTEM = """A team of agents failed a task. Compare what the team finally produced with what the task
required and name the most likely mistake. Reply with JSON {"reason": "..."}: one or two sentences, concrete about
what went wrong, without repeating the task."""

_OPS_RULES = """Reply with JSON {"operations": [{"op": "ADD|EDIT|REMOVE|AGREE", "insight": <number or null>, "text": "..."}]},
at most 4 operations, at most one per insight:
- ADD: a new rule not covered by the existing ones (insight null).
- EDIT: rewrite existing rule <number> to make it more accurate or general (text: the new rule).
- REMOVE: existing rule <number> is wrong, misleading or duplicated (text: why).
- AGREE: existing rule <number> is confirmed by these tasks (text: the rule).
Rules must be general and reusable across tasks, in the form "do X, because Y", never naming one task's details.
Reply with an empty list when nothing should change."""

COMPARE_SYSTEM = (
    "You improve a list of rules that help a team of agents solve tasks, by comparing a successful attempt with a failed one at similar tasks.\n"
    + _OPS_RULES
)
CRITIQUE_SYSTEM = (
    "You improve a list of rules that help a team of agents solve tasks, by studying several successful attempts at similar tasks.\n"
    + _OPS_RULES
)
PREFER_CHANGES = "\nThe list is full: prefer EDIT, REMOVE and AGREE over ADD."

MERGE_SYSTEM = """You consolidate rules that help a team of agents solve similar tasks. Merge rules that say the
same thing or that one general rule covers; keep distinct lessons apart. Reply with JSON
{"insights": [{"text": "do X, because Y", "merges": [numbers of the listed rules it replaces]}]}. Rules you leave
out of every "merges" list stay as they are."""


def _numbered(texts: Sequence[str]) -> str:
    return "\n".join(f"{number}. {text}" for number, text in enumerate(texts, 1)) or "(none yet)"


def _transcript(messages: Iterable[Any]) -> str:
    return "\n".join(f"{m.speaker} -> {m.addressee}: {m.text}" for m in messages) or "(no messages)"


def key_steps_messages(task: str, transcript: str, outcome: str) -> list[ChatMessage]:
    user = f"Task: {task}\n\nOutcome: {outcome}\n\nMessages:\n{transcript}"
    return [{"role": "system", "content": KEY_STEPS_SYSTEM}, {"role": "user", "content": user}]


def mistake_messages(task: str, transcript: str, outcome: str) -> list[ChatMessage]:
    user = f"Task: {task}\n\nOutcome: {outcome}\n\nMessages:\n{transcript}"
    return [{"role": "system", "content": MISTAKE_SYSTEM}, {"role": "user", "content": user}]


def _attempt(query: NodeRecord, *, with_trajectory: bool) -> str:
    p = query.properties
    lines = [f"Task: {p.get('task', '')}", f"Outcome: {p.get('status', '')}"]
    if p.get("key_steps"):
        lines.append("Key steps:\n" + "\n".join(f"- {step}" for step in p["key_steps"]))
    if with_trajectory and p.get("trajectory"):
        lines.append(f"Messages:\n{p['trajectory']}")
    if p.get("fail_reason"):
        lines.append(f"Likely mistake: {p['fail_reason']}")
    return "\n".join(lines)


def compare_messages(success: NodeRecord, failure: NodeRecord, rules: Sequence[str], full: bool) -> list[ChatMessage]:
    user = (
        f"Successful attempt:\n{_attempt(success, with_trajectory=True)}\n\nFailed attempt:\n"
        f"{_attempt(failure, with_trajectory=True)}\n\nExisting rules:\n{_numbered(rules)}"
    )
    return [{"role": "system", "content": COMPARE_SYSTEM + (PREFER_CHANGES if full else "")}, {"role": "user", "content": user}]


def critique_messages(successes: Sequence[NodeRecord], rules: Sequence[str], full: bool) -> list[ChatMessage]:
    attempts = "\n\n".join(f"Attempt {i}:\n{_attempt(q, with_trajectory=False)}" for i, q in enumerate(successes, 1))
    user = f"Successful attempts:\n{attempts}\n\nExisting rules:\n{_numbered(rules)}"
    return [{"role": "system", "content": CRITIQUE_SYSTEM + (PREFER_CHANGES if full else "")}, {"role": "user", "content": user}]


def merge_messages(rules: Sequence[str]) -> list[ChatMessage]:
    return [{"role": "system", "content": MERGE_SYSTEM}, {"role": "user", "content": f"Rules:\n{_numbered(rules)}"}]


# -- store helpers ------------------------------------------------------------------------------------------


async def _linked(
    store: GraphStore, namespace: str, node_id: str, type: str, direction: Literal["out", "in"]
) -> list[NodeRecord]:
    relationships, nodes = await all_neighbours(store, namespace, node_id)
    ends = [
        r.target_id if direction == "out" else r.source_id
        for r in relationships
        if r.type == type and (r.source_id if direction == "out" else r.target_id) == node_id
    ]
    return [nodes[end] for end in dict.fromkeys(ends) if end in nodes]


async def insight_score(store: GraphStore, namespace: str, insight: str) -> int:
    """The sum of the insight's credits (its true score; ``score`` on the insight is a cache of it)."""
    credits = await _linked(store, namespace, insight, "CREDITS", "in")
    return sum(int(c.properties.get("delta", 0)) for c in credits if c.kind == CREDIT)


def _credit(namespace: str, source: str, insight: str, delta: int, reason: str) -> tuple[NodeRecord, RelationshipRecord]:
    record = NodeRecord(
        id=credit_id(namespace, source, insight),
        namespace=namespace,
        kind=CREDIT,
        properties={"insight_id": insight, "delta": delta, "reason": reason, "source": source},
    )
    return record, RelationshipRecord(namespace=namespace, type="CREDITS", source_id=record.id, target_id=insight)


def _links(namespace: str, type: str, insight: str, queries: Iterable[str]) -> list[RelationshipRecord]:
    return [RelationshipRecord(namespace=namespace, type=type, source_id=insight, target_id=q) for q in dict.fromkeys(queries)]


async def _rescore(store: GraphStore, namespace: str, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Recompute the touched insights' scores from their credits; prune an active one at <= 0."""
    ids = list(dict.fromkeys(ids))
    result: dict[str, dict[str, Any]] = {}
    updated: list[NodeRecord] = []
    for insight in await store.get_nodes(namespace, ids):
        if insight is None or insight.kind != INSIGHT:
            continue
        score = await insight_score(store, namespace, insight.id)
        status = insight.properties.get("status", "active")
        if status == "active" and score <= 0:
            status = "pruned"
        result[insight.id] = {"score": score, "status": status}
        if insight.properties.get("score") != score or insight.properties.get("status") != status:
            updated.append(insight.model_copy(update={"properties": {**insight.properties, "score": score, "status": status}}))
    if updated:
        await store.upsert_nodes(updated)
    return result


async def _claim(store: GraphStore, namespace: str, name: str) -> bool:
    """Claim milestone ``name``; False when another task already has."""
    record = NodeRecord(
        id=milestone_id(namespace, name), namespace=namespace, kind=MILESTONE, properties={"name": name, "status": "claimed"}
    )
    try:
        await store.upsert_nodes([record], new=[record.id])
    except ConflictError:
        return False
    return True


async def _finish(store: GraphStore, namespace: str, name: str, report: dict[str, Any]) -> None:
    record = NodeRecord(
        id=milestone_id(namespace, name),
        namespace=namespace,
        kind=MILESTONE,
        properties={"name": name, "status": "done", "report": report},
    )
    await store.upsert_nodes([record])


async def _due(store: GraphStore, namespace: str, prefix: str, every: int) -> list[int]:
    """The multiples of ``every`` the namespace's query count has reached whose milestone nobody claimed yet."""
    count = await store.count_nodes(namespace, QUERY)
    reached = list(range(every, count + 1, every))
    claimed = await store.get_nodes(namespace, [milestone_id(namespace, f"{prefix}-{n}") for n in reached]) if reached else []
    return [n for n, found in zip(reached, claimed, strict=True) if found is None]


async def _run_due(
    context: RunContext,
    prefix: str,
    every: int,
    work: Callable[[int], Awaitable[dict[str, Any]]],
    kept: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run ``work(n)`` for every due milestone ``<prefix>-<n>`` this task claims; each report (its ``kept`` keys)
    is saved on its milestone. Returns the reports by milestone name."""
    reports: dict[str, Any] = {}
    for n in await _due(context.store, context.namespace, prefix, every):
        name = f"{prefix}-{n}"
        if not await _claim(context.store, context.namespace, name):
            continue
        reports[name] = report = await work(n)
        await _finish(context.store, context.namespace, name, {k: v for k, v in report.items() if kept is None or k in kept})
    return reports


def _evolution(state: TaskState, key: str, value: Any) -> dict[str, Any]:
    return {"evolution": {**state.evolution, key: value}}


# -- record --------------------------------------------------------------------------------------------------


class RecordConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    similarity: float = Field(
        0.85, ge=-1.0, le=1.0, description="Cosine at or above which a new query is linked SIMILAR to an earlier one."
    )
    neighbours: int = Field(10, ge=1, le=100, description="Earlier queries probed for similarity links.")


def _reply_to(messages: Sequence[Any]) -> list[int | None]:
    """For each message, the index of the last earlier message addressed to its speaker."""
    last_received: dict[str, int] = {}
    targets: list[int | None] = []
    for index, message in enumerate(messages):
        targets.append(last_received.get(message.speaker))
        last_received[message.addressee] = index
    return targets


@node(
    "gmemory.record",
    state=TaskState,
    reads={"task", "task_key", "task_vector", "messages", "success", "feedback", "insights"},
    writes={"query_id", "key_steps", "fail_reason", "evolution"},
    config=RecordConfig,
)
async def record(state: TaskState, config: RecordConfig, context: RunContext) -> dict[str, Any]:
    """Write the finished task: its query (outcome, key steps, likely mistake), interaction graph and links."""
    store, namespace = context.store, context.namespace
    qid = query_id(namespace, state.task_key or context.thread_id)
    status = "resolved" if state.success else "failed"
    outcome = f"{status}. {state.feedback}".strip()
    transcript = _transcript(state.messages)
    steps = (
        await context.llm.structured(key_steps_messages(state.task, transcript, outcome), KeySteps, temperature=TEMPERATURE)
    ).steps
    reason = ""
    if not state.success:
        reason = (
            await context.llm.structured(mistake_messages(state.task, transcript, outcome), Mistake, temperature=TEMPERATURE)
        ).reason
    embedding = await task_vector(state, context)
    async with keyed_lock("gmemory", namespace):
        [existing] = await store.get_nodes(namespace, [qid])
        order = int(existing.properties["order"]) if existing is not None else await store.count_nodes(namespace, QUERY) + 1
        hits = await store.vector_search(namespace, embedding, kind=QUERY, k=config.neighbours + 1)
        query = NodeRecord(
            id=qid,
            namespace=namespace,
            kind=QUERY,
            text=state.task,
            embedding=embedding,
            properties={
                "task": state.task,
                "task_key": state.task_key or context.thread_id,
                "status": status,
                "order": order,
                "feedback": state.feedback,
                "key_steps": steps,
                "fail_reason": reason,
                "trajectory": transcript,
            },
        )
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
                },
            )
            for index, m in enumerate(state.messages)
        ]
        await store.upsert_nodes([query, *utterances])
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
                namespace=namespace,
                type="HAS_UTTERANCE",
                source_id=qid,
                target_id=u.id,
                properties={"order": u.properties["order"]},
            )
            for u in utterances
        ]
        rel += [
            RelationshipRecord(namespace=namespace, type="NEXT", source_id=a.id, target_id=b.id)
            for a, b in zip(utterances, utterances[1:], strict=False)
        ]
        rel += [
            RelationshipRecord(namespace=namespace, type="REPLY_TO", source_id=utterances[i].id, target_id=utterances[target].id)
            for i, target in enumerate(_reply_to(state.messages))
            if target is not None
        ]
        rel += [
            RelationshipRecord(
                namespace=namespace, type="SIMILAR", source_id=qid, target_id=other, properties={"weight": round(score, 6)}
            )
            for other, score in similar
        ]
        rel += [
            RelationshipRecord(namespace=namespace, type="USED_INSIGHT", source_id=qid, target_id=i.id, properties={"rank": rank})
            for rank, i in enumerate(used, 1)
        ]
        if rel:
            await store.upsert_relationships(rel)
    report = {
        "query": qid,
        "order": order,
        "status": status,
        "utterances": len(utterances),
        "similar": [other for other, _ in similar],
        "used_insights": [i.id for i in used],
    }
    return {"query_id": qid, "key_steps": steps, "fail_reason": reason, **_evolution(state, "record", report)}


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
        return _evolution(state, "credit", {"credited": {}, "pruned": []})
    delta = config.success if state.success else config.failure
    link = "SUPPORTED_BY" if state.success else "CONTRADICTED_BY"
    async with keyed_lock("gmemory", namespace):
        found = await store.get_nodes(namespace, [i.id for i in state.insights])
        used = [i.id for i, node_ in zip(state.insights, found, strict=True) if node_ is not None and node_.kind == INSIGHT]
        used = list(dict.fromkeys(used))
        credits = [_credit(namespace, qid, insight, delta, "resolved" if state.success else "failed") for insight in used]
        if credits:
            await store.upsert_nodes([c for c, _ in credits])
            await store.upsert_relationships(
                [r for _, r in credits] + [r for insight in used for r in _links(namespace, link, insight, [qid])]
            )
        scores = await _rescore(store, namespace, used)
    report = {
        "credited": {insight: delta for insight in used},
        "scores": {insight: s["score"] for insight, s in scores.items()},
        "pruned": [insight for insight, s in scores.items() if s["status"] == "pruned"],
    }
    return _evolution(state, "credit", report)


# -- revise --------------------------------------------------------------------------------------------------


class ReviseConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    every: int = Field(5, ge=1, description="Revise the insights each time this many more tasks have been recorded.")
    samples: int = Field(5, ge=1, le=50, description="Tasks sampled per revision.")
    successes: int = Field(3, ge=0, le=20, description="Most similar successes fetched per sampled task.")
    failures: int = Field(1, ge=0, le=20, description="Most similar failures fetched per sampled task.")
    chunk: int = Field(5, ge=1, le=20, description="Successes per critique call.")
    max_operations: int = Field(4, ge=1, le=12, description="Operations applied per reply (the rest are dropped and reported).")
    full: int = Field(
        10, ge=1, description="With this many active insights, REMOVE costs -3 instead of -1 and ADD is discouraged."
    )


def validate_operations(
    operations: Sequence[Operation], listed: Sequence[NodeRecord], active: Sequence[NodeRecord], max_operations: int
) -> tuple[list[tuple[int, Operation, NodeRecord | None]], list[str]]:
    """Check a reply's operations against the numbered insights the model saw.

    Returns the operations to apply (with their index in the reply and their target) and what was dropped, why.
    EDIT/REMOVE/AGREE must name a listed number (never another insight); an ADD whose text contains an existing
    rule is dropped; an EDIT whose text contains an existing rule becomes AGREE on that rule; one op per insight.
    """
    keep: list[tuple[int, Operation, NodeRecord | None]] = []
    dropped: list[str] = []
    targeted: set[str] = set()

    def contained(text: str) -> NodeRecord | None:
        lowered = " ".join(text.lower().split())
        return next((i for i in active if (i.text or "").strip() and " ".join((i.text or "").lower().split()) in lowered), None)

    for index, operation in enumerate(operations):
        if index >= max_operations:
            dropped.append(f"#{index} {operation.op}: more than {max_operations} operations")
            continue
        if operation.op == "ADD":
            if not operation.text.strip():
                dropped.append(f"#{index} ADD: no text")
            elif (existing := contained(operation.text)) is not None:
                dropped.append(f"#{index} ADD: an existing insight already says it ({existing.id})")
            else:
                keep.append((index, operation, None))
            continue
        number = operation.insight
        if number is None or not 1 <= number <= len(listed):
            dropped.append(f"#{index} {operation.op}: no listed insight {number} (listed: 1-{len(listed)})")
            continue
        target = listed[number - 1]
        if operation.op == "EDIT":
            if not operation.text.strip():
                dropped.append(f"#{index} EDIT {number}: no text")
                continue
            if (existing := contained(operation.text)) is not None:
                operation, target = Operation(op="AGREE", insight=number, text=existing.text or ""), existing
        if target.id in targeted:
            dropped.append(f"#{index} {operation.op} {number}: that insight already has an operation")
            continue
        targeted.add(target.id)
        keep.append((index, operation, target))
    order = {"REMOVE": 0, "AGREE": 1, "EDIT": 2, "ADD": 3}
    return sorted(keep, key=lambda item: (order[item[1].op], item[0])), dropped


async def _queries(store: GraphStore, namespace: str, upto: int) -> list[NodeRecord]:
    """The namespace's queries numbered ``1..upto``, by order."""
    queries = [q for q in await all_nodes(store, namespace, QUERY) if int(q.properties.get("order", 0)) <= upto]
    return sorted(queries, key=lambda q: (int(q.properties.get("order", 0)), q.id))


async def _similar(store: GraphStore, namespace: str, query: NodeRecord, status: str, k: int, upto: int) -> list[NodeRecord]:
    if k <= 0 or query.embedding is None:
        return []
    hits = await store.vector_search(namespace, query.embedding, kind=QUERY, k=k + 1, filters={"status": status})
    found = [h.node for h in hits if h.node.id != query.id and int(h.node.properties.get("order", 0)) <= upto]
    return found[:k]


async def _active_insights(store: GraphStore, namespace: str) -> list[NodeRecord]:
    insights = [i for i in await all_nodes(store, namespace, INSIGHT) if i.properties.get("status", "active") == "active"]
    return sorted(insights, key=lambda i: (int(i.properties.get("created_order", 0)), i.id))


async def _related(store: GraphStore, namespace: str, group: Sequence[NodeRecord]) -> list[NodeRecord]:
    """Active insights supported by at least half of the group's queries, in display order."""
    counts: dict[str, int] = {}
    for query in group:
        for insight in await _linked(store, namespace, query.id, "SUPPORTED_BY", "in"):
            counts[insight.id] = counts.get(insight.id, 0) + 1
    return [
        i for i in await _active_insights(store, namespace) if 2 * counts.get(i.id, 0) >= len(group) and counts.get(i.id, 0) > 0
    ]


async def _apply_operations(
    store: GraphStore,
    namespace: str,
    planned: Sequence[tuple[int, Operation, NodeRecord | None]],
    tasks: Sequence[str],
    source: str,
    active_count: int,
    full: int,
) -> tuple[list[str], list[str]]:
    """Apply validated operations (under the namespace lock); returns what was applied and what was skipped."""
    applied: list[str] = []
    skipped: list[str] = []
    nodes: list[NodeRecord] = []
    relationships: list[RelationshipRecord] = []
    touched: list[str] = []
    current = {n.id: n for n in await store.get_nodes(namespace, [t.id for _, _, t in planned if t is not None]) if n is not None}
    created = await store.count_nodes(namespace, INSIGHT)
    for index, operation, target in planned:
        op_source = f"{source}:{index}"
        if operation.op == "ADD":
            new_id = insight_id(namespace, operation.text)
            [existing] = await store.get_nodes(namespace, [new_id])
            if existing is not None or new_id in touched:
                skipped.append(
                    f"#{index} ADD: the same insight exists already ({new_id}, {existing.properties.get('status') if existing else 'added'})"
                )
                continue
            created += 1
            nodes.append(
                NodeRecord(
                    id=new_id,
                    namespace=namespace,
                    kind=INSIGHT,
                    text=operation.text.strip(),
                    properties={
                        "text": operation.text.strip(),
                        "status": "active",
                        "score": 2,
                        "created_order": created,
                        "source": source,
                    },
                )
            )
            record_, link = _credit(namespace, op_source, new_id, 2, "added")
            nodes.append(record_)
            relationships += [link, *_links(namespace, "SUPPORTED_BY", new_id, tasks)]
            touched.append(new_id)
            applied.append(f"#{index} ADD {new_id}")
            continue
        assert target is not None
        now = current.get(target.id)
        if now is None or now.properties.get("status", "active") != "active":
            skipped.append(f"#{index} {operation.op} {target.id}: no longer active")
            continue
        if operation.op == "REMOVE":
            delta, link_type = (-3 if active_count >= full else -1), "CONTRADICTED_BY"
        else:
            delta, link_type = 1, "SUPPORTED_BY"
        if operation.op == "EDIT":
            history = [*now.properties.get("history", []), {"text": now.text, "source": op_source}]
            text = operation.text.strip()
            nodes.append(
                now.model_copy(update={"text": text, "properties": {**now.properties, "text": text, "history": history}})
            )
        record_, link = _credit(namespace, op_source, target.id, delta, operation.op.lower())
        nodes.append(record_)
        relationships += [link, *_links(namespace, link_type, target.id, tasks)]
        touched.append(target.id)
        applied.append(f"#{index} {operation.op} {target.id}")
    if nodes:
        await store.upsert_nodes(nodes)
        await store.upsert_relationships(relationships)
        await _rescore(store, namespace, touched)
    return applied, skipped


async def _revision(context: RunContext, config: ReviseConfig, n: int) -> dict[str, Any]:
    store, namespace = context.store, context.namespace
    queries = await _queries(store, namespace, n)
    rng = random.Random(n)
    samples = rng.sample(queries, min(config.samples, len(queries)))
    report: dict[str, Any] = {"samples": [q.id for q in samples], "calls": 0, "applied": [], "dropped": [], "errors": []}
    calls: list[tuple[list[NodeRecord], list[NodeRecord], Literal["compare", "critique"]]] = []
    for sample in samples:
        successes = await _similar(store, namespace, sample, "resolved", config.successes, n)
        failures = await _similar(store, namespace, sample, "failed", config.failures, n)
        (successes if sample.properties.get("status") == "resolved" else failures).insert(0, sample)
        successes = list({q.id: q for q in successes}.values())
        failures = list({q.id: q for q in failures}.values())
        group = [*successes, *failures]
        report.setdefault("groups", []).append([q.id for q in group])
        calls += [([s, f], group, "compare") for s, f in zip(successes, failures, strict=False)]
        shuffled = successes[:]
        rng.shuffle(shuffled)
        calls += [(shuffled[i : i + config.chunk], group, "critique") for i in range(0, len(shuffled), config.chunk)]
    for number, (members, group, how) in enumerate(calls):
        source = f"revision-{n}:{number}"
        listed = await _related(store, namespace, group)  # read again before each call: earlier calls change them
        active = await _active_insights(store, namespace)
        full = len(active) >= config.full
        rules = [i.text or "" for i in listed]
        messages = (
            compare_messages(members[0], members[1], rules, full) if how == "compare" else critique_messages(members, rules, full)
        )
        report["calls"] += 1
        try:
            reply = await context.llm.structured(messages, Operations, temperature=TEMPERATURE)
        except LLMOutputError as exc:
            context.log.warning("gmemory.revision_unreadable", revision=n, call=number, error=str(exc))
            report["errors"].append(f"call {number}: the reply could not be read, nothing applied: {exc}")
            continue
        planned, dropped = validate_operations(reply.operations, listed, active, config.max_operations)
        report["dropped"] += [f"call {number} {d}" for d in dropped]
        if not planned:
            continue
        async with keyed_lock("gmemory", namespace):
            active_now = len(await _active_insights(store, namespace))
            applied, skipped = await _apply_operations(
                store, namespace, planned, [q.id for q in members], source, active_now, config.full
            )
        report["applied"] += [f"call {number} {a}" for a in applied]
        report["dropped"] += [f"call {number} {s}" for s in skipped]
    return report


@node("gmemory.revise", state=TaskState, reads={"evolution"}, writes={"evolution"}, config=ReviseConfig)
async def revise(state: TaskState, config: ReviseConfig, context: RunContext) -> dict[str, Any]:
    """Every ``every`` tasks: the model critiques past attempts against the insights; validated ops are applied."""
    reports = await _run_due(
        context, "revision", config.every, lambda n: _revision(context, config, n), ("calls", "applied", "dropped", "errors")
    )
    return _evolution(state, "revise", reports) if reports else {}


# -- merge ---------------------------------------------------------------------------------------------------


MAX_CLUSTERED = 2000
"""At most this many supporting queries are clustered at a merge (agglomerative clustering is quadratic)."""


class MergeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    every: int = Field(20, ge=1, description="Merge the insights each time this many more tasks have been recorded.")
    distance: float = Field(
        0.5, gt=0.0, le=2.0, description="Cosine distance under which queries join one cluster (average linkage)."
    )
    batch: int = Field(10, ge=2, le=30, description="Insights consolidated per model call.")


def clusters(embeddings: Sequence[Sequence[float]], distance: float) -> list[int]:
    """Cluster labels: agglomerative clustering, cosine distance, average linkage, cut at ``distance``."""
    if len(embeddings) < 2:
        return [0] * len(embeddings)
    from sklearn.cluster import AgglomerativeClustering  # type: ignore[import-untyped]

    model = AgglomerativeClustering(n_clusters=None, metric="cosine", linkage="average", distance_threshold=distance)
    return [int(label) for label in model.fit_predict(np.asarray(embeddings, dtype=float))]


async def _merge(context: RunContext, config: MergeConfig, n: int) -> dict[str, Any]:
    store, namespace = context.store, context.namespace
    # only queries that support an active insight decide where insights go: cluster those (the most recent
    # MAX_CLUSTERED of them), never the whole namespace, whose pairwise distances would not fit in memory
    supports = {insight.id: await _linked(store, namespace, insight.id, "SUPPORTED_BY", "out") for insight in await _active_insights(store, namespace)}
    supporting = {q.id: q for linked in supports.values() for q in linked if q.kind == QUERY and int(q.properties.get("order", 0)) <= n}
    recent = sorted(supporting.values(), key=lambda q: -int(q.properties.get("order", 0)))[:MAX_CLUSTERED]
    queries = [q for q in await store.get_nodes(namespace, [q.id for q in recent]) if q is not None and q.embedding is not None]
    labels = clusters([q.embedding or [] for q in queries], config.distance)
    cluster_of = {q.id: label for q, label in zip(queries, labels, strict=True)}
    # each active insight joins the cluster holding most of its supporting queries
    members: dict[int, list[NodeRecord]] = {}
    for insight in await _active_insights(store, namespace):
        support = [q.id for q in supports.get(insight.id, []) if q.id in cluster_of]
        if support:
            votes = [cluster_of[q] for q in support]
            members.setdefault(max(sorted(set(votes)), key=votes.count), []).append(insight)
    report: dict[str, Any] = {"clusters": len(set(labels)), "merged": {}, "dropped": [], "errors": []}
    for label in sorted(members):
        group = members[label]
        for start in range(0, len(group), config.batch):
            batch = group[start : start + config.batch]
            if len(batch) < 2:
                continue
            try:
                reply = await context.llm.structured(
                    merge_messages([i.text or "" for i in batch]), Consolidation, temperature=TEMPERATURE
                )
            except LLMOutputError as exc:
                report["errors"].append(f"cluster {label}: the reply could not be read, nothing merged: {exc}")
                continue
            taken: set[int] = set()
            for index, item in enumerate(reply.insights):
                numbers = list(dict.fromkeys(item.merges))
                missing = [m for m in numbers if not 1 <= m <= len(batch)]
                if missing:
                    report["dropped"].append(f"cluster {label} #{index}: no listed insight {missing} (listed: 1-{len(batch)})")
                    continue
                if taken.intersection(numbers):
                    report["dropped"].append(
                        f"cluster {label} #{index}: insight {sorted(taken.intersection(numbers))} already merged by this reply"
                    )
                    continue
                async with keyed_lock("gmemory", namespace):
                    merged = await _consolidate(
                        store, namespace, [batch[m - 1].id for m in numbers], item.text.strip(), n, f"{label}.{start}.{index}"
                    )
                if merged is None:
                    report["dropped"].append(f"cluster {label} #{index}: an insight it merges is no longer active")
                    continue
                taken.update(numbers)
                report["merged"][merged] = [batch[m - 1].id for m in numbers]
    return report


async def _consolidate(store: GraphStore, namespace: str, originals: list[str], text: str, n: int, key: str) -> str | None:
    """One consolidated insight replacing ``originals``: the highest of their scores, the union of their links."""
    found = await store.get_nodes(namespace, originals)
    if any(o is None or o.properties.get("status", "active") != "active" for o in found):
        return None
    scores = [await insight_score(store, namespace, o) for o in originals]
    supported: list[str] = []
    contradicted: list[str] = []
    for original in originals:
        supported += [q.id for q in await _linked(store, namespace, original, "SUPPORTED_BY", "out")]
        contradicted += [q.id for q in await _linked(store, namespace, original, "CONTRADICTED_BY", "out")]
    new_id = stable_id(namespace, INSIGHT, f"merge-{n}", key, " ".join(text.lower().split()))
    created = await store.count_nodes(namespace, INSIGHT) + 1
    score = max(scores)
    merged = NodeRecord(
        id=new_id,
        namespace=namespace,
        kind=INSIGHT,
        text=text,
        properties={
            "text": text,
            "status": "active",
            "score": score,
            "created_order": created,
            "source": f"merge-{n}",
            "merged_from": originals,
        },
    )
    credit_record, credit_link = _credit(namespace, f"merge-{n}", new_id, score, "merged")
    retired = [
        o.model_copy(update={"properties": {**o.properties, "status": "merged", "merged_into": new_id}})
        for o in found
        if o is not None
    ]
    await store.upsert_nodes([merged, credit_record])
    await store.upsert_relationships(
        [
            credit_link,
            *_links(namespace, "SUPPORTED_BY", new_id, supported),
            *_links(namespace, "CONTRADICTED_BY", new_id, contradicted),
        ]
        + [RelationshipRecord(namespace=namespace, type="MERGED_INTO", source_id=o, target_id=new_id) for o in originals]
    )
    await store.upsert_nodes(retired)
    await _rescore(store, namespace, [new_id])
    return new_id


@node("gmemory.merge", state=TaskState, reads={"evolution"}, writes={"evolution"}, config=MergeConfig)
async def merge(state: TaskState, config: MergeConfig, context: RunContext) -> dict[str, Any]:
    """Every ``every`` tasks: cluster the queries and consolidate each cluster's insights with the model."""
    reports = await _run_due(context, "merge", config.every, lambda n: _merge(context, config, n))
    return _evolution(state, "merge", reports) if reports else {}
