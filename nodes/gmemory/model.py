"""What G-Memory keeps in the store: the query graph, the interaction graphs and the insight graph.

The contract between retrieval, evolution and anything that inspects them. Every id is a stable id (a hash of the
namespace, the kind and the parts named below), so a retried or resumed step never duplicates a record.

Query graph (one record per finished task):

- ``GQuery`` (embedded: the task text): ``{task, task_key, status: resolved|failed, order, feedback, key_steps,
  fail_reason, trajectory}``; text = the task. ``order`` numbers the namespace's queries from 1 as they are
  recorded; ``key_steps`` is a list of lines, ``fail_reason`` the likely mistake of a failure (else empty),
  ``trajectory`` the interaction as ``speaker -> addressee: message`` lines (with steps: the kept rounds' messages,
  each kept step's observation as an ``environment -> <speaker>`` line after its action).
  Id from (namespace, ``task_key``), the task key being the run's thread id unless the input names one: one
  query per finished task (its run), not per task text, so two tasks with the same text stay two, and a resumed
  run rewrites its own query.
- ``(:GQuery)-[:SIMILAR {weight}]->(:GQuery)`` links a new query to earlier ones (lower ``order``) whose cosine
  is at or above the threshold; ``weight`` is that cosine.

Interaction graph of a query:

- ``GUtterance``: ``{query_id, order, round, speaker, addressee, message}``; text = message.
  Id from (namespace, the query's id, ``order``), ``order`` counting the task's messages from 1.
- ``(:GQuery)-[:HAS_UTTERANCE {order}]->(:GUtterance)``, ``(:GUtterance)-[:NEXT]->(:GUtterance)`` in order,
  ``(:GUtterance)-[:REPLY_TO]->(:GUtterance)`` from an utterance to the last one its speaker received.
- ``GStep``: ``{query_id, number, round, action, observation, reward, kept}``; text = the action. One per
  environment step of the task, ``number`` from 1; ``reward`` 1 (goal reached), 0, or -1 (nothing happened:
  an empty or repeated action); ``kept`` is false for a negative reward: the step is stored for audit but left
  out of the query's ``trajectory`` and key steps. Id from (namespace, the query's id, ``number``).
  ``(:GQuery)-[:HAS_STEP {number}]->(:GStep)``, ``(:GStep)-[:NEXT]->(:GStep)`` in order. A task whose team
  wrote no steps has none.
- A task with steps gives each ``GUtterance`` ``kept``: false for the messages of a round whose steps all had
  a negative reward (left out of the trajectory and of condensed interactions), else true.

Insight graph:

- ``GInsight``: ``{text, status: active|pruned|merged, score, created_order, source}``; text = the rule.
  An edited insight also keeps ``history`` (``[{text, source}]``, its earlier texts); a consolidated one
  ``merged_from`` (the ids it replaces), and each insight it replaced ``merged_into`` (its id).
  Id from (namespace, the rule's text, lowercased, whitespace collapsed), so the same rule added twice is one
  record; a consolidated insight's id is from (namespace, ``merge-<n>``, the cluster batch's key, the text), so
  a merge run again writes the same record. The lesson learned from a task (``source`` ``learned:<query id>``,
  plus ``query_id``) has its id from (namespace, ``learned``, the query's id): one per task, whatever its text,
  so a replayed task keeps the lesson it learned first.
- ``(:GInsight)-[:SUPPORTED_BY]->(:GQuery)``, ``(:GInsight)-[:CONTRADICTED_BY]->(:GQuery)``,
  ``(:GInsight)-[:MERGED_INTO]->(:GInsight)``.
- ``(:GInsight)-[:INFORMED {rank}]->(:GQuery)``: the insight was handed to the team of that task, ``rank`` its
  place in the list (the paper's edge). Queries recorded before it existed carry the same fact the other way,
  ``(:GQuery)-[:USED_INSIGHT {rank}]->(:GInsight)``; readers take both.
- ``(:GInsight)-[:DERIVED_FROM {via_query}]->(:GInsight)``: the lesson learned from query ``via_query`` was
  derived with the other insight in hand (it was handed to that task): the paper's hyperedge (iota_m, iota_n, q).
- ``GCredit``: ``{insight_id, delta, reason, source}``; ``(:GCredit)-[:CREDITS]->(:GInsight)``. An insight's score
  is the sum of its credits. Id from (namespace, source, insight): one record per (source, insight), the source
  being the task's query id, ``revision-<n>:<call>:<operation>`` or ``merge-<n>``, so a credit retried or
  replayed counts once, and concurrent tasks never overwrite each other's. ``score`` on the insight is a cache
  of that sum; an active insight whose sum falls to 0 or below becomes ``pruned``.

Periodic work:

- ``GMilestone``: ``{name, status: claimed|done, report}``; ``name`` is ``revision-<n>`` or ``merge-<n>`` (the
  query count reached). Id from (namespace, name). Written as new (a claim) by the task that reaches it, so a
  periodic revision or merge runs exactly once however many tasks finish together; ``done`` with its report.
"""

from __future__ import annotations

from mnemoflow.memory.names import REGISTRY
from mnemoflow.memory.records import stable_id

__all__ = [
    "CONTRADICTED_BY",
    "CREDIT",
    "CREDITS",
    "DERIVED_FROM",
    "HAS_STEP",
    "HAS_UTTERANCE",
    "INFORMED",
    "INSIGHT",
    "MERGED_INTO",
    "MILESTONE",
    "NEXT",
    "QUERY",
    "REPLY_TO",
    "SIMILAR",
    "STEP",
    "SUPPORTED_BY",
    "USED_INSIGHT",
    "UTTERANCE",
    "credit_id",
    "insight_id",
    "learned_insight_id",
    "merged_insight_id",
    "milestone_id",
    "query_id",
    "step_id",
    "utterance_id",
]

QUERY, UTTERANCE, INSIGHT, CREDIT, MILESTONE = "GQuery", "GUtterance", "GInsight", "GCredit", "GMilestone"
SIMILAR, HAS_UTTERANCE, REPLY_TO = "SIMILAR", "HAS_UTTERANCE", "REPLY_TO"
SUPPORTED_BY, CONTRADICTED_BY, USED_INSIGHT, MERGED_INTO, CREDITS = (
    "SUPPORTED_BY",
    "CONTRADICTED_BY",
    "USED_INSIGHT",
    "MERGED_INTO",
    "CREDITS",
)
STEP, HAS_STEP = "GStep", "HAS_STEP"
INFORMED, DERIVED_FROM = "INFORMED", "DERIVED_FROM"
NEXT = "NEXT"
"""Registered by the memory layer for every mechanism."""

REGISTRY.register_kind(QUERY, embedded=True, description="G-Memory: a finished task, its outcome and key steps.")
REGISTRY.register_kind(UTTERANCE, description="G-Memory: one message of a team's interaction on a task.")
REGISTRY.register_kind(INSIGHT, description="G-Memory: a lesson learned across tasks, scored by how it fared.")
REGISTRY.register_kind(CREDIT, description="G-Memory: one change of an insight's score, by a task or a revision.")
REGISTRY.register_kind(MILESTONE, description="G-Memory: a periodic revision or merge, claimed once.")
REGISTRY.register_kind(STEP, description="G-Memory: one environment step of a task: action, observation, reward.")
for relationship in (
    SIMILAR,
    HAS_UTTERANCE,
    HAS_STEP,
    REPLY_TO,
    SUPPORTED_BY,
    CONTRADICTED_BY,
    USED_INSIGHT,
    MERGED_INTO,
    CREDITS,
    INFORMED,
    DERIVED_FROM,
):
    REGISTRY.register_relationship(relationship)


def _rule_key(text: str) -> str:
    return " ".join(text.lower().split())


def query_id(namespace: str, task_key: str) -> str:
    """The query of the task ``task_key`` names (the run's thread id unless the input gives a key)."""
    return stable_id(namespace, QUERY, task_key)


def utterance_id(namespace: str, query: str, order: int) -> str:
    """The ``order``-th message (from 1) of the task whose query id is ``query``."""
    return stable_id(namespace, UTTERANCE, query, order)


def step_id(namespace: str, query: str, number: int) -> str:
    """The ``number``-th environment step (from 1) of the task whose query id is ``query``."""
    return stable_id(namespace, STEP, query, number)


def insight_id(namespace: str, text: str) -> str:
    """The insight stating ``text`` (case and spacing do not matter)."""
    return stable_id(namespace, INSIGHT, _rule_key(text))


def learned_insight_id(namespace: str, query: str) -> str:
    """The lesson learned from the task whose query id is ``query`` (one per task, whatever its text)."""
    return stable_id(namespace, INSIGHT, "learned", query)


def merged_insight_id(namespace: str, merge: int, key: str, text: str) -> str:
    """The insight that merge ``merge-<merge>`` writes for cluster batch ``key`` with ``text``."""
    return stable_id(namespace, INSIGHT, f"merge-{merge}", key, _rule_key(text))


def credit_id(namespace: str, source: str, insight: str) -> str:
    """The one credit ``source`` (a query id, a revision operation or a merge) gives ``insight``."""
    return stable_id(namespace, CREDIT, source, insight)


def milestone_id(namespace: str, name: str) -> str:
    """The milestone ``name`` (``revision-<n>`` or ``merge-<n>``)."""
    return stable_id(namespace, MILESTONE, name)
