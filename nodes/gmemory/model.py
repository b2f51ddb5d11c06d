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
  run rewrites its own query (and keeps its ``order``).
- ``GQueryOrder``: ``{order, query_id}``; text = the query's id. The claim of one ``order`` number: written as new
  in the same transaction as the query that takes the number, so two processes recording at once never give two
  queries one number (the loser of a number tries the next). Id from (namespace, ``order``). Numbers may have
  gaps (a number claimed by a query that another process rewrote at the same moment); nothing reads them as a
  count. Queries recorded before these claims existed have none; new numbers start above them.
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

- ``GMilestone``: ``{name, status: running|done, generation, owner, since, finished, report}``; ``name`` is
  ``revision-<n>`` or ``merge-<n>`` (the query count reached). Id from (namespace, name). What the milestone's
  claim (below) is doing, for readers: ``running`` since ``since`` (epoch seconds) by ``owner`` (the run and
  process) under claim ``generation``, then ``done`` at ``finished`` with its ``report``. A work that failed or
  was killed leaves it ``running`` until a later task takes it over. Versions before the claims wrote
  ``{name, status: claimed}`` (and ``done`` with its report); a ``claimed`` milestone without a claim is abandoned.
- ``GMilestoneClaim``: the milestone's claim with a lease (:mod:`mnemoflow.nodes.leases`): ``{milestone,
  generation, run_id, host, pid, started, claimed_at, renewed_at, released, took_over}``; text = the milestone's
  name. Id from (namespace, name, generation), generations from 1. The task that reaches a milestone writes the
  next generation as new, so of tasks taking it at once exactly one runs it; its owner renews ``renewed_at`` while
  the work runs and releases it when the work ends. A milestone not ``done`` whose owner is gone (released after
  a failure, its process dead, or silent for the lease) is taken over and run again by the next task that
  reaches it; a ``done`` one never runs again.
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
    "MILESTONE_CLAIM",
    "NEXT",
    "ORDER",
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
    "milestone_claim_id",
    "milestone_id",
    "order_id",
    "query_id",
    "step_id",
    "utterance_id",
]

QUERY, UTTERANCE, INSIGHT, CREDIT, MILESTONE = "GQuery", "GUtterance", "GInsight", "GCredit", "GMilestone"
ORDER, MILESTONE_CLAIM = "GQueryOrder", "GMilestoneClaim"
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
REGISTRY.register_kind(MILESTONE, description="G-Memory: a periodic revision or merge: running or done, and its report.")
REGISTRY.register_kind(MILESTONE_CLAIM, description="G-Memory: which run, in which process, runs a milestone (one generation).")
REGISTRY.register_kind(ORDER, description="G-Memory: the claim of one query number (order), by the query that took it.")
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


def milestone_claim_id(namespace: str, name: str, generation: int) -> str:
    """Generation ``generation`` (from 1) of milestone ``name``'s claim."""
    return stable_id(namespace, MILESTONE_CLAIM, name, generation)


def order_id(namespace: str, order: int) -> str:
    """The claim of query number ``order`` (from 1)."""
    return stable_id(namespace, ORDER, order)
