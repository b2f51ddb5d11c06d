"""A conversation's task memory in the store: load it, and save one turn of it.

The records, their properties and ids are :mod:`mnemoflow.nodes.tme.model`'s. A turn's task nodes, the version
records of the nodes it changed, its turn record and the session record are written in one upsert (one
transaction): a turn is saved whole or not at all, and a turn that loaded a conversation another turn has moved
on since is refused, not merged (the ``tme-turn`` graph then starts that turn over on the new state).

A conversation saved before steps were scoped by task (slot-keyed nodes) loads re-keyed by task
(:func:`forest_from_records`); its first save writes the nodes under their new ids and deletes the old records.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mnemoflow.errors import ConflictError
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import NodeRecord, RelationshipRecord
from mnemoflow.nodes.tme.forest import Forest, HistoryEntry, TaskNode, node_key
from mnemoflow.nodes.tme.model import (
    CHILD_OF,
    DEPENDS_ON,
    HAS_VERSION,
    IDENTITY,
    PREV,
    REPLACED_BY,
    SESSION,
    TASK_NODE,
    TURN,
    TURN_OF,
    VERSION,
    legacy_task_node_id,
    session_record_id,
    task_node_id,
    turn_record_id,
    version_record_id,
)

__all__ = [
    "Conversation",
    "SessionConflictError",
    "forest_from_records",
    "load_conversation",
    "node_record_ids",
    "save_turn",
    "versions",
]


class SessionConflictError(ConflictError):
    """Another turn of the same session was saved while this one ran; this turn's changes were not saved."""

    code = "tme-session-conflict"


@dataclass(frozen=True)
class Conversation:
    """A session as loaded: its forest and the number of turns saved so far."""

    session: str
    turns: int
    forest: Forest


def node_record_ids(namespace: str, session: str, properties: Mapping[str, Any]) -> list[str]:
    """The ids of the task node records a session record lists, in the order of its ``nodes``: by task and slot,
    or by slot alone for a session saved before steps were scoped by task."""
    keys = [str(key) for key in properties.get("nodes", [])]
    derive = task_node_id if properties.get("identity") == IDENTITY else legacy_task_node_id
    return [derive(namespace, session, key) for key in keys]


def forest_from_records(properties: Mapping[str, Any], tasks: Sequence[dict[str, Any]]) -> Forest:
    """The forest of a session record's ``properties`` from its nodes' ``task`` properties; a session saved before
    steps were scoped by task is re-keyed: each node joins the task at the top of its parent chain."""
    nodes = [TaskNode.model_validate(task) for task in tasks]
    if properties.get("identity") == IDENTITY:
        return Forest(nodes={node.key: node for node in nodes})
    by_slot = {node.key: node for node in nodes}  # legacy keys: the slot's key alone, unique per session

    def root_of(key: str) -> str:
        seen = {key}
        while (parent := by_slot[key].parent) is not None and parent in by_slot and parent not in seen:
            seen.add(parent)
            key = parent
        return key

    tasks_of = {key: (None if root_of(key) == key else root_of(key)) for key in by_slot}
    new_key = {key: node_key(tasks_of[key], node.slot) for key, node in by_slot.items()}
    forest = Forest()
    for key, node in by_slot.items():
        forest.nodes[new_key[key]] = node.model_copy(
            update={
                "task": tasks_of[key],
                "parent": new_key.get(node.parent, node.parent) if node.parent is not None else None,
                "depends_on": [new_key.get(dep, dep) for dep in node.depends_on],
            }
        )
    return forest


async def load_conversation(store: GraphStore, namespace: str, session: str) -> Conversation:
    """The conversation of ``session`` as saved by its last turn (no turns and an empty forest for a new session)."""
    [record] = await store.get_nodes(namespace, [session_record_id(namespace, session)])
    if record is None:
        return Conversation(session, 0, Forest())
    found = await store.get_nodes(namespace, node_record_ids(namespace, session, record.properties))
    forest = forest_from_records(record.properties, [node.properties["task"] for node in found if node is not None])
    return Conversation(session, int(record.properties.get("turns", 0)), forest)


def versions(node: TaskNode) -> list[HistoryEntry]:
    """Every version of ``node``, first to current: the value it held, and the turn and reason it was set."""
    held = {entry.version: entry.value for entry in node.history}
    held[node.version] = node.value
    set_by = {entry.version + 1: (entry.turn, entry.reason) for entry in node.history}
    set_by[1] = (node.created_turn, "created")
    return [
        HistoryEntry(version=version, value=held[version], turn=set_by[version][0], reason=set_by[version][1])
        for version in sorted(held)
        if version in set_by
    ]


async def save_turn(
    store: GraphStore,
    namespace: str,
    session: str,
    *,
    expected_turns: int,
    forest: Forest,
    turn: dict[str, Any],
    saved_by: str | None = None,
) -> None:
    """Write the turn, the forest, the versions of what it changed and the session in one transaction; refused
    when another turn of the session was saved since this one loaded (the turn record of the next number is
    claimed as new: one save wins).

    ``saved_by`` names who saves (a run's thread and attempt) on the turn record, so that a save repeated by the
    same saver (a run resumed after it was killed between its save and its checkpoint) finds its own record and
    finishes instead of being refused: the turn is neither lost nor saved twice."""
    number = expected_turns + 1
    [before] = await store.get_nodes(namespace, [session_record_id(namespace, session)])
    session_record = NodeRecord(
        id=session_record_id(namespace, session),
        namespace=namespace,
        kind=SESSION,
        text=f"conversation {session}",
        properties={"session": session, "turns": number, "nodes": sorted(forest.nodes), "identity": IDENTITY},
    )
    ids = {key: task_node_id(namespace, session, key) for key in forest.nodes}
    task_records = [
        NodeRecord(
            id=ids[key],
            namespace=namespace,
            kind=TASK_NODE,
            text=f"{node.slot}: {node.value or ''}",
            properties={
                "session": session,
                "task_key": node.task_key,
                "slot": node.slot,
                "value": node.value,
                "status": node.status,
                "stale": node.stale,
                "version": node.version,
                "task": node.model_dump(mode="json"),
            },
        )
        for key, node in forest.nodes.items()
    ]
    changed = {key: versions(node) for key, node in forest.nodes.items() if node.updated_turn == number}
    version_records = [
        NodeRecord(
            id=version_record_id(namespace, session, key, entry.version),
            namespace=namespace,
            kind=VERSION,
            text=f"{forest.nodes[key].slot} v{entry.version}: {entry.value or ''}",
            properties={"session": session, "node": ids[key], "key": key, "slot": forest.nodes[key].slot, **entry.model_dump()},
        )
        for key, chain in changed.items()
        for entry in chain
    ]
    turn_record = NodeRecord(
        id=turn_record_id(namespace, session, number),
        namespace=namespace,
        kind=TURN,
        text=str(turn.get("utterance", "")),
        properties={"session": session, "turn": number, **turn, **({"saved_by": saved_by} if saved_by else {})},
    )
    try:
        await store.upsert_nodes([session_record, turn_record, *task_records, *version_records], new=[turn_record.id])
    except ConflictError as exc:
        [claimed] = await store.get_nodes(namespace, [turn_record.id])
        if saved_by is None or claimed is None or claimed.properties.get("saved_by") != saved_by:
            raise SessionConflictError(
                f"session {session!r} moved on while this turn (based on turn {expected_turns}) ran: turn {number} was saved "
                "by another; this turn's changes were not saved: send the message again"
            ) from exc
    if before is not None and before.properties.get("identity") != IDENTITY:  # saved by slot; now saved by task
        await store.delete_nodes(
            namespace, [i for i in node_record_ids(namespace, session, before.properties) if i not in ids.values()]
        )
    await store.upsert_relationships(_links(namespace, session, forest, ids, changed, turn_record.id, session_record.id))


def _links(
    namespace: str,
    session: str,
    forest: Forest,
    ids: dict[str, str],
    changed: dict[str, list[HistoryEntry]],
    turn_id: str,
    session_id: str,
) -> list[RelationshipRecord]:
    """The relationships mirroring the records' properties: turn to session, hierarchy, dependencies,
    replacements, and the version chains of the nodes this turn changed."""

    def link(type_: str, source: str, target: str, **properties: Any) -> RelationshipRecord:
        return RelationshipRecord(namespace=namespace, type=type_, source_id=source, target_id=target, properties=properties)

    links = [link(TURN_OF, turn_id, session_id)]
    for key, node in forest.nodes.items():
        if node.parent in ids:
            links.append(link(CHILD_OF, ids[key], ids[node.parent]))
        links += [link(DEPENDS_ON, ids[key], ids[dependency]) for dependency in node.depends_on if dependency in ids]
        if node.replaced_by in ids:
            links.append(link(REPLACED_BY, ids[key], ids[node.replaced_by], turn=node.updated_turn))
    for key, chain in changed.items():
        version_ids = [version_record_id(namespace, session, key, entry.version) for entry in chain]
        links += [link(HAS_VERSION, ids[key], version_id) for version_id in version_ids]
        links += [link(PREV, later, earlier) for earlier, later in zip(version_ids, version_ids[1:], strict=False)]
    return links
