"""A conversation's task memory in the store: its session record, its task nodes and its turns.

One session per (namespace, session id). Task nodes are ``TaskNode`` records (their parent and dependency
links also as ``CHILD_OF`` and ``DEPENDS_ON`` relationships, for browsing); each turn is a ``TmeTurn`` record
with the utterance, the operations, the prompt the answer step saw and the reply. A turn's nodes, its turn
record and the session record are written in one upsert (one transaction): a turn is saved whole or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mnemoflow.errors import ConflictError, MnemoflowError
from mnemoflow.memory.names import REGISTRY
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import NodeRecord, RelationshipRecord, stable_id
from mnemoflow.nodes.tme.forest import Forest, TaskNode

__all__ = ["Conversation", "SessionConflictError", "load_conversation", "save_turn", "session_record_id", "task_node_id", "turn_record_id"]

REGISTRY.register_kind("TmeSession", description="A TME conversation: its session id and how many turns it has had.")
REGISTRY.register_kind("TaskNode", description="A TME task or step: slot, current value, status, version history.")
REGISTRY.register_kind("TmeTurn", description="One TME turn: the utterance, its operations, the answer prompt and reply.")
REGISTRY.register_relationship("CHILD_OF")
REGISTRY.register_relationship("DEPENDS_ON")
REGISTRY.register_relationship("TURN_OF")


def session_record_id(namespace: str, session: str) -> str:
    return stable_id(namespace, "TmeSession", session)


def task_node_id(namespace: str, session: str, key: str) -> str:
    return stable_id(namespace, "TaskNode", session, key)


def turn_record_id(namespace: str, session: str, turn: int) -> str:
    return stable_id(namespace, "TmeTurn", session, turn)


class SessionConflictError(MnemoflowError):
    """Another turn of the same session was saved while this one ran; this turn's changes were not saved."""


@dataclass(frozen=True)
class Conversation:
    """A session as loaded: its forest and the number of turns saved so far."""

    session: str
    turns: int
    forest: Forest


async def load_conversation(store: GraphStore, namespace: str, session: str) -> Conversation:
    [record] = await store.get_nodes(namespace, [session_record_id(namespace, session)])
    if record is None:
        return Conversation(session, 0, Forest())
    keys: list[str] = list(record.properties.get("nodes", []))
    found = await store.get_nodes(namespace, [task_node_id(namespace, session, key) for key in keys])
    nodes = {key: TaskNode.model_validate(node.properties["task"]) for key, node in zip(keys, found, strict=True) if node is not None}
    return Conversation(session, int(record.properties.get("turns", 0)), Forest(nodes=nodes))


async def save_turn(
    store: GraphStore, namespace: str, session: str, *, expected_turns: int, forest: Forest, turn: dict[str, Any]
) -> None:
    """Write the turn, the forest and the session in one transaction; refused when another turn of the session
    was saved since this one loaded (the turn record of the next number is claimed as new: one save wins)."""
    number = expected_turns + 1
    session_record = NodeRecord(
        id=session_record_id(namespace, session),
        namespace=namespace,
        kind="TmeSession",
        text=f"conversation {session}",
        properties={"session": session, "turns": number, "nodes": sorted(forest.nodes)},
    )
    task_records = [
        NodeRecord(
            id=task_node_id(namespace, session, key),
            namespace=namespace,
            kind="TaskNode",
            text=f"{node.slot}: {node.value or ''}",
            properties={
                "session": session, "slot": node.slot, "value": node.value, "status": node.status, "stale": node.stale,
                "version": node.version, "task": node.model_dump(mode="json"),
            },
        )
        for key, node in forest.nodes.items()
    ]
    turn_record = NodeRecord(
        id=turn_record_id(namespace, session, number),
        namespace=namespace,
        kind="TmeTurn",
        text=str(turn.get("utterance", "")),
        properties={"session": session, "turn": number, **turn},
    )
    try:
        await store.upsert_nodes([session_record, turn_record, *task_records], new=[turn_record.id])
    except ConflictError as exc:
        raise SessionConflictError(
            f"session {session!r} moved on while this turn (based on turn {expected_turns}) ran: turn {number} was saved "
            "by another; this turn's changes were not saved: send the message again"
        ) from exc
    links = [
        RelationshipRecord(namespace=namespace, type="TURN_OF", source_id=turn_record.id, target_id=session_record.id),
        *(
            RelationshipRecord(namespace=namespace, type="CHILD_OF", source_id=task_node_id(namespace, session, key), target_id=task_node_id(namespace, session, node.parent))
            for key, node in forest.nodes.items()
            if node.parent is not None
        ),
        *(
            RelationshipRecord(namespace=namespace, type="DEPENDS_ON", source_id=task_node_id(namespace, session, key), target_id=task_node_id(namespace, session, dependency))
            for key, node in forest.nodes.items()
            for dependency in node.depends_on
        ),
    ]
    await store.upsert_relationships(links)
