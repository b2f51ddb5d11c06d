"""One user turn of a TME conversation (``tme.*`` nodes; graph ``graphs/library/tme-turn.yaml``).

load -> decompose -> classify (TRIM) -> apply (with revision propagation) -> [rederive] -> synthesize ->
answer -> persist. The answer prompt is built from the task memory's current values only: the active path and
dependencies of what the turn touched, stale marks with their reasons, never a value the user has replaced,
except the earlier values of a step the user checks (:mod:`mnemoflow.nodes.tme.prompt`). Every model call
samples at the node's ``temperature`` (the paper's 0.3 by default).

A turn whose save finds that another turn of its session was saved since its load (another process's) starts over
from ``load`` on the session's new state (``tme.after_persist``), at most ``max_attempts`` times in all: its model
calls are made again, so what it decides and answers rests on what the session now holds, and both turns land, in
the order they were saved.
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
    Rederived,
    answer_messages,
    classify_messages,
    decompose_messages,
    rederive_messages,
)
from mnemoflow.nodes.tme.conversation import SessionConflictError, load_conversation, save_turn
from mnemoflow.nodes.tme.forest import Change, Forest, ForestError, TaskNode, slot_key
from mnemoflow.nodes.tme.prompt import memory_listing, step_line, synthesize_prompt
from mnemoflow.nodes.tme.state import TurnState

__all__ = ["ModelCallConfig", "PersistConfig", "RederiveConfig", "RederiveStepsConfig", "apply_operations"]


class ModelCallConfig(BaseModel):
    """The sampling of a node's model call."""

    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(0.3, ge=0, le=2, description="Sampling temperature (the paper's 0.3; 0 makes replies cacheable).")


class RederiveStepsConfig(ModelCallConfig):
    max_rederive: int = Field(8, ge=1, le=100, description="Most stale steps re-derived per turn; the rest stay stale.")


class RederiveConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rederive: bool = Field(False, description="Re-derive stale steps with the model after an update (one call per layer).")


class PersistConfig(BaseModel):
    """How often a turn that loses the race to save starts over."""

    model_config = ConfigDict(extra="forbid")
    max_attempts: int = Field(
        5,
        ge=1,
        le=50,
        description="Times a turn may run, the first included: a turn whose session moved on while it ran starts over "
        "from its load until then, and then fails (SessionConflictError). Each failed attempt is another turn's save, "
        "so up to max_attempts turns of one session taken at once all land.",
    )


_PER_ATTEMPT = ("conflict", "decomposition", "operations", "changes", "stale", "deferred", "errors", "prompt", "response")
"""The fields an attempt of a turn works out; a turn that starts over starts them afresh."""


def _forest(state: TurnState) -> Forest:
    return Forest.model_validate(state.forest) if state.forest else Forest()


@node("tme.load", state=TurnState, reads={"session", "utterance", "attempt"}, writes={"turn", "forest", "attempt", *_PER_ATTEMPT})
async def load(state: TurnState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """Load the session's task forest; refuse an empty utterance. Each load starts an attempt afresh, so a turn
    started over keeps nothing its earlier attempt worked out (errors, stale marks, operations) on an older state."""
    if not state.utterance.strip():
        raise NodeError(f"session {state.session!r}: the utterance is empty; nothing was changed")
    conversation = await load_conversation(context.store, context.namespace, state.session)
    fresh = {name: TurnState.model_fields[name].get_default(call_default_factory=True) for name in _PER_ATTEMPT}
    return {"turn": conversation.turns, "forest": conversation.forest.as_json(), "attempt": state.attempt + 1, **fresh}


@node("tme.decompose", state=TurnState, reads={"utterance"}, writes={"decomposition"}, config=ModelCallConfig)
async def decompose(state: TurnState, config: ModelCallConfig, context: RunContext) -> dict[str, Any]:
    """Call A: the task and the substeps the utterance names."""
    reply = await context.llm.structured(decompose_messages(state.utterance), Decomposition, temperature=config.temperature)
    return {"decomposition": reply.model_dump()}


@node(
    "tme.classify",
    state=TurnState,
    reads={"utterance", "forest", "decomposition"},
    writes={"operations", "errors"},
    config=ModelCallConfig,
)
async def classify(state: TurnState, config: ModelCallConfig, context: RunContext) -> dict[str, Any]:
    """Call B (TRIM): one operation per step the utterance touches. A reply that cannot be read leaves the forest as it is."""
    decomposition = Decomposition.model_validate(state.decomposition or {"task": state.utterance[:200]})
    messages = classify_messages(memory_listing(_forest(state)), decomposition, state.utterance)
    try:
        reply = await context.llm.structured(messages, Classification, temperature=config.temperature)
    except LLMOutputError as exc:
        context.log.warning("tme.classify_unreadable", error=str(exc))
        return {
            "operations": [],
            "errors": [*state.errors, f"tme.classify: the classification could not be read, so nothing was changed: {exc}"],
        }
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
    slot, value, task = operation.slot, operation.value, operation.task
    if operation.intent == "new":
        made: list[Change] = []
        parent = operation.parent
        if parent is None and task and slot_key(task) != slot_key(slot):
            parent = task  # a step named with its task but no parent goes under the task
        if parent and forest.get(parent, task) is None:  # the task root of new steps
            made.append(forest.add(parent, None, parent=None, depends_on=[], turn=turn))
        return [*made, forest.add(slot, value, parent=parent, depends_on=operation.depends_on, turn=turn, task=task)]
    if operation.intent == "update":
        if operation.new_slot and slot_key(operation.new_slot) != slot_key(slot):
            return [forest.replace(slot, operation.new_slot, value, turn=turn, task=task)]
        return [forest.update(slot, value, turn=turn, task=task)]
    if operation.intent == "revert":
        return [forest.revert(slot, to=value, turn=turn, task=task)]
    if operation.intent == "remove":
        return [forest.remove(slot, turn=turn, task=task)]
    if operation.intent == "depend":
        return [forest.link(slot, dependency, turn=turn, task=task) for dependency in operation.depends_on]
    checked = forest.require(slot, "check", task)
    return [Change(op="check", slot=checked.slot, key=checked.key)]


@node(
    "tme.apply",
    state=TurnState,
    reads={"forest", "operations", "turn", "errors"},
    writes={"forest", "changes", "stale", "errors"},
)
async def apply(state: TurnState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """Apply the operations and propagate revisions to every transitive dependent."""
    operations = [Operation.model_validate(operation) for operation in state.operations]
    forest, changes, errors = apply_operations(_forest(state), operations, state.turn + 1)
    stale = list(dict.fromkeys(forest.nodes[key].slot for change in changes for key in change.stale))
    return {
        "forest": forest.as_json(),
        "changes": [change.model_dump() for change in changes],
        "stale": stale,
        "errors": [*state.errors, *errors],
    }


@router("tme.after_apply", state=TurnState, reads={"forest"}, outcomes={"rederive", "answer"}, config=RederiveConfig)
def after_apply(state: TurnState, config: RederiveConfig) -> str:
    """Re-derive stale steps first when the graph says so (this turn's, and any an earlier turn left stale)."""
    return "rederive" if config.rederive and any(node.stale for node in _forest(state).active()) else "answer"


@node(
    "tme.rederive",
    state=TurnState,
    reads={"forest", "changes", "turn", "errors"},
    writes={"forest", "changes", "errors", "deferred"},
    config=RederiveStepsConfig,
)
async def rederive(state: TurnState, config: RederiveStepsConfig, context: RunContext) -> dict[str, Any]:
    """Re-derive stale steps in dependency order, one call per layer, at most ``max_rederive`` of them."""
    forest = _forest(state)
    turn, budget = state.turn + 1, config.max_rederive
    first = [key for change in state.changes for key in Change.model_validate(change).stale]
    changes: list[Change] = []
    errors: list[str] = []
    for layer in forest.stale_layers(first):
        ready = [node for node in layer if not any(_still_stale(forest, key) for key in node.depends_on)][:budget]
        if not ready:
            continue
        budget -= len(ready)
        needed = [node for node in forest.dependency_closure(n.key for n in ready) if node.status == "active"]
        lines = [step_line(forest, node, task=True) for node in [*needed, *ready]]
        labels = _labels(forest, ready)
        try:
            reply = await context.llm.structured(
                rederive_messages("\n".join(lines), list(labels.values())), Rederivation, temperature=config.temperature
            )
        except LLMOutputError as exc:
            context.log.warning("tme.rederive_unreadable", error=str(exc))
            errors.append(
                f"tme.rederive: the re-derivation of {', '.join(labels.values())} could not be read, so they stay stale: {exc}"
            )
            continue
        for item in reply.values:
            target = _target(forest, ready, item)
            if target is not None and target.stale:
                changes.append(forest.refresh(target.slot, item.value, turn=turn, task=target.task_key))
        if budget <= 0:
            break
    return {
        "forest": forest.as_json(),
        "changes": [*state.changes, *(change.model_dump() for change in changes)],
        "errors": [*state.errors, *errors],
        "deferred": [node.slot for node in forest.active() if node.stale],
    }


def _still_stale(forest: Forest, key: str) -> bool:
    node = forest.nodes.get(key)
    return node is not None and node.status == "active" and node.stale


def _labels(forest: Forest, nodes: list[TaskNode]) -> dict[str, str]:
    """Each step's name for the model, with its task where two of them share a name."""
    names = [slot_key(node.slot) for node in nodes]
    return {
        node.key: node.slot if names.count(slot_key(node.slot)) == 1 else f"{node.slot} (task {forest.task_title(node)})"
        for node in nodes
    }


def _target(forest: Forest, nodes: list[TaskNode], item: Rederived) -> TaskNode | None:
    """The step of ``nodes`` a re-derived value is for: by name, and by task where the name is not enough."""
    named = [node for node in nodes if slot_key(node.slot) == slot_key(item.slot)]
    if len(named) > 1 and item.task is not None:
        named = [
            node
            for node in named
            if node.task_key == slot_key(item.task) or slot_key(forest.task_title(node)) == slot_key(item.task)
        ]
    return named[0] if len(named) == 1 else None


@node("tme.synthesize", state=TurnState, reads={"forest", "changes", "errors", "utterance", "deferred"}, writes={"prompt"})
async def synthesize(state: TurnState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """Build the answer prompt from the task memory's current values (and a checked step's earlier ones)."""
    changes = [Change.model_validate(change) for change in state.changes]
    return {"prompt": synthesize_prompt(_forest(state), changes, state.errors, state.utterance, deferred=state.deferred)}


@node("tme.answer", state=TurnState, reads={"prompt"}, writes={"response"}, config=ModelCallConfig)
async def answer(state: TurnState, config: ModelCallConfig, context: RunContext) -> dict[str, Any]:
    """The reply, from the synthesized prompt only."""
    return {"response": (await context.llm.text(answer_messages(state.prompt), temperature=config.temperature)).strip()}


@node(
    "tme.persist",
    state=TurnState,
    reads={
        "session", "utterance", "turn", "attempt", "forest", "decomposition", "operations", "changes", "stale", "deferred", "errors",
        "prompt", "response",
    },
    writes={"conflict"},
    config=PersistConfig,
)  # fmt: skip
async def persist(state: TurnState, config: PersistConfig, context: RunContext) -> dict[str, Any]:
    """Save the forest and the turn in one write. When another turn of the session was saved since this one loaded,
    say so (``conflict``: the turn starts over from its load), or fail once the turn has run ``max_attempts`` times."""
    attempt = max(state.attempt, 1)  # a thread checkpointed before turns counted their attempts holds 0
    turn = {
        "utterance": state.utterance,
        "decomposition": state.decomposition,
        "operations": state.operations,
        "changes": state.changes,
        "stale": state.stale,
        "deferred": state.deferred,
        "errors": state.errors,
        "prompt": state.prompt,
        "response": state.response,
        "run_id": context.run_id,
        "attempts": attempt,
    }
    try:
        await save_turn(
            context.store, context.namespace, state.session, expected_turns=state.turn, forest=_forest(state), turn=turn,
            saved_by=f"{context.thread_id}/{attempt}",
        )  # fmt: skip
    except SessionConflictError as exc:
        if attempt >= config.max_attempts:
            raise SessionConflictError(
                f"session {state.session!r}: another turn of the session was saved first every time this turn ran ({attempt} "
                f"attempts; the last time turn {state.turn + 1}); this turn's changes were not saved: send the message again "
                "(tme.persist's max_attempts bounds how often a turn starts over)"
            ) from exc
        context.log.info("tme.turn_restarted", session=state.session, attempt=attempt, saved_first=state.turn + 1)
        return {"conflict": f"turn {state.turn + 1} was saved by another turn of the session first"}
    return {"conflict": ""}


@router("tme.after_persist", state=TurnState, reads={"conflict"}, outcomes={"again", "done"})
def after_persist(state: TurnState, config: NoConfig) -> str:
    """Start the turn over from its load when its save found the session moved on (``tme.persist`` bounds how often)."""
    return "again" if state.conflict else "done"
