"""What G-Memory keeps in the store: the query graph, the interaction graphs and the insight graph.

The contract between retrieval, evolution and anything that inspects them. Every id is a stable id, so a retried
or resumed step never duplicates a record.

- ``GQuery`` (embedded: the task text): ``{task, status: resolved|failed, order, key_steps, fail_reason,
  trajectory}``; one per finished task (its run), not per task text, so two tasks with the same text stay two.
  ``(:GQuery)-[:SIMILAR {weight}]->(:GQuery)`` links a new query to earlier ones with cosine >= the threshold.
- ``GUtterance``: ``{query_id, order, round, speaker, addressee, message}``; text = message.
  ``(:GQuery)-[:HAS_UTTERANCE]->(:GUtterance)``, ``(:GUtterance)-[:NEXT]->(:GUtterance)`` in order,
  ``(:GUtterance)-[:REPLY_TO]->(:GUtterance)`` from an utterance to the last one its speaker received.
- ``GInsight``: ``{text, status: active|pruned|merged, score, created_order}``; text = the rule.
  ``(:GInsight)-[:SUPPORTED_BY]->(:GQuery)``, ``(:GInsight)-[:CONTRADICTED_BY]->(:GQuery)``,
  ``(:GQuery)-[:USED_INSIGHT {rank}]->(:GInsight)``, ``(:GInsight)-[:MERGED_INTO]->(:GInsight)``.
- ``GCredit``: ``{insight_id, delta, reason, source}``; ``(:GCredit)-[:CREDITS]->(:GInsight)``. An insight's score
  is the sum of its credits: one record per (source, insight), so a credit retried or replayed counts once,
  and concurrent tasks never overwrite each other's. ``score`` on the insight is a cache of that sum.
- ``GMilestone``: ``{name}``; claimed as new by the task that reaches it (``revision-5``, ``merge-20``), so a
  periodic revision or merge runs exactly once however many tasks finish together.
"""

from __future__ import annotations

from mnemoflow.memory.names import REGISTRY
from mnemoflow.memory.records import stable_id

__all__ = [
    "INSIGHT",
    "QUERY",
    "UTTERANCE",
    "credit_id",
    "insight_id",
    "milestone_id",
    "query_id",
    "utterance_id",
]

QUERY, UTTERANCE, INSIGHT, CREDIT, MILESTONE = "GQuery", "GUtterance", "GInsight", "GCredit", "GMilestone"

REGISTRY.register_kind(QUERY, embedded=True, description="G-Memory: a finished task, its outcome and key steps.")
REGISTRY.register_kind(UTTERANCE, description="G-Memory: one message of a team's interaction on a task.")
REGISTRY.register_kind(INSIGHT, description="G-Memory: a lesson learned across tasks, scored by how it fared.")
REGISTRY.register_kind(CREDIT, description="G-Memory: one change of an insight's score, by a task or a revision.")
REGISTRY.register_kind(MILESTONE, description="G-Memory: a periodic revision or merge, claimed once.")
for relationship in ("SIMILAR", "HAS_UTTERANCE", "REPLY_TO", "SUPPORTED_BY", "CONTRADICTED_BY", "USED_INSIGHT", "MERGED_INTO", "CREDITS"):
    REGISTRY.register_relationship(relationship)


def query_id(namespace: str, task_key: str) -> str:
    return stable_id(namespace, QUERY, task_key)


def utterance_id(namespace: str, query: str, order: int) -> str:
    return stable_id(namespace, UTTERANCE, query, order)


def insight_id(namespace: str, text: str) -> str:
    return stable_id(namespace, INSIGHT, " ".join(text.lower().split()))


def credit_id(namespace: str, source: str, insight: str) -> str:
    return stable_id(namespace, CREDIT, source, insight)


def milestone_id(namespace: str, name: str) -> str:
    return stable_id(namespace, MILESTONE, name)
