"""What TME keeps in the store: one record per conversation, one per task node, one per turn.

The contract between a turn (which loads a conversation and saves what it changed) and anything that inspects a
conversation. Every id is a stable id of the namespace, the kind, the session id and the record's identity within
the session, so a retried save rewrites the same records instead of adding new ones.

- ``TmeSession``: ``{session, turns, nodes}``; text = "conversation <session>". ``turns`` counts the turns saved,
  ``nodes`` lists the keys of every task node of the conversation (removed ones too), sorted: what a load reads.
  Id from (namespace, session).
- ``TaskNode``: ``{session, slot, value, status: active|removed, stale, version, task}``; text = "slot: value".
  ``task`` is the whole node as the forest keeps it (parent, dependencies, stale reason, the history of earlier
  values with turn and reason); the other properties repeat its fields for browsing and search.
  ``(:TaskNode)-[:CHILD_OF]->(:TaskNode)`` from a step to its task, ``(:TaskNode)-[:DEPENDS_ON]->(:TaskNode)``
  from a node to each node it needs. Id from (namespace, session, the slot's key: lower case, single spaces).
- ``TmeTurn``: ``{session, turn, utterance, decomposition, operations, changes, stale, errors, prompt, response,
  run_id}``; text = the utterance. ``turn`` is its number in the session, from 1; ``prompt`` is what the answer
  step saw. ``(:TmeTurn)-[:TURN_OF]->(:TmeSession)``. Id from (namespace, session, turn number).

A turn's task nodes, its turn record and the session record are written in one upsert (one transaction), the
turn record claimed as new: a turn is saved whole or not at all, and of two turns saved on the same number only
the first is. The links are written after, for browsing; a load reads only the session's and the nodes'
properties.
"""

from __future__ import annotations

from mnemoflow.memory.names import REGISTRY
from mnemoflow.memory.records import stable_id

__all__ = [
    "CHILD_OF",
    "DEPENDS_ON",
    "SESSION",
    "TASK_NODE",
    "TURN",
    "TURN_OF",
    "session_record_id",
    "task_node_id",
    "turn_record_id",
]

SESSION, TASK_NODE, TURN = "TmeSession", "TaskNode", "TmeTurn"
CHILD_OF, DEPENDS_ON, TURN_OF = "CHILD_OF", "DEPENDS_ON", "TURN_OF"

REGISTRY.register_kind(SESSION, description="A TME conversation: its session id and how many turns it has had.")
REGISTRY.register_kind(TASK_NODE, description="A TME task or step: slot, current value, status, version history.")
REGISTRY.register_kind(TURN, description="One TME turn: the utterance, its operations, the answer prompt and reply.")
for relationship in (CHILD_OF, DEPENDS_ON, TURN_OF):
    REGISTRY.register_relationship(relationship)


def session_record_id(namespace: str, session: str) -> str:
    return stable_id(namespace, SESSION, session)


def task_node_id(namespace: str, session: str, key: str) -> str:
    """The task node of slot key ``key`` (see :func:`mnemoflow.nodes.tme.forest.slot_key`) in a session."""
    return stable_id(namespace, TASK_NODE, session, key)


def turn_record_id(namespace: str, session: str, turn: int) -> str:
    """Turn number ``turn`` (from 1) of a session."""
    return stable_id(namespace, TURN, session, turn)
