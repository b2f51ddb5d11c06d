"""G-Memory's insight tier after a task (``gmemory.learn``, between ``record`` and ``credit`` in
``graphs/library/gmemory-task.yaml``), as the paper builds it.

- The lesson: the model's summarizer reads the task, its outcome, key steps, likely mistake and what the
  write-time filter kept of its interaction (the trajectory ``record`` stores), and states one general rule. It becomes a ``GInsight`` ``SUPPORTED_BY`` the task's query (the paper's
  iota_new = (J(G_inter, Psi), {q_new})), a failure's lesson too: it says what to do differently, and the failure
  is the evidence for it. It starts with a credit of ``score`` (2, what a revision's ``ADD`` gives), so credit,
  pruning, revision and merge treat it as any other insight.
- ``INFORMED {rank}`` from each insight the team was given to the query (the paper's edge).
- ``DERIVED_FROM {via_query}`` from the lesson to each insight the team was given (the paper's hyperedge
  (iota_m, iota_n, q)), which retrieval follows one hop.

One lesson per task: its id comes from the query, and a replay (or a resumed run) that finds it asks the model
nothing and keeps it as it is now (revised, pruned or merged); the links and the credit are upserts with stable
ids, so a rerun writes nothing twice. A reply that cannot be read learns nothing, is filed in ``errors``, and the
``INFORMED`` links are written all the same.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mnemoflow.errors import LLMOutputError
from mnemoflow.memory.records import NodeRecord, RelationshipRecord
from mnemoflow.nodes.context import RunContext
from mnemoflow.nodes.gmemory.agents import TEMPERATURE, Lesson, lesson_messages
from mnemoflow.nodes.gmemory.evolve import kept_trajectory
from mnemoflow.nodes.gmemory.insights import credit_record, insight_links, new_insight, rescore
from mnemoflow.nodes.gmemory.model import DERIVED_FROM, INFORMED, INSIGHT, SUPPORTED_BY, learned_insight_id
from mnemoflow.nodes.gmemory.state import TaskState
from mnemoflow.nodes.locks import keyed_lock
from mnemoflow.nodes.registry import node

__all__ = ["LearnConfig"]


class LearnConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    score: int = Field(2, ge=1, le=10, description="The credit a new lesson starts with (a revision's ADD gives 2).")


async def _lesson(state: TaskState, context: RunContext, errors: list[str]) -> str:
    """The task's lesson from the model; empty (and an entry in ``errors``) when the reply cannot be read."""
    status = "resolved" if state.success else "failed"
    messages = lesson_messages(
        state.task,
        f"{status}. {state.feedback}".strip(),
        state.key_steps,
        state.fail_reason,
        kept_trajectory(state.messages, state.steps),
    )
    try:
        text = " ".join((await context.llm.structured(messages, Lesson, temperature=TEMPERATURE)).text.split())
    except LLMOutputError as exc:
        context.log.warning("gmemory.lesson_unreadable", query=state.query_id, error=str(exc))
        errors.append(f"gmemory.learn: the lesson could not be read, so the task taught no insight: {exc}")
        return ""
    if not text:
        errors.append("gmemory.learn: the lesson was empty, so the task taught no insight")
    return text


@node(
    "gmemory.learn",
    state=TaskState,
    reads={
        "task", "query_id", "success", "feedback", "messages", "steps", "key_steps", "fail_reason", "insights", "evolution", "errors",
    },
    writes={"evolution", "errors"},
    config=LearnConfig,
)
async def learn(state: TaskState, config: LearnConfig, context: RunContext) -> dict[str, Any]:
    """The paper's insight tier: the task's lesson, INFORMED and DERIVED_FROM links."""
    store, namespace, qid = context.store, context.namespace, state.query_id
    if not qid:  # nothing was recorded: there is no query to link
        return state.with_evolution("learn", {"insight": None, "informed": [], "derived_from": []})
    lesson_id = learned_insight_id(namespace, qid)
    [existing] = await store.get_nodes(namespace, [lesson_id])
    errors = list(state.errors)
    text = (existing.text or "") if existing is not None else await _lesson(state, context, errors)
    async with keyed_lock("gmemory", namespace):
        given = list(dict.fromkeys(i.id for i in state.insights))
        found = await store.get_nodes(namespace, given)
        used = [i for i, record in zip(given, found, strict=True) if record is not None and record.kind == INSIGHT]
        relationships = [
            RelationshipRecord(namespace=namespace, type=INFORMED, source_id=i, target_id=qid, properties={"rank": rank})
            for rank, i in enumerate(used, 1)
        ]
        derived = [i for i in used if i != lesson_id]  # a replay may have been handed its own lesson
        if text:
            source = f"learned:{qid}"
            nodes: list[NodeRecord] = []
            if existing is None:
                created = await store.count_nodes(namespace, INSIGHT) + 1
                nodes.append(
                    new_insight(namespace, lesson_id, text, score=config.score, created_order=created, source=source, query_id=qid)
                )
            credit, credits_link = credit_record(namespace, source, lesson_id, config.score, "learned")
            await store.upsert_nodes([*nodes, credit])
            relationships += [credits_link, *insight_links(namespace, SUPPORTED_BY, lesson_id, [qid])]
            relationships += [
                RelationshipRecord(
                    namespace=namespace, type=DERIVED_FROM, source_id=lesson_id, target_id=i, properties={"via_query": qid}
                )
                for i in derived
            ]
        if relationships:
            await store.upsert_relationships(relationships)
        scores = await rescore(store, namespace, [lesson_id]) if text else {}
    report = {
        "insight": lesson_id if text else None,
        "new": bool(text) and existing is None,
        "text": text,
        "score": scores.get(lesson_id, {}).get("score"),
        "informed": used,
        "derived_from": derived if text else [],
    }
    return {**state.with_evolution("learn", report), "errors": errors}
