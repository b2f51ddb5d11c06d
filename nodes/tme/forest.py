"""The task forest of one conversation: task nodes with values, version history, parent and dependency links.

Pure data and rules, no I/O: a turn loads the forest, applies its operations here, and saves it. Rules:

- A slot names a task step ("destination", "flight search"); its key (lower case, single spaces) is its
  identity in the conversation. A task root has no parent; its substeps are its children.
- Dependencies form a DAG: a link that would close a cycle is refused, and the forest is left as it was.
- An update, revert or removal pushes the old value into the node's history (turn, reason, version) and marks
  every transitive dependent stale, with the reason, until it is re-derived or updated itself.
- ``superseded_values`` are the values the user has replaced and that no active node holds any longer: what
  an answer prompt must never contain.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, Field

from mnemoflow.errors import MnemoflowError

__all__ = ["Change", "Forest", "ForestError", "HistoryEntry", "TaskNode", "slot_key"]

Status = Literal["active", "removed"]


class ForestError(MnemoflowError):
    """An operation the forest refuses (a missing slot, a dependency cycle); the forest is unchanged."""

    code = "tme-forest"


def slot_key(slot: str) -> str:
    """The identity of a slot: lower case, inner whitespace collapsed, outer punctuation dropped."""
    return re.sub(r"\s+", " ", slot.strip().strip(".:;!?").lower())


class HistoryEntry(BaseModel):
    """One earlier value of a node and why it changed."""

    version: int
    value: str | None
    turn: int
    reason: str


class TaskNode(BaseModel):
    """A task (a root) or a step of one."""

    slot: str
    value: str | None = None
    parent: str | None = None
    """The key of the parent task; None for a task root."""
    depends_on: list[str] = Field(default_factory=list)
    """Keys of the nodes this one needs (shared subtasks are depended on by several)."""
    status: Status = "active"
    stale: bool = False
    stale_reason: str | None = None
    version: int = 1
    history: list[HistoryEntry] = Field(default_factory=list)
    created_turn: int = 0
    updated_turn: int = 0

    @property
    def key(self) -> str:
        return slot_key(self.slot)


class Change(BaseModel):
    """What one operation did, for the turn's record and the answer prompt."""

    op: str
    slot: str
    detail: str = ""
    stale: list[str] = Field(default_factory=list)
    """Slots this change marked stale."""


class Forest(BaseModel):
    """Every task node of one conversation, by key."""

    nodes: dict[str, TaskNode] = Field(default_factory=dict)

    # -- reading ------------------------------------------------------------------------------------------

    def get(self, slot: str) -> TaskNode | None:
        return self.nodes.get(slot_key(slot))

    def require(self, slot: str, action: str) -> TaskNode:
        node = self.get(slot)
        if node is None or node.status == "removed":
            known = ", ".join(sorted(n.slot for n in self.active())) or "none"
            raise ForestError(f"cannot {action} {slot!r}: no such task step (known: {known})")
        return node

    def active(self) -> list[TaskNode]:
        return [node for node in self.nodes.values() if node.status == "active"]

    def roots(self) -> list[TaskNode]:
        return [node for node in self.active() if node.parent is None]

    def children(self, key: str) -> list[TaskNode]:
        return [node for node in self.active() if node.parent == key]

    def dependents(self, key: str) -> list[TaskNode]:
        return [node for node in self.active() if key in node.depends_on]

    def ancestors(self, key: str) -> list[TaskNode]:
        """The path from the root down to the node's parent."""
        path: list[TaskNode] = []
        seen = {key}
        node = self.nodes.get(key)
        while node is not None and node.parent is not None and node.parent not in seen:
            seen.add(node.parent)
            node = self.nodes.get(node.parent)
            if node is not None:
                path.append(node)
        return list(reversed(path))

    def dependency_closure(self, keys: Iterable[str]) -> list[TaskNode]:
        """Every node the given ones need, transitively (not the given ones themselves)."""
        start = set(keys)
        seen: set[str] = set()
        queue = deque(dep for key in start if key in self.nodes for dep in self.nodes[key].depends_on)
        while queue:
            key = queue.popleft()
            if key in seen or key not in self.nodes:
                continue
            seen.add(key)
            queue.extend(self.nodes[key].depends_on)
        return [self.nodes[key] for key in sorted(seen - start)]

    def superseded_values(self) -> set[str]:
        """Values the user replaced that no active node holds now."""
        current = {node.value.lower() for node in self.active() if node.value}
        old = {entry.value for node in self.nodes.values() for entry in node.history if entry.value}
        removed = {node.value for node in self.nodes.values() if node.status == "removed" and node.value}
        return {value for value in old | removed if value.lower() not in current}

    # -- changing -----------------------------------------------------------------------------------------

    def add(self, slot: str, value: str | None, *, parent: str | None, depends_on: Iterable[str], turn: int) -> Change:
        """A new node; a slot that exists already is updated instead (the model said new, the user meant change)."""
        if not slot_key(slot):
            raise ForestError("a task step needs a name (its slot)")
        existing = self.get(slot)
        if existing is not None and existing.status == "active":
            change = self.update(slot, value, turn=turn, reason="restated") if value != existing.value else Change(op="same", slot=existing.slot)
            for dependency in depends_on:
                self.link(existing.slot, dependency, turn=turn)
            return change
        parent_key = self.require(parent, "put a step under").key if parent else None
        dependencies = [self.require(name, "depend on").key for name in depends_on]
        node = TaskNode(slot=slot.strip(), value=value, parent=parent_key, created_turn=turn, updated_turn=turn)
        if node.key in dependencies:
            raise ForestError(f"{slot!r} cannot depend on itself")
        if existing is not None:  # a removed slot comes back, with its past
            node = existing.model_copy(update={"value": value, "status": "active", "parent": parent_key, "updated_turn": turn, "version": existing.version + 1})
        node.depends_on = dependencies
        self.nodes[node.key] = node
        return Change(op="new", slot=node.slot, detail=f"under {parent}" if parent else "task")

    def update(self, slot: str, value: str | None, *, turn: int, reason: str = "updated") -> Change:
        node = self.require(slot, "update")
        if value == node.value:
            return Change(op="same", slot=node.slot)
        self._revise(node, value, turn, reason)
        return Change(op="update", slot=node.slot, stale=self._propagate(node, turn, f"{node.slot!r} was {reason} at turn {turn}"))

    def revert(self, slot: str, *, to: str | None, turn: int) -> Change:
        """Back to the value before the current one, or to the earlier value ``to``; a removed step comes back."""
        removed = self.get(slot)
        if removed is not None and removed.status == "removed" and to is None:
            return self._restore(removed, turn)
        node = self.require(slot, "revert")
        earlier = [entry.value for entry in node.history if entry.value != node.value]
        if not earlier:
            raise ForestError(f"cannot revert {slot!r}: it has no earlier value")
        target = earlier[-1]
        if to is not None:
            matches = [value for value in earlier if value is not None and slot_key(value) == slot_key(to)]
            if not matches:
                raise ForestError(f"cannot revert {slot!r} to {to!r}: it never had that value")
            target = matches[-1]
        self._revise(node, target, turn, "reverted")
        return Change(op="revert", slot=node.slot, stale=self._propagate(node, turn, f"{node.slot!r} was reverted at turn {turn}"))

    def _restore(self, node: TaskNode, turn: int) -> Change:
        node.history.append(HistoryEntry(version=node.version, value=node.value, turn=turn, reason="restored"))
        node.status, node.version, node.updated_turn = "active", node.version + 1, turn
        if node.parent is not None and node.parent in self.nodes and self.nodes[node.parent].status == "removed":
            self._restore(self.nodes[node.parent], turn)
        return Change(op="restore", slot=node.slot, stale=self._propagate(node, turn, f"{node.slot!r} was restored at turn {turn}"))

    def remove(self, slot: str, *, turn: int) -> Change:
        node = self.require(slot, "remove")
        node.history.append(HistoryEntry(version=node.version, value=node.value, turn=turn, reason="removed"))
        node.status, node.version, node.updated_turn = "removed", node.version + 1, turn
        stale = self._propagate(node, turn, f"{node.slot!r} was removed at turn {turn}")
        for child in self.children(node.key):  # a removed task takes its steps with it
            stale += self.remove(child.slot, turn=turn).stale
        return Change(op="remove", slot=node.slot, stale=stale)

    def link(self, slot: str, dependency: str, *, turn: int) -> Change:
        """``slot`` depends on ``dependency``; refused when ``dependency`` already needs ``slot``."""
        node, needed = self.require(slot, "link"), self.require(dependency, "depend on")
        if needed.key == node.key or node.key in {n.key for n in self.dependency_closure([needed.key])}:
            raise ForestError(f"{node.slot!r} cannot depend on {needed.slot!r}: {needed.slot!r} already depends on {node.slot!r} (a cycle)")
        if needed.key not in node.depends_on:
            node.depends_on.append(needed.key)
            node.updated_turn = turn
        return Change(op="link", slot=node.slot, detail=f"depends on {needed.slot}")

    def refresh(self, slot: str, value: str | None, *, turn: int) -> Change:
        """A stale node re-derived from what it depends on: its new value, and it is current again."""
        node = self.require(slot, "re-derive")
        if value != node.value:
            self._revise(node, value, turn, "re-derived")
        node.stale, node.stale_reason = False, None
        return Change(op="rederive", slot=node.slot)

    def _revise(self, node: TaskNode, value: str | None, turn: int, reason: str) -> None:
        node.history.append(HistoryEntry(version=node.version, value=node.value, turn=turn, reason=reason))
        node.value, node.version, node.updated_turn = value, node.version + 1, turn
        node.stale, node.stale_reason = False, None

    def _propagate(self, changed: TaskNode, turn: int, reason: str) -> list[str]:
        """Mark every transitive dependent of ``changed`` stale; returns their slots, nearest first."""
        marked: list[str] = []
        seen = {changed.key}
        queue = deque([changed.key])
        while queue:
            for dependent in self.dependents(queue.popleft()):
                if dependent.key in seen:
                    continue
                seen.add(dependent.key)
                dependent.stale, dependent.stale_reason = True, reason
                marked.append(dependent.slot)
                queue.append(dependent.key)
        return marked

    # -- showing ------------------------------------------------------------------------------------------

    def render(self) -> str:
        """The forest as an indented tree: current values, dependencies and stale marks (no history)."""
        lines: list[str] = []

        def show(node: TaskNode, depth: int) -> None:
            value = f": {node.value}" if node.value else ""
            needs = f"  (needs {', '.join(self.nodes[k].slot for k in node.depends_on if k in self.nodes)})" if node.depends_on else ""
            stale = f"  [stale: {node.stale_reason}]" if node.stale else ""
            lines.append(f"{'  ' * depth}- {node.slot}{value}{needs}{stale}  v{node.version}")
            for child in sorted(self.children(node.key), key=lambda n: (n.created_turn, n.key)):
                show(child, depth + 1)

        for root in sorted(self.roots(), key=lambda n: (n.created_turn, n.key)):
            show(root, 0)
        return "\n".join(lines) if lines else "(no tasks yet)"

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
