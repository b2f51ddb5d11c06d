"""ExpeRepair's semantic memory: a numbered list of insights per role, edited by the model in batches.

The Test Agent (``tester``) and the Patch Agent (``coder``) each read their active insights in their system
prompt. After an issue the model proposes ADD / EDIT / REMOVE edits on the numbered list; a batch is applied in
order, numbers naming the list as it was before the batch, and only the first :data:`MAX_INSIGHTS` stay active.
How a batch is stored (new versions, ``SUPERSEDES`` links, claims) is described in ``model.py``.

The switches: the insights are shown when :func:`reads_semantic` (memory and semantic memory on, the inference
phase) and edited after an issue when :func:`writes_semantic` (memory and semantic memory on, either phase: the
seed phase builds the list it does not show).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from mnemoflow.errors import UsageError
from mnemoflow.memory.paging import all_nodes
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import NodeRecord, RelationshipRecord
from mnemoflow.nodes.experepair.model import INSIGHT, MAX_INSIGHTS, ROLES, SUPERSEDES, insight_id
from mnemoflow.nodes.experepair.state import RepairState
from mnemoflow.nodes.locks import keyed_lock

__all__ = [
    "InsightEdit",
    "apply_insight_edits",
    "load_insight_records",
    "load_insights",
    "reads_semantic",
    "writes_semantic",
]


class InsightEdit(BaseModel):
    """One operation proposed on a role's numbered insight list; ``number`` is 1-based, before the batch."""

    model_config = ConfigDict(frozen=True)

    operation: Literal["ADD", "EDIT", "REMOVE"]
    number: int | None = None
    """The insight an EDIT or REMOVE names; None for an ADD."""
    text: str = ""
    """The new insight (ADD) or its new version (EDIT)."""


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise UsageError(f"insight role {role!r} is not allowed: use 'tester' or 'coder'")


async def _insights(store: GraphStore, namespace: str, role: str) -> list[NodeRecord]:
    return [node for node in await all_nodes(store, namespace, INSIGHT) if node.properties.get("role") == role]


def _active(nodes: list[NodeRecord]) -> list[NodeRecord]:
    active = [node for node in nodes if node.properties.get("status") == "active"]
    return sorted(active, key=lambda node: (int(node.properties.get("ord", 0)), int(node.properties.get("seq", 0))))


def reads_semantic(state: RepairState) -> bool:
    """Whether the agents' system prompts show their insights: memory and semantic memory on, in the inference
    phase (the seed phase runs with static prompts)."""
    return state.memory and state.semantic and state.phase == "inference"


def writes_semantic(state: RepairState) -> bool:
    """Whether the model edits the insights after the issue: memory and semantic memory on, in either phase."""
    return state.memory and state.semantic


async def load_insight_records(store: GraphStore, namespace: str, role: str) -> list[NodeRecord]:
    """The role's active insight records in list order, at most ``MAX_INSIGHTS`` (their ids name what a run was
    shown)."""
    _check_role(role)
    return _active(await _insights(store, namespace, role))[:MAX_INSIGHTS]


async def load_insights(store: GraphStore, namespace: str, role: str) -> list[str]:
    """The role's active insights in list order, at most ``MAX_INSIGHTS``."""
    return [str(node.properties["text"]) for node in await load_insight_records(store, namespace, role)]


async def apply_insight_edits(store: GraphStore, namespace: str, role: str, edits: Sequence[InsightEdit]) -> dict[str, Any]:
    """Apply one batch of edits to the role's list, in order; numbers name the list as it was before the batch.

    ADD appends; EDIT writes a new version superseding the numbered insight; REMOVE retires it. An edit naming a
    number that is out of range or already removed in this batch, or lacking its text, is reported and changes
    nothing. Then only the first ``MAX_INSIGHTS`` stay active (the rest are retired and reported). All writes of
    the batch go in one ``upsert_nodes`` call (plus one for the ``SUPERSEDES`` links).

    Returns ``{"applied": [...], "ignored": [{"index", "operation", "number", "reason"}], "truncated": [texts],
    "insights": [active texts in order]}``.
    """
    _check_role(role)
    async with keyed_lock("experepair-insights", namespace, role):
        return await _apply(store, namespace, role, list(edits))


async def _apply(store: GraphStore, namespace: str, role: str, edits: list[InsightEdit]) -> dict[str, Any]:
    every = await _insights(store, namespace, role)
    next_seq = max((int(node.properties.get("seq", 0)) for node in every), default=-1) + 1
    before = _active(every)
    # the working list: slot per original number (None once removed), plus appended ADDs
    current: list[NodeRecord | None] = list(before)
    added: list[NodeRecord] = []
    changed: dict[str, NodeRecord] = {}
    created: list[str] = []
    links: list[RelationshipRecord] = []
    applied: list[dict[str, Any]] = []
    ignored: list[dict[str, Any]] = []

    def new_record(text: str) -> NodeRecord:
        nonlocal next_seq
        node = NodeRecord(
            id=insight_id(namespace, role, next_seq),
            namespace=namespace,
            kind=INSIGHT,
            properties={"role": role, "text": text, "ord": 0, "status": "active", "seq": next_seq},
            text=text,
        )
        next_seq += 1
        created.append(node.id)
        return node

    def retire(node: NodeRecord) -> None:
        changed[node.id] = node.model_copy(update={"properties": {**node.properties, "status": "removed"}})

    for index, edit in enumerate(edits):
        report = {"index": index, "operation": edit.operation, "number": edit.number}
        text = edit.text.strip()
        if edit.operation in ("ADD", "EDIT") and not text:
            ignored.append({**report, "reason": "no text"})
            continue
        if edit.operation == "ADD":
            added.append(new_record(text))
            applied.append(report)
            continue
        slot = edit.number - 1 if edit.number is not None else -1
        target = current[slot] if 0 <= slot < len(current) else None
        if target is None:
            reason = "no number" if edit.number is None else f"no insight {edit.number} in the list of {len(before)}"
            if 0 <= slot < len(current):
                reason = f"insight {edit.number} was already removed in this batch"
            ignored.append({**report, "reason": reason})
            continue
        retire(target)
        if edit.operation == "REMOVE":
            current[slot] = None
        else:
            replacement = new_record(text)
            links.append(RelationshipRecord(namespace=namespace, type=SUPERSEDES, source_id=replacement.id, target_id=target.id))
            current[slot] = replacement
        applied.append(report)

    final = [node for node in current if node is not None] + added
    truncated = final[MAX_INSIGHTS:]
    for node in truncated:
        if node.id in created:  # never stored: keep it as a retired record for the history
            changed[node.id] = node.model_copy(update={"properties": {**node.properties, "status": "removed"}})
        else:
            retire(node)
    for position, node in enumerate(final[:MAX_INSIGHTS]):
        base = changed.get(node.id, node)
        if node.id in created or base.properties.get("ord") != position or node.id in changed:
            changed[node.id] = base.model_copy(update={"properties": {**base.properties, "ord": position}})
    if changed:
        await store.upsert_nodes(list(changed.values()), new=created)
    if links:
        await store.upsert_relationships(links)
    return {
        "applied": applied,
        "ignored": ignored,
        "truncated": [str(node.properties["text"]) for node in truncated],
        "insights": [str(node.properties["text"]) for node in final[:MAX_INSIGHTS]],
    }
