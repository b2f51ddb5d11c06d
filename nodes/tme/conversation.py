"""A conversation's task memory in the store: load it, and save one turn of it.

The records, their properties and ids are :mod:`mnemoflow.nodes.tme.model`'s. A turn's task nodes, its turn
record and the session record are written in one upsert (one transaction): a turn is saved whole or not at all,
and a turn that loaded a conversation another turn has moved on since is refused, not merged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mnemoflow.errors import ConflictError
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import NodeRecord, RelationshipRecord
from mnemoflow.nodes.tme.forest import Forest, TaskNode
from mnemoflow.nodes.tme.model import (
    CHILD_OF,
    DEPENDS_ON,
    SESSION,
    TASK_NODE,
    TURN,
    TURN_OF,
    session_record_id,
    task_node_id,
    turn_record_id,
)

__all__ = ["Conversation", "SessionConflictError", "load_conversation", "save_turn"]


class SessionConflictError(ConflictError):
    """Another turn of the same session was saved while this one ran; this turn's changes were not saved."""

    code = "tme-session-conflict"


@dataclass(frozen=True)
class Conversation:
    """A session as loaded: its forest and the number of turns saved so far."""

    session: str
    turns: int
    forest: Forest


async def load_conversation(store: GraphStore, namespace: str, session: str) -> Conversation:
    """The conversation of ``session`` as saved by its last turn (no turns and an empty forest for a new session)."""
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
        kind=SESSION,
        text=f"conversation {session}",
        properties={"session": session, "turns": number, "nodes": sorted(forest.nodes)},
    )
    task_records = [
        NodeRecord(
            id=task_node_id(namespace, session, key),
            namespace=namespace,
            kind=TASK_NODE,
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
        kind=TURN,
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
        RelationshipRecord(namespace=namespace, type=TURN_OF, source_id=turn_record.id, target_id=session_record.id),
        *(
            RelationshipRecord(namespace=namespace, type=CHILD_OF, source_id=task_node_id(namespace, session, key), target_id=task_node_id(namespace, session, node.parent))
            for key, node in forest.nodes.items()
            if node.parent is not None
        ),
        *(
            RelationshipRecord(namespace=namespace, type=DEPENDS_ON, source_id=task_node_id(namespace, session, key), target_id=task_node_id(namespace, session, dependency))
            for key, node in forest.nodes.items()
            for dependency in node.depends_on
        ),
    ]
    await store.upsert_relationships(links)
