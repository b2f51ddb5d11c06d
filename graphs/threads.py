"""A thread's checkpoints, whether it can resume, and forks of it from any checkpoint with edited state.

The runner saves a checkpoint after every step of a run (:mod:`mnemoflow.graphs.runner`). A thread whose last
checkpoint still has tasks to run (a failed, killed or cancelled run) resumes with ``runner.run(None, thread_id=T)``.

A fork copies a thread up to one of its checkpoints into a new thread and edits that checkpoint's state there, as
if the node(s) that made the checkpoint had written the edits (LangGraph's ``update_state`` with ``as_node``). Their
outgoing edges are taken again on the edited state: routers decide again and fan-outs send again, so the fork runs
the steps that follow the checkpoint with the edited values once resumed (``runner.run(None, thread_id=fork)``).
Edited fields replace their values, also fields with a reducer (``Annotated[list, operator.add]``). The source
thread is never written.

What cannot be forked, each refused with a :class:`~mnemoflow.errors.ConfigError` that says why:

- the last checkpoint of a finished run: nothing runs after it. Fork the step before it instead: its next node
  then runs again on the edited state.
- a checkpoint that holds a run's input before START ran (step -1 of a run): its state is not the input yet.
  Fork the checkpoint after START, whose state is the input.
- edits after which nothing would run: a router sending the edited state to END ends the run at the fork point.

The fork's edit checkpoint carries where it came from in its metadata (:class:`ForkOrigin`, shown by
:func:`thread_checkpoints`). Only the graph's own checkpoints are read and copied, never a subgraph's: a subgraph
step of the fork runs afresh.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.channels.binop import BinaryOperatorAggregate
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple
from langgraph.errors import InvalidUpdateError
from langgraph.graph import START as LANGGRAPH_START
from langgraph.types import Overwrite, StateSnapshot, StateUpdate

from mnemoflow.errors import ConfigError
from mnemoflow.graphs.loader import LoadedGraph
from mnemoflow.graphs.runner import GraphRunner, field_problems
from mnemoflow.graphs.spec import START
from mnemoflow.nodes.registry import REGISTRY, Registry

__all__ = ["RUN_INPUT", "CheckpointView", "ForkOrigin", "edit_problems", "fork_thread", "thread_checkpoints"]

RUN_INPUT = "input"
"""What :attr:`CheckpointView.after` names for a checkpoint that holds a run's input, before any step ran."""

_FORKED_FROM_THREAD = "forked_from_thread"
_FORKED_FROM_CHECKPOINT = "forked_from_checkpoint"
_EDITED_AS = "edited_as"
_EDITED_FIELDS = "edited_fields"
"""Metadata keys of a fork's edit checkpoint (string values: LangGraph keeps only scalars from a config's metadata)."""


@dataclass(frozen=True)
class ForkOrigin:
    """The thread and checkpoint a fork was made from."""

    thread_id: str
    checkpoint_id: str


@dataclass(frozen=True)
class CheckpointView:
    """One checkpoint of a thread: the state after a step, and what runs next."""

    checkpoint_id: str
    parent_id: str | None
    """The checkpoint it follows; None for a thread's first."""
    step: int
    """LangGraph's step number: -1 for a run's input, 0 after START, then one per step."""
    source: str
    """How it was made: ``input`` (a run's input), ``loop`` (a step ran), ``update`` (a fork's edits), ``fork``."""
    after: tuple[str, ...]
    """The node(s) whose writes made it: graph node names, ``START``, or :data:`RUN_INPUT`; for a fork's edit
    checkpoint, the node(s) the edits were written as. Empty when unknown (an update made outside this module)."""
    next: tuple[str, ...]
    """The node(s) that run after it (one entry per task: a fan-out lists its node once per item); empty at the end."""
    created_at: str
    """ISO 8601 time it was saved (a fork's copies keep their source's)."""
    values: dict[str, Any]
    """The graph state at this checkpoint, raw: only the fields written so far."""
    forked_from: ForkOrigin | None = None
    """On a fork's edit checkpoint: the checkpoint it was forked from."""
    edited: tuple[str, ...] = ()
    """On a fork's edit checkpoint: the fields edited."""


def _saver(runner: GraphRunner) -> BaseCheckpointSaver[Any]:
    if runner.checkpointer is None:
        raise ConfigError(f"this runner of {runner.graph.spec.name} has no checkpointer: its runs keep no checkpoints")
    return runner.checkpointer


def _config(thread_id: str, checkpoint_id: str | None = None) -> RunnableConfig:
    """The config that names a thread's graph-level checkpoints (never a subgraph's), or one of them."""
    configurable: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ""}
    if checkpoint_id is not None:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


def _checkpoint_id(config: RunnableConfig | None) -> str | None:
    if config is None:
        return None
    checkpoint_id = config.get("configurable", {}).get("checkpoint_id")
    return str(checkpoint_id) if checkpoint_id else None


def _step_names(names: Iterable[str]) -> tuple[str, ...]:
    """LangGraph node names as a graph file writes them (``START``)."""
    return tuple(START if name == LANGGRAPH_START else name for name in names)


def _unique(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


def _listed(text: object) -> tuple[str, ...]:
    return tuple(part for part in str(text or "").split(",") if part)


def _view(snapshot: StateSnapshot, parent: StateSnapshot | None) -> CheckpointView:
    metadata: Mapping[str, Any] = snapshot.metadata or {}
    source = str(metadata.get("source", ""))
    if source == "input":
        after: tuple[str, ...] = (RUN_INPUT,)
    elif source == "update":
        after = _listed(metadata.get(_EDITED_AS))
    else:
        after = _step_names(_unique(task.name for task in parent.tasks)) if parent is not None else ()
    origin = None
    if metadata.get(_FORKED_FROM_THREAD) and metadata.get(_FORKED_FROM_CHECKPOINT):
        origin = ForkOrigin(str(metadata[_FORKED_FROM_THREAD]), str(metadata[_FORKED_FROM_CHECKPOINT]))
    return CheckpointView(
        checkpoint_id=str(_checkpoint_id(snapshot.config)),
        parent_id=_checkpoint_id(snapshot.parent_config),
        step=int(metadata.get("step", -1)),
        source=source,
        after=after,
        next=_step_names(snapshot.next),
        created_at=snapshot.created_at or "",
        values=dict(snapshot.values) if isinstance(snapshot.values, Mapping) else {},
        forked_from=origin,
        edited=_listed(metadata.get(_EDITED_FIELDS)),
    )


async def thread_checkpoints(runner: GraphRunner, thread_id: str) -> list[CheckpointView]:
    """The thread's checkpoints, oldest first (an unknown thread has none). Raises ``ConfigError`` when the runner
    has no checkpointer."""
    _saver(runner)
    snapshots = [snapshot async for snapshot in runner.compiled.aget_state_history(_config(thread_id))]
    snapshots.reverse()  # LangGraph lists them newest first
    by_id = {_checkpoint_id(snapshot.config): snapshot for snapshot in snapshots}
    return [_view(snapshot, by_id.get(_checkpoint_id(snapshot.parent_config))) for snapshot in snapshots]


def edit_problems(
    graph: LoadedGraph, edits: Mapping[str, Any], state: Mapping[str, Any] | None = None, registry: Registry = REGISTRY
) -> list[tuple[str, str]]:
    """What is wrong with editing ``edits`` into the state of a run of ``graph``: (field, message) pairs, empty
    when nothing is (:func:`~mnemoflow.graphs.runner.field_problems`; ``state``, the checkpoint's values, lets
    validators that read several fields check the edited state as a whole)."""
    return field_problems(graph, edits, state=state, registry=registry)


def _coerced(runner: GraphRunner, edits: Mapping[str, Any], state: Mapping[str, Any]) -> dict[str, Any]:
    """Checked edits as the state model reads them (``"3"`` for an int is 3), in plain Python values."""
    model = runner.registry.states[runner.graph.spec.state]
    dumped = model.model_validate({**state, **edits}).model_dump(include=set(edits))
    return {field: dumped.get(field, value) for field, value in edits.items()}


def _check_made_by(runner: GraphRunner, thread_id: str, saved: CheckpointTuple) -> None:
    """Refuse a thread whose state has channels this graph does not (another graph's thread, or a version of this
    graph with other fields)."""
    foreign = sorted(set(saved.checkpoint["channel_versions"]) - set(runner.compiled.channels))
    if foreign:
        name = runner.graph.spec.name
        raise ConfigError(
            f"thread {thread_id!r} is not a thread of {name}: its state has {', '.join(foreign)}, which {name}'s has not"
        )


async def _chain(saver: BaseCheckpointSaver[Any], last: CheckpointTuple) -> list[CheckpointTuple]:
    """``last`` and its ancestors, oldest first (back to the oldest one kept)."""
    chain = [last]
    while chain[-1].parent_config is not None:
        parent = await saver.aget_tuple(chain[-1].parent_config)
        if parent is None:
            break
        chain.append(parent)
    chain.reverse()
    return chain


async def _copy(saver: BaseCheckpointSaver[Any], chain: Sequence[CheckpointTuple], thread_id: str) -> None:
    """Put the checkpoints of ``chain`` (oldest first) into thread ``thread_id``, each with its parent, ids and
    metadata kept; every one's saved task writes but the last's go along, so the copy's history reads as the source's
    and its last checkpoint's next step runs afresh."""
    parent_id: str | None = None
    for saved in chain:
        stored = await saver.aput(
            _config(thread_id, parent_id), saved.checkpoint, saved.metadata, dict(saved.checkpoint["channel_versions"])
        )
        if saved is not chain[-1]:
            by_task: dict[str, list[tuple[str, Any]]] = {}
            for task_id, channel, value in saved.pending_writes or []:
                by_task.setdefault(task_id, []).append((channel, value))
            for task_id, writes in by_task.items():
                await saver.aput_writes(stored, writes, task_id)
        parent_id = saved.checkpoint["id"]


async def _edited_as(runner: GraphRunner, saved: CheckpointTuple) -> list[str]:
    """The node(s) whose writes made a checkpoint: the tasks of its parent's step, or the node(s) a fork's edits
    were written as. Empty when unknown."""
    if saved.metadata.get("source") == "update":
        return list(_listed(saved.metadata.get(_EDITED_AS)))
    if saved.parent_config is None:
        return []
    parent = await runner.compiled.aget_state(saved.parent_config)
    return list(_unique(task.name for task in parent.tasks))


async def fork_thread(
    runner: GraphRunner, thread_id: str, checkpoint_id: str, edits: Mapping[str, Any], new_thread_id: str | None = None
) -> str:
    """Fork thread ``thread_id`` at checkpoint ``checkpoint_id`` with ``edits`` (field: new value) into a new thread,
    whose id is returned (``new_thread_id``, else a fresh one). ``runner.run(None, namespace=..., thread_id=...)`` on
    it then runs the steps after that checkpoint on the edited state; see the module's docstring for what a fork
    means and what cannot be forked.

    Raises ``ConfigError`` naming the problem: bad edits (every one, as :func:`edit_problems` finds them), an unknown
    thread or checkpoint, a thread of another graph, a new thread id already taken, or a fork with nothing to run.
    Nothing is written unless the fork is made.
    """
    saver = _saver(runner)
    name = runner.graph.spec.name
    saved = await saver.aget_tuple(_config(thread_id, checkpoint_id))
    if saved is None:
        if await saver.aget_tuple(_config(thread_id)) is None:
            raise ConfigError(f"no thread {thread_id!r} of {name} has checkpoints")
        raise ConfigError(f"thread {thread_id!r} of {name} has no checkpoint {checkpoint_id!r}")
    _check_made_by(runner, thread_id, saved)
    step = int(saved.metadata.get("step", -1))
    where = f"checkpoint {checkpoint_id} (step {step}) of thread {thread_id!r}"
    if saved.metadata.get("source") == "input":
        raise ConfigError(
            f"{where} holds a run's input before START ran; fork the checkpoint after START (step {step + 1}) to edit the input"
        )
    snapshot = await runner.compiled.aget_state(saved.config)
    if not (snapshot.next or snapshot.tasks):
        raise ConfigError(
            f"{where} is where its run ended: nothing runs after it; fork an earlier step, whose next steps then run on the edits"
        )
    problems = edit_problems(runner.graph, edits, snapshot.values, runner.registry)
    if problems:
        listed = "\n".join(f"  {field}: {message}" for field, message in problems)
        raise ConfigError(f"edits of {where} refused:\n{listed}")

    new_thread_id = new_thread_id or uuid.uuid4().hex
    if new_thread_id == thread_id or await saver.aget_tuple(_config(new_thread_id)) is not None:
        raise ConfigError(f"thread {new_thread_id!r} already exists; a fork needs a new thread id")
    as_nodes = await _edited_as(runner, saved)
    values = {
        field: Overwrite(value) if isinstance(runner.compiled.channels.get(field), BinaryOperatorAggregate) else value
        for field, value in _coerced(runner, edits, snapshot.values).items()
    }
    updates = [StateUpdate(values, as_nodes[0] if as_nodes else None), *(StateUpdate(None, node) for node in as_nodes[1:])]
    config = _config(new_thread_id, saved.checkpoint["id"])
    config["metadata"] = {
        _FORKED_FROM_THREAD: thread_id,
        _FORKED_FROM_CHECKPOINT: saved.checkpoint["id"],
        _EDITED_AS: ",".join(as_nodes),
        _EDITED_FIELDS: ",".join(edits),
    }
    try:
        await _copy(saver, await _chain(saver, saved), new_thread_id)
        try:
            await runner.compiled.abulk_update_state(config, [updates])
        except InvalidUpdateError as exc:
            raise ConfigError(f"{where} cannot take edits: {exc}") from exc
        if not await runner.resumable(new_thread_id):
            raise ConfigError(f"with these edits nothing runs after {where}: its run would end there")
    except BaseException:
        await saver.adelete_thread(new_thread_id)
        raise
    return new_thread_id
