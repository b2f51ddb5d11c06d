"""What TME keeps in the store: one record per conversation, per task node, per version of a node, per turn.

The contract between a turn (which loads a conversation and saves what it changed) and anything that inspects a
conversation. Every id is a stable id of the namespace, the kind, the session id and the record's identity within
the session, so a retried save rewrites the same records instead of adding new ones.

- ``TmeSession``: ``{session, turns, nodes, identity}``; text = "conversation <session>". ``turns`` counts the
  turns saved, ``nodes`` lists the keys of every task node of the conversation (removed ones too), sorted: what a
  load reads. ``identity`` is ``"task"`` since steps are scoped by task (keys ``task/slot``); a session record
  without it was saved by earlier code, whose keys are slot keys alone and whose node ids are
  :func:`legacy_task_node_id`'s (a load reads those and re-keys the nodes by task; the next save writes them
  under their new ids). Id from (namespace, session).
- ``TaskNode``: ``{session, task_key, slot, value, status: active|removed|replaced, stale, version, task}``; text =
  "slot: value". ``task`` is the whole node as the forest keeps it (task, parent, dependencies, stale reason, the
  history of earlier values with turn and reason, the child-changed flags); the other properties repeat its
  fields for browsing and search. ``(:TaskNode)-[:CHILD_OF]->(:TaskNode)`` from a step to its parent,
  ``(:TaskNode)-[:DEPENDS_ON]->(:TaskNode)`` from a node to each node it needs, ``(:TaskNode)-[:REPLACED_BY
  {turn}]->(:TaskNode)`` from a step swapped for another to its replacement. Id from (namespace, session, the
  task's key, the slot's key; an empty slot key for the task root itself).
- ``TaskNodeVersion``: ``{session, node, key, version, slot, value, turn, reason}``; text = "slot v<version>: value".
  One per version of a node: the value it held, the turn it was set and why ("created", "updated", "reverted",
  "removed", "restored", "re-derived", "replaced by ..."). ``(:TaskNode)-[:HAS_VERSION]->(:TaskNodeVersion)`` and
  ``(:TaskNodeVersion)-[:PREV]->(:TaskNodeVersion)`` to the version before. Written for every node the turn
  changed (its whole chain, idempotently). Id from (namespace, session, task key, slot key, version).
- ``TmeTurn``: ``{session, turn, utterance, decomposition, operations, changes, stale, errors, prompt, response,
  run_id, attempts, saved_by}``; text = the utterance. ``turn`` is its number in the session, from 1; ``prompt`` is
  what the answer step saw; ``attempts`` counts the times the turn ran (more than 1: another turn of the session
  was saved while it ran, and it started over on the new state); ``saved_by`` is the run's thread and attempt
  (``<thread>/<attempt>``), so a resumed run repeating its save recognises its own turn.
  ``(:TmeTurn)-[:TURN_OF]->(:TmeSession)``. Id from (namespace, session, turn number).

A turn's task nodes, its turn record and the session record are written in one upsert (one transaction), the
turn record claimed as new: a turn is saved whole or not at all, and of two turns saved on the same number only
the first is; the version records of the nodes the turn changed are in the same upsert. The links are written
after, for browsing (each repeats what the records' properties hold); a load reads only the session's and the
nodes' properties.
"""

from __future__ import annotations

from mnemoflow.memory.names import REGISTRY
from mnemoflow.memory.records import stable_id

__all__ = [
    "CHILD_OF",
    "DEPENDS_ON",
    "HAS_VERSION",
    "IDENTITY",
    "PREV",
    "REPLACED_BY",
    "SESSION",
    "TASK_NODE",
    "TURN",
    "TURN_OF",
    "VERSION",
    "legacy_task_node_id",
    "session_record_id",
    "task_node_id",
    "turn_record_id",
    "version_record_id",
]

SESSION, TASK_NODE, VERSION, TURN = "TmeSession", "TaskNode", "TaskNodeVersion", "TmeTurn"
CHILD_OF, DEPENDS_ON, TURN_OF = "CHILD_OF", "DEPENDS_ON", "TURN_OF"
HAS_VERSION, PREV, REPLACED_BY = "HAS_VERSION", "PREV", "REPLACED_BY"
IDENTITY = "task"
"""The session record's ``identity`` since steps are scoped by task."""

REGISTRY.register_kind(SESSION, description="A TME conversation: its session id and how many turns it has had.")
REGISTRY.register_kind(TASK_NODE, description="A TME task or step: slot, current value, status, version history.")
REGISTRY.register_kind(VERSION, description="One version of a TME task node: its value, the turn and the reason.")
REGISTRY.register_kind(TURN, description="One TME turn: the utterance, its operations, the answer prompt and reply.")
for relationship in (CHILD_OF, DEPENDS_ON, TURN_OF, HAS_VERSION, PREV, REPLACED_BY):
    REGISTRY.register_relationship(relationship)


def session_record_id(namespace: str, session: str) -> str:
    return stable_id(namespace, SESSION, session)


def task_node_id(namespace: str, session: str, key: str) -> str:
    """The task node of forest key ``key`` (``task`` for a task root, ``task/slot`` for a step; see
    :func:`mnemoflow.nodes.tme.forest.node_key`): an id of (namespace, session, task, slot)."""
    task, _, slot = key.partition("/")
    return stable_id(namespace, TASK_NODE, session, task, slot)


def legacy_task_node_id(namespace: str, session: str, key: str) -> str:
    """The id a task node of slot key ``key`` had before steps were scoped by task (one step per slot name)."""
    return stable_id(namespace, TASK_NODE, session, key)


def version_record_id(namespace: str, session: str, key: str, version: int) -> str:
    """Version ``version`` (from 1) of the task node of forest key ``key``."""
    task, _, slot = key.partition("/")
    return stable_id(namespace, VERSION, session, task, slot, version)


def turn_record_id(namespace: str, session: str, turn: int) -> str:
    """Turn number ``turn`` (from 1) of a session."""
    return stable_id(namespace, TURN, session, turn)
