"""G-Memory's periodic revision of the insights (``gmemory.revise``).

Every ``every`` recorded tasks (milestone ``revision-<n>``, claimed once), ``samples`` past tasks are drawn (a
generator seeded with ``n``, so a rerun draws the same). Around each, its most similar successes and failures
form a group; the model sees the active insights that at least half of the group supports, numbered, and
proposes ADD / EDIT / REMOVE / AGREE operations: once per success/failure pair (compare) and once per chunk of
successes (critique). :func:`validate_operations` checks each reply against the numbers the model saw before
anything is applied; the applied operations become credits (+2 for an added insight, +1 for EDIT and AGREE,
-1 for REMOVE, -3 once the list is full), so a revision retried counts once.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mnemoflow.errors import LLMOutputError
from mnemoflow.memory.paging import all_nodes
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import NodeRecord, RelationshipRecord
from mnemoflow.nodes.context import RunContext
from mnemoflow.nodes.gmemory.agents import TEMPERATURE, Operation, Operations, compare_messages, critique_messages
from mnemoflow.nodes.gmemory.insights import active_insights, credit_record, insight_links, new_insight, rescore
from mnemoflow.nodes.gmemory.links import linked
from mnemoflow.nodes.gmemory.milestones import run_due
from mnemoflow.nodes.gmemory.model import CONTRADICTED_BY, INSIGHT, QUERY, SUPPORTED_BY, insight_id
from mnemoflow.nodes.gmemory.state import TaskState
from mnemoflow.nodes.locks import keyed_lock
from mnemoflow.nodes.registry import node

__all__ = ["ReviseConfig", "validate_operations"]


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


async def _related(store: GraphStore, namespace: str, group: Sequence[NodeRecord]) -> list[NodeRecord]:
    """Active insights supported by at least half of the group's queries, in display order."""
    counts: dict[str, int] = {}
    for supporters in (await linked(store, namespace, [query.id for query in group], SUPPORTED_BY, "in")).values():
        for insight in supporters:
            counts[insight.id] = counts.get(insight.id, 0) + 1
    return [
        i for i in await active_insights(store, namespace) if 2 * counts.get(i.id, 0) >= len(group) and counts.get(i.id, 0) > 0
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
            nodes.append(new_insight(namespace, new_id, operation.text.strip(), score=2, created_order=created, source=source))
            record_, link = credit_record(namespace, op_source, new_id, 2, "added")
            nodes.append(record_)
            relationships += [link, *insight_links(namespace, SUPPORTED_BY, new_id, tasks)]
            touched.append(new_id)
            applied.append(f"#{index} ADD {new_id}")
            continue
        assert target is not None
        now = current.get(target.id)
        if now is None or now.properties.get("status", "active") != "active":
            skipped.append(f"#{index} {operation.op} {target.id}: no longer active")
            continue
        if operation.op == "REMOVE":
            delta, link_type = (-3 if active_count >= full else -1), CONTRADICTED_BY
        else:
            delta, link_type = 1, SUPPORTED_BY
        if operation.op == "EDIT":
            history = [*now.properties.get("history", []), {"text": now.text, "source": op_source}]
            text = operation.text.strip()
            nodes.append(
                now.model_copy(update={"text": text, "properties": {**now.properties, "text": text, "history": history}})
            )
        record_, link = credit_record(namespace, op_source, target.id, delta, operation.op.lower())
        nodes.append(record_)
        relationships += [link, *insight_links(namespace, link_type, target.id, tasks)]
        touched.append(target.id)
        applied.append(f"#{index} {operation.op} {target.id}")
    if nodes:
        await store.upsert_nodes(nodes)
        await store.upsert_relationships(relationships)
        await rescore(store, namespace, touched)
    return applied, skipped


async def _revision(context: RunContext, config: ReviseConfig, n: int) -> dict[str, Any]:
    store, namespace = context.store, context.namespace
    queries = await _queries(store, namespace, n)
    rng = random.Random(n)
    samples = rng.sample(queries, min(config.samples, len(queries)))
    # listed queries come without their vectors; the samples need theirs to find similar tasks
    samples = [full or sample for sample, full in zip(samples, await store.get_nodes(namespace, [q.id for q in samples]), strict=True)]
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
        active = await active_insights(store, namespace)
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
            active_now = len(await active_insights(store, namespace))
            applied, skipped = await _apply_operations(
                store, namespace, planned, [q.id for q in members], source, active_now, config.full
            )
        report["applied"] += [f"call {number} {a}" for a in applied]
        report["dropped"] += [f"call {number} {s}" for s in skipped]
    return report


@node("gmemory.revise", state=TaskState, reads={"evolution"}, writes={"evolution"}, config=ReviseConfig)
async def revise(state: TaskState, config: ReviseConfig, context: RunContext) -> dict[str, Any]:
    """Every ``every`` tasks: the model critiques past attempts against the insights; validated ops are applied."""
    reports = await run_due(
        context, "revision", config.every, lambda n: _revision(context, config, n), ("calls", "applied", "dropped", "errors")
    )
    return state.with_evolution("revise", reports) if reports else {}
