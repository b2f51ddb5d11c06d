"""One user turn of a TME conversation (``tme.*`` nodes; graph ``graphs/library/tme-turn.yaml``).

load -> decompose -> classify (TRIM) -> apply (with revision propagation) -> [rederive] -> synthesize ->
answer -> persist. The answer prompt is built from the task memory's current values only: the active path and
dependencies of what the turn touched, stale marks with their reasons, never a value the user has replaced.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mnemoflow.errors import LLMOutputError, NodeError
from mnemoflow.nodes.context import RunContext
from mnemoflow.nodes.registry import NoConfig, node, router
from mnemoflow.nodes.tme.agents import (
    Classification,
    Decomposition,
    Operation,
    Rederivation,
    answer_messages,
    classify_messages,
    decompose_messages,
    rederive_messages,
)
from mnemoflow.nodes.tme.conversation import load_conversation, save_turn
from mnemoflow.nodes.tme.forest import Change, Forest, ForestError, TaskNode, slot_key
from mnemoflow.nodes.tme.state import TurnState

__all__ = ["RederiveConfig", "apply_operations", "synthesize_prompt"]

MAX_PROMPT_NODES = 60
"""At most this many task nodes reach the answer prompt (the nearest to what the turn touched first)."""


class RederiveConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rederive: bool = Field(False, description="Re-derive stale steps with the model after an update (one extra call).")


def _forest(state: TurnState) -> Forest:
    return Forest.model_validate(state.forest) if state.forest else Forest()


@node("tme.load", state=TurnState, reads={"session", "utterance"}, writes={"turn", "forest"})
async def load(state: TurnState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """Load the session's task forest; refuse an empty utterance."""
    if not state.utterance.strip():
        raise NodeError(f"session {state.session!r}: the utterance is empty; nothing was changed")
    conversation = await load_conversation(context.store, context.namespace, state.session)
    return {"turn": conversation.turns, "forest": conversation.forest.as_json()}


@node("tme.decompose", state=TurnState, reads={"utterance"}, writes={"decomposition"})
async def decompose(state: TurnState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """Call A: the task and the substeps the utterance names."""
    reply = await context.llm.structured(decompose_messages(state.utterance), Decomposition)
    return {"decomposition": reply.model_dump()}


def _memory_listing(forest: Forest) -> str:
    lines = []
    for task in forest.active():
        parent = forest.nodes[task.parent].slot if task.parent in forest.nodes else "ROOT"
        lines.append(f"- {task.slot}: {task.value or ''} (under {parent})")
    return "\n".join(lines) or "(none)"


@node("tme.classify", state=TurnState, reads={"utterance", "forest", "decomposition"}, writes={"operations", "errors"})
async def classify(state: TurnState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """Call B (TRIM): one operation per step the utterance touches. A reply that cannot be read leaves the forest as it is."""
    decomposition = Decomposition.model_validate(state.decomposition or {"task": state.utterance[:200]})
    try:
        reply = await context.llm.structured(classify_messages(_memory_listing(_forest(state)), decomposition, state.utterance), Classification)
    except LLMOutputError as exc:
        context.log.warning("tme.classify_unreadable", error=str(exc))
        return {"operations": [], "errors": [*state.errors, f"the classification could not be read, so nothing was changed: {exc}"]}
    return {"operations": [operation.model_dump() for operation in reply.operations]}


def apply_operations(forest: Forest, operations: list[Operation], turn: int) -> tuple[Forest, list[Change], list[str]]:
    """Apply each operation to a copy; a refused one is reported and leaves the forest as it was before it."""
    changes: list[Change] = []
    errors: list[str] = []
    for operation in operations:
        attempt = forest.model_copy(deep=True)
        try:
            changes += _apply(attempt, operation, turn)
        except ForestError as exc:
            errors.append(f"{operation.intent} {operation.slot!r}: {exc}")
            continue
        forest = attempt
    return forest, changes, errors


def _apply(forest: Forest, operation: Operation, turn: int) -> list[Change]:
    slot, value = operation.slot, operation.value
    if operation.intent == "new":
        made: list[Change] = []
        if operation.parent and forest.get(operation.parent) is None:  # the task root of new steps
            made.append(forest.add(operation.parent, None, parent=None, depends_on=[], turn=turn))
        return [*made, forest.add(slot, value, parent=operation.parent, depends_on=operation.depends_on, turn=turn)]
    if operation.intent == "update":
        return [forest.update(slot, value, turn=turn)]
    if operation.intent == "revert":
        return [forest.revert(slot, to=value, turn=turn)]
    if operation.intent == "remove":
        return [forest.remove(slot, turn=turn)]
    if operation.intent == "depend":
        return [forest.link(slot, dependency, turn=turn) for dependency in operation.depends_on]
    forest.require(slot, "check")
    return [Change(op="check", slot=forest.require(slot, "check").slot)]


@node("tme.apply", state=TurnState, reads={"forest", "operations", "turn", "errors"}, writes={"forest", "changes", "stale", "errors"})
async def apply(state: TurnState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """Apply the operations and propagate revisions to every transitive dependent."""
    operations = [Operation.model_validate(operation) for operation in state.operations]
    forest, changes, errors = apply_operations(_forest(state), operations, state.turn + 1)
    stale = list(dict.fromkeys(slot for change in changes for slot in change.stale))
    return {
        "forest": forest.as_json(),
        "changes": [change.model_dump() for change in changes],
        "stale": stale,
        "errors": [*state.errors, *errors],
    }


@router("tme.after_apply", state=TurnState, reads={"stale"}, outcomes={"rederive", "answer"}, config=RederiveConfig)
def after_apply(state: TurnState, config: RederiveConfig) -> str:
    """Re-derive stale steps first when the graph says so."""
    return "rederive" if config.rederive and state.stale else "answer"


@node("tme.rederive", state=TurnState, reads={"forest", "stale", "turn"}, writes={"forest", "changes"})
async def rederive(state: TurnState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """Ask the model for the stale steps' values given the current values they depend on."""
    forest = _forest(state)
    stale = [node for slot in state.stale if (node := forest.get(slot)) is not None and node.status == "active"]
    needed = [node for node in forest.dependency_closure(n.key for n in stale) if node.status == "active"]
    context_lines = [_line(forest, node) for node in needed] + [_line(forest, node) for node in stale]
    reply = await context.llm.structured(rederive_messages("\n".join(context_lines), [node.slot for node in stale]), Rederivation)
    wanted = {node.key for node in stale}
    changes = [forest.refresh(item.slot, item.value, turn=state.turn + 1) for item in reply.values if slot_key(item.slot) in wanted]
    return {"forest": forest.as_json(), "changes": [*state.changes, *(change.model_dump() for change in changes)]}


def _line(forest: Forest, node: TaskNode) -> str:
    """One step as the prompt shows it; a stale step without its value, which was derived from replaced ones."""
    value = "(needs another look)" if node.stale else node.value if node.value is not None else "(not set)"
    needs = [forest.nodes[key].slot for key in node.depends_on if key in forest.nodes and forest.nodes[key].status == "active"]
    needs_text = f" (needs {', '.join(needs)})" if needs else ""
    stale = f" [stale: {node.stale_reason}]" if node.stale else ""
    changed = f" (changed {len(node.history)} time{'s' if len(node.history) != 1 else ''}, last at turn {node.updated_turn})" if node.history else ""
    return f"- {node.slot}: {value}{needs_text}{changed}{stale}"


def _relevant(forest: Forest, slots: list[str]) -> list[TaskNode]:
    """The touched nodes with their active path and dependency closure; everything active when nothing was touched."""
    touched = [node for slot in slots if (node := forest.get(slot)) is not None and node.status == "active"]
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


def synthesize_prompt(forest: Forest, changes: list[Change], stale: list[str], errors: list[str], utterance: str) -> str:
    """The answer prompt: task memory (current values only), what changed this turn, then the user's message."""
    touched = [change.slot for change in changes] + stale
    nodes = _relevant(forest, touched)
    roots = {key for node in nodes for key in [node.key, *(a.key for a in forest.ancestors(node.key))] if forest.nodes[key].parent is None}
    lines = ["Task memory (current values):"]
    for root_key in sorted(roots, key=lambda key: forest.nodes[key].created_turn):
        root = forest.nodes[root_key]
        lines.append(f"Task: {root.slot}" + (f" = {root.value}" if root.value else ""))
        members = [node for node in nodes if node.key != root_key and (root_key in {a.key for a in forest.ancestors(node.key)})]
        lines += [_line(forest, node) for node in members]
    others = [node for node in nodes if node.key not in roots and not any(a.key in roots for a in forest.ancestors(node.key))]
    lines += [_line(forest, node) for node in others]
    if changes:
        lines.append("This turn: " + "; ".join(f"{change.op} {change.slot}" for change in changes if change.op != "same"))
    if stale:
        lines.append("Marked stale this turn: " + ", ".join(stale))
    if errors:
        lines.append("Could not apply: " + "; ".join(errors))
    lines += ["", f"User: {utterance}"]
    return "\n".join(lines)


@node("tme.synthesize", state=TurnState, reads={"forest", "changes", "stale", "errors", "utterance"}, writes={"prompt"})
async def synthesize(state: TurnState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """Build the answer prompt from the task memory's current values."""
    changes = [Change.model_validate(change) for change in state.changes]
    return {"prompt": synthesize_prompt(_forest(state), changes, state.stale, state.errors, state.utterance)}


@node("tme.answer", state=TurnState, reads={"prompt"}, writes={"response"})
async def answer(state: TurnState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """The reply, from the synthesized prompt only."""
    return {"response": (await context.llm.text(answer_messages(state.prompt))).strip()}


@node(
    "tme.persist",
    state=TurnState,
    reads={"session", "utterance", "turn", "forest", "decomposition", "operations", "changes", "stale", "errors", "prompt", "response"},
    writes=set(),
)
async def persist(state: TurnState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """Save the forest and the turn in one write; refused when another turn of the session was saved meanwhile."""
    turn = {
        "utterance": state.utterance,
        "decomposition": state.decomposition,
        "operations": state.operations,
        "changes": state.changes,
        "stale": state.stale,
        "errors": state.errors,
        "prompt": state.prompt,
        "response": state.response,
        "run_id": context.run_id,
    }
    await save_turn(context.store, context.namespace, state.session, expected_turns=state.turn, forest=_forest(state), turn=turn)
    return {}
