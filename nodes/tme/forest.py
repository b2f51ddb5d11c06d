"""The task forest of one conversation: task nodes with values, version history, parent and dependency links.

Pure data and rules, no I/O: a turn loads the forest, applies its operations here, and saves it. Rules:

- A step's identity is its task and its slot: the same slot in two tasks is two steps (a meeting's "date" and a
  trip's "date"). A task root has no parent and is its own task; its substeps are its descendants. A name alone
  finds a step when only one task has it; otherwise the task must be named.
- Dependencies form a DAG: a link that would close a cycle is refused, and the forest is left as it was.
- An update, revert, removal or replacement pushes the old value into the node's history (version, turn,
  reason), marks every transitive dependent stale with the reason until it is re-derived or updated itself,
  and flags the node's parent ("a child changed", with cause and turn) until the parent is updated itself.
- ``superseded_values`` are the values the user has replaced and that no active node holds any longer: what
  an answer prompt must never present as current.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, Field

from mnemoflow.errors import MnemoflowError

__all__ = ["Change", "ChildChange", "Forest", "ForestError", "HistoryEntry", "TaskNode", "node_key", "slot_key"]

Status = Literal["active", "removed", "replaced"]


class ForestError(MnemoflowError):
    """An operation the forest refuses (a missing slot, a dependency cycle); the forest is unchanged."""

    code = "tme-forest"


def slot_key(slot: str) -> str:
    """The name part of a step's identity: lower case, ``/`` as a space, inner whitespace collapsed, outer
    punctuation dropped (so a key never holds ``/``, which joins a task and a slot in :func:`node_key`)."""
    return re.sub(r"\s+", " ", slot.replace("/", " ").strip().strip(".:;!?").lower()).strip()


def node_key(task: str | None, slot: str) -> str:
    """A node's key in the forest: the slot's key for a task root (``task`` None), ``task/slot`` for a step."""
    return slot_key(slot) if task is None else f"{task}/{slot_key(slot)}"


class HistoryEntry(BaseModel):
    """One earlier value of a node (the value of ``version``) and why and when it was replaced."""

    version: int
    value: str | None
    turn: int
    reason: str


class ChildChange(BaseModel):
    """The parent's flag: one of its children changed (cause: updated, reverted, removed, ...) at a turn."""

    child: str
    cause: str
    turn: int


class TaskNode(BaseModel):
    """A task (a root) or a step of one."""

    slot: str
    task: str | None = None
    """The key of the task root this step belongs to; None for a task root."""
    value: str | None = None
    parent: str | None = None
    """The key of the parent (the task root or a step of it); None for a task root."""
    depends_on: list[str] = Field(default_factory=list)
    """Keys of the nodes this one needs (shared subtasks are depended on by several)."""
    status: Status = "active"
    stale: bool = False
    stale_reason: str | None = None
    version: int = 1
    history: list[HistoryEntry] = Field(default_factory=list)
    changed_children: list[ChildChange] = Field(default_factory=list)
    """Children changed since this node was last updated itself, the latest change of each."""
    replaced_by: str | None = None
    """The key of the step that replaced this one (status ``replaced``)."""
    created_turn: int = 0
    updated_turn: int = 0

    @property
    def key(self) -> str:
        return node_key(self.task, self.slot)

    @property
    def task_key(self) -> str:
        """The key of the task this node belongs to (its own for a task root)."""
        return self.task if self.task is not None else self.key


class Change(BaseModel):
    """What one operation did, for the turn's record and the answer prompt."""

    op: str
    slot: str
    key: str = ""
    """The node's key (empty in turns saved before steps were scoped by task)."""
    detail: str = ""
    stale: list[str] = Field(default_factory=list)
    """Keys of the nodes this change marked stale."""


class Forest(BaseModel):
    """Every task node of one conversation, by key."""

    nodes: dict[str, TaskNode] = Field(default_factory=dict)

    # -- reading ------------------------------------------------------------------------------------------

    def get(self, slot: str, task: str | None = None) -> TaskNode | None:
        """The node named ``slot`` in ``task`` (a task's title or key), else the only node of that name; raises
        ``ForestError`` when several tasks have one and ``task`` does not say which."""
        key = slot_key(slot)
        named = [node for node in self.nodes.values() if slot_key(node.slot) == key]
        if task is not None and (own := [node for node in named if node.task_key == slot_key(task)]):
            return min(own, key=lambda node: node.task is not None)  # the task root before a step of its name
        live = [node for node in named if node.status == "active"] or named
        if len({node.key for node in live}) > 1:
            tasks = ", ".join(sorted(self.nodes[n.task_key].slot if n.task_key in self.nodes else n.task_key for n in live))
            raise ForestError(f"{slot!r} is a step of several tasks ({tasks}): name the task")
        return live[0] if live else None

    def require(self, slot: str, action: str, task: str | None = None) -> TaskNode:
        node = self.get(slot, task)
        if node is not None and node.status == "replaced" and node.replaced_by in self.nodes:
            raise ForestError(f"cannot {action} {slot!r}: it was replaced by {self.nodes[node.replaced_by].slot!r}")
        if node is None or node.status != "active":
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

    def task_title(self, node: TaskNode) -> str:
        """The title of the task ``node`` belongs to."""
        root = self.nodes.get(node.task_key)
        return root.slot if root is not None else node.task_key

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

    def stale_layers(self, first: Iterable[str] = ()) -> list[list[TaskNode]]:
        """The active stale nodes in dependency order, as layers: a node comes after every stale node it depends
        on, and the nodes of one layer do not depend on one another. Within a layer, the keys of ``first`` (this
        turn's stale marks, nearest first) lead, then the others by key."""
        stale = {node.key: node for node in self.active() if node.stale}
        rank = {key: index for index, key in enumerate(first)}
        layers: list[list[TaskNode]] = []
        placed: set[str] = set()
        while len(placed) < len(stale):
            ready = [n for key, n in stale.items() if key not in placed and all(d in placed or d not in stale for d in n.depends_on)]
            if not ready:  # unreachable in a DAG; kept so a corrupt forest cannot loop forever
                break
            layers.append(sorted(ready, key=lambda n: (rank.get(n.key, len(rank)), n.key)))
            placed.update(n.key for n in ready)
        return layers

    def superseded_values(self) -> set[str]:
        """Values the user replaced that no active node holds now."""
        current = {node.value.lower() for node in self.active() if node.value}
        old = {entry.value for node in self.nodes.values() for entry in node.history if entry.value}
        gone = {node.value for node in self.nodes.values() if node.status != "active" and node.value}
        return {value for value in old | gone if value.lower() not in current}

    # -- changing -----------------------------------------------------------------------------------------

    def add(
        self, slot: str, value: str | None, *, parent: str | None, depends_on: Iterable[str], turn: int, task: str | None = None
    ) -> Change:
        """A new node in the task of ``parent`` (a new task when there is none); a step that exists in that task
        already is updated instead (the model said new, the user meant change), a removed one comes back."""
        if not slot_key(slot):
            raise ForestError("a task step needs a name (its slot)")
        parent_node = self.require(parent, "put a step under", task) if parent else None
        task_key = parent_node.task_key if parent_node is not None else None
        existing = self.nodes.get(node_key(task_key, slot))
        if existing is not None and existing.status == "active":
            change = _change("same", existing)
            if value != existing.value:
                change = self.update(existing.slot, value, turn=turn, reason="restated", task=existing.task_key)
            for dependency in depends_on:
                self.link(existing.slot, dependency, turn=turn, task=existing.task_key)
            return change
        dependencies = [self.require(name, "depend on", task_key).key for name in depends_on]
        if existing is not None:  # a removed step comes back, with its past
            node = existing
            self._revise(node, value, turn, "restored")
            node.status, node.parent, node.replaced_by = "active", parent_node.key if parent_node is not None else None, None
        else:
            node = TaskNode(slot=slot.strip(), task=task_key, value=value, created_turn=turn, updated_turn=turn)
            node.parent = parent_node.key if parent_node is not None else None
        if node.key in dependencies:
            raise ForestError(f"{slot!r} cannot depend on itself")
        node.depends_on = dependencies
        self.nodes[node.key] = node
        if existing is not None:
            self._flag_parent(node, "restored", turn)
            return _change("restore", node, stale=self._propagate(node, turn, f"{node.slot!r} was restored at turn {turn}"))
        return _change("new", node, detail=f"under {parent_node.slot}" if parent_node is not None else "task")

    def update(self, slot: str, value: str | None, *, turn: int, reason: str = "updated", task: str | None = None) -> Change:
        node = self.require(slot, "update", task)
        if value == node.value:
            return _change("same", node)
        self._revise(node, value, turn, reason)
        self._flag_parent(node, reason, turn)
        return _change("update", node, stale=self._propagate(node, turn, f"{node.slot!r} was {reason} at turn {turn}"))

    def replace(self, slot: str, new_slot: str, value: str | None, *, turn: int, task: str | None = None) -> Change:
        """The step itself is swapped for another (one cart item for another): a new step takes its place, its
        parent, dependencies, children and dependents; the old one is kept, ``replaced``, pointing to the new one."""
        old = self.require(slot, "replace", task)
        new_key = node_key(old.task, new_slot)
        if not slot_key(new_slot) or new_key == old.key:
            raise ForestError(f"cannot replace {old.slot!r} by {new_slot!r}: give the new step's name")
        if new_key in self.nodes and self.nodes[new_key].status == "active":
            raise ForestError(f"cannot replace {old.slot!r} by {new_slot!r}: that step exists already")
        new = TaskNode(
            slot=new_slot.strip(), task=old.task, value=old.value if value is None else value, parent=old.parent,
            depends_on=list(old.depends_on), created_turn=turn, updated_turn=turn,
        )  # fmt: skip
        old.history.append(HistoryEntry(version=old.version, value=old.value, turn=turn, reason=f"replaced by {new.slot}"))
        old.status, old.replaced_by, old.version, old.updated_turn = "replaced", new_key, old.version + 1, turn
        old.stale, old.stale_reason = False, None
        self.nodes[new_key] = new
        for node in self.nodes.values():
            node.depends_on = [new_key if key == old.key else key for key in node.depends_on]
            if node.parent == old.key:
                node.parent = new_key
        self._flag_parent(new, f"replaced {old.slot}", turn)
        stale = self._propagate(new, turn, f"{old.slot!r} was replaced by {new.slot!r} at turn {turn}")
        return _change("replace", old, detail=f"by {new.slot}", stale=stale)

    def revert(self, slot: str, *, to: str | None, turn: int, task: str | None = None) -> Change:
        """Back to the value before the current one, or to the earlier value ``to``; a removed step comes back."""
        removed = self.get(slot, task)
        if removed is not None and removed.status == "removed" and to is None:
            return self._restore(removed, turn)
        node = self.require(slot, "revert", task)
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
        self._flag_parent(node, "reverted", turn)
        return _change("revert", node, stale=self._propagate(node, turn, f"{node.slot!r} was reverted at turn {turn}"))

    def _restore(self, node: TaskNode, turn: int) -> Change:
        node.history.append(HistoryEntry(version=node.version, value=node.value, turn=turn, reason="restored"))
        node.status, node.version, node.updated_turn = "active", node.version + 1, turn
        if node.parent is not None and node.parent in self.nodes and self.nodes[node.parent].status == "removed":
            self._restore(self.nodes[node.parent], turn)
        self._flag_parent(node, "restored", turn)
        return _change("restore", node, stale=self._propagate(node, turn, f"{node.slot!r} was restored at turn {turn}"))

    def remove(self, slot: str, *, turn: int, task: str | None = None) -> Change:
        node = self.require(slot, "remove", task)
        node.history.append(HistoryEntry(version=node.version, value=node.value, turn=turn, reason="removed"))
        node.status, node.version, node.updated_turn = "removed", node.version + 1, turn
        self._flag_parent(node, "removed", turn)
        stale = self._propagate(node, turn, f"{node.slot!r} was removed at turn {turn}")
        for child in self.children(node.key):  # a removed task takes its steps with it
            stale += self.remove(child.slot, turn=turn, task=child.task_key).stale
        return _change("remove", node, stale=stale)

    def link(self, slot: str, dependency: str, *, turn: int, task: str | None = None) -> Change:
        """``slot`` depends on ``dependency``; refused when ``dependency`` already needs ``slot``."""
        node = self.require(slot, "link", task)
        needed = self.require(dependency, "depend on", node.task_key)
        if needed.key == node.key or node.key in {n.key for n in self.dependency_closure([needed.key])}:
            raise ForestError(f"{node.slot!r} cannot depend on {needed.slot!r}: {needed.slot!r} already depends on {node.slot!r} (a cycle)")
        if needed.key not in node.depends_on:
            node.depends_on.append(needed.key)
            node.updated_turn = turn
        return _change("link", node, detail=f"depends on {needed.slot}")

    def refresh(self, slot: str, value: str | None, *, turn: int, task: str | None = None) -> Change:
        """A stale node re-derived from what it depends on: its new value, and it is current again."""
        node = self.require(slot, "re-derive", task)
        if value != node.value:
            self._revise(node, value, turn, "re-derived")
            self._flag_parent(node, "re-derived", turn)
        node.stale, node.stale_reason = False, None
        return _change("rederive", node)

    def _revise(self, node: TaskNode, value: str | None, turn: int, reason: str) -> None:
        node.history.append(HistoryEntry(version=node.version, value=node.value, turn=turn, reason=reason))
        node.value, node.version, node.updated_turn = value, node.version + 1, turn
        node.stale, node.stale_reason = False, None
        node.changed_children = []

    def _flag_parent(self, child: TaskNode, cause: str, turn: int) -> None:
        parent = self.nodes.get(child.parent) if child.parent is not None else None
        if parent is None or parent.status != "active":
            return
        others = [flag for flag in parent.changed_children if flag.child != child.slot]
        parent.changed_children = [*others, ChildChange(child=child.slot, cause=cause, turn=turn)]

    def _propagate(self, changed: TaskNode, turn: int, reason: str) -> list[str]:
        """Mark every transitive dependent of ``changed`` stale; returns their keys, nearest first."""
        marked: list[str] = []
        seen = {changed.key}
        queue = deque([changed.key])
        while queue:
            for dependent in self.dependents(queue.popleft()):
                if dependent.key in seen:
                    continue
                seen.add(dependent.key)
                dependent.stale, dependent.stale_reason = True, reason
                marked.append(dependent.key)
                queue.append(dependent.key)
        return marked

    # -- showing ------------------------------------------------------------------------------------------

    def render(self) -> str:
        """The forest as an indented tree: current values, dependencies, stale marks and child flags (no history)."""
        lines: list[str] = []

        def show(node: TaskNode, depth: int) -> None:
            value = f": {node.value}" if node.value else ""
            needs = f"  (needs {', '.join(self.nodes[k].slot for k in node.depends_on if k in self.nodes)})" if node.depends_on else ""
            stale = f"  [stale: {node.stale_reason}]" if node.stale else ""
            flags = "".join(f"  [{f.child} {f.cause} at turn {f.turn}]" for f in node.changed_children)
            lines.append(f"{'  ' * depth}- {node.slot}{value}{needs}{stale}{flags}  v{node.version}")
            for child in sorted(self.children(node.key), key=lambda n: (n.created_turn, n.key)):
                show(child, depth + 1)

        for root in sorted(self.roots(), key=lambda n: (n.created_turn, n.key)):
            show(root, 0)
        return "\n".join(lines) if lines else "(no tasks yet)"

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _change(op: str, node: TaskNode, *, detail: str = "", stale: list[str] | None = None) -> Change:
    return Change(op=op, slot=node.slot, key=node.key, detail=detail, stale=stale or [])
