"""What TME shows the model of its task memory: the classifier's listing, a step's line, the answer prompt.

Every step is shown under its task (two tasks may each have a "date"). The answer prompt holds current values
only, with one exception, the point of a ``check``: the step the user asks about is shown with the values it
replaced (value, turn, reason), on a line of its own starting with :data:`EARLIER`, which the stale-value measure
(:mod:`mnemoflow.nodes.tme.measure`) leaves out, since the prompt presents them as replaced, not as current.
"""

from __future__ import annotations

from collections.abc import Iterable

from mnemoflow.nodes.tme.forest import Change, Forest, TaskNode

__all__ = ["EARLIER", "MAX_PROMPT_NODES", "memory_listing", "step_line", "synthesize_prompt"]

MAX_PROMPT_NODES = 60
"""At most this many task nodes reach the answer prompt (the nearest to what the turn touched first)."""
EARLIER = "    replaced earlier values: "
"""The start of the line showing the values a checked step held before (its history), oldest first."""


def memory_listing(forest: Forest) -> str:
    """Every active step for the classifier: slot, value, task and parent."""
    lines = []
    for node in forest.active():
        if node.parent is None:
            lines.append(f"- {node.slot}: {node.value + ' ' if node.value else ''}(a task)")
            continue
        parent = forest.nodes[node.parent].slot if node.parent in forest.nodes else "ROOT"
        lines.append(f"- {node.slot}: {node.value or ''} (task {forest.task_title(node)}, under {parent})")
    return "\n".join(lines) or "(none)"


def step_line(forest: Forest, node: TaskNode, *, history: bool = False, task: bool = False) -> str:
    """One step as a prompt shows it: a stale step without its value (derived from replaced ones), the steps it
    needs, the child-changed flags; with ``history`` the values it replaced, on an :data:`EARLIER` line; with
    ``task`` the task it belongs to (where no task heading says so)."""
    value = "(needs another look)" if node.stale else node.value if node.value is not None else "(not set)"
    needs = [forest.nodes[key].slot for key in node.depends_on if key in forest.nodes and forest.nodes[key].status == "active"]
    needs_text = f" (needs {', '.join(needs)})" if needs else ""
    task_text = f" (task {forest.task_title(node)})" if task and node.parent is not None else ""
    stale = f" [stale: {node.stale_reason}]" if node.stale else ""
    changes = len(node.history)
    changed = f" (changed {changes} time{'s' if changes != 1 else ''}, last at turn {node.updated_turn})" if changes else ""
    return "\n".join([f"- {node.slot}: {value}{task_text}{needs_text}{changed}{stale}{_flags(node)}", *_earlier(node, history)])


def _flags(node: TaskNode) -> str:
    """The parent's flag: which steps under it changed since it was last updated, how and when. Shown on a parent
    that holds a value only, which may need another look; a task without one (the usual root) lists its steps
    anyway, and its flags, which nothing clears, would only grow the prompt."""
    flags = "; ".join(f"{flag.child} {flag.cause} at turn {flag.turn}" for flag in node.changed_children)
    return f" [steps under it changed: {flags}]" if flags and node.value is not None else ""


def _earlier(node: TaskNode, shown: bool) -> list[str]:
    """The values ``node`` held before, oldest first, when ``shown`` (a check of it)."""
    if not shown or not node.history:
        return []
    return [EARLIER + "; ".join(f"{entry.value or '(not set)'} (until turn {entry.turn}: {entry.reason})" for entry in node.history)]


def _relevant(forest: Forest, keys: Iterable[str]) -> list[TaskNode]:
    """The touched nodes with their active path and dependency closure; everything active when nothing was touched."""
    touched = [node for key in keys if (node := forest.nodes.get(key)) is not None and node.status == "active"]
    if not touched:
        return forest.active()[:MAX_PROMPT_NODES]
    chosen: dict[str, TaskNode] = {}
    for node in touched:
        for member in [*forest.ancestors(node.key), node, *forest.children(node.key)]:
            chosen.setdefault(member.key, member)
    for member in forest.dependency_closure(chosen):
        if member.status == "active":  # a removed step's value is one the user dropped
            chosen.setdefault(member.key, member)
    return list(chosen.values())[:MAX_PROMPT_NODES]


def synthesize_prompt(forest: Forest, changes: list[Change], errors: list[str], utterance: str, *, deferred: Iterable[str] = ()) -> str:
    """The answer prompt: task memory (current values; a checked step's replaced values too), what changed this
    turn, what stays stale, then the user's message. ``deferred``: stale steps the re-derivation left for later."""
    stale = [key for change in changes for key in change.stale]
    checked = {change.key for change in changes if change.op == "check"}
    nodes = _relevant(forest, [*(change.key for change in changes), *stale])
    roots = {key for node in nodes for key in [node.key, *(a.key for a in forest.ancestors(node.key))] if forest.nodes[key].parent is None}
    lines = ["Task memory (current values):"]
    for root_key in sorted(roots, key=lambda key: forest.nodes[key].created_turn):
        root = forest.nodes[root_key]
        lines.append(f"Task: {root.slot}" + (f" = {root.value}" if root.value else "") + _flags(root))
        lines += _earlier(root, root.key in checked)
        members = [node for node in nodes if node.key != root_key and (root_key in {a.key for a in forest.ancestors(node.key)})]
        lines += [step_line(forest, node, history=node.key in checked) for node in members]
    others = [node for node in nodes if node.key not in roots and not any(a.key in roots for a in forest.ancestors(node.key))]
    lines += [step_line(forest, node, history=node.key in checked, task=True) for node in others]
    if changes:
        lines.append("This turn: " + "; ".join(f"{change.op} {change.slot}" for change in changes if change.op != "same"))
    if stale:
        lines.append("Marked stale this turn: " + ", ".join(dict.fromkeys(forest.nodes[key].slot for key in stale if key in forest.nodes)))
    if left := list(deferred):
        lines.append("Still stale, not re-derived this turn: " + ", ".join(left))
    if errors:
        lines.append("Could not apply: " + "; ".join(errors))
    lines += ["", f"User: {utterance}"]
    return "\n".join(lines)
