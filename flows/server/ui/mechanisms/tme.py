"""The TME views: a namespace's conversations, and one conversation's task forest after any of its turns, its stale
marks with their reasons, and the value history of any step.

What TME stores is :mod:`mnemoflow.nodes.tme.model`'s contract: a ``TmeSession`` record (the turn count and the keys
of every task node), one ``TaskNode`` record per step holding the step as it is now (with the history of its
earlier values: version, value, turn and reason), and one ``TmeTurn`` record per turn (the utterance, the TRIM
operations, the changes, the slots marked stale, the errors, the answer prompt and reply, the run id). All are read
by their stable ids through ``get_nodes``, so both backends serve the views.

The forest is stored as it is after the last turn only. The forest after an earlier turn is rebuilt by replaying
the turns' recorded operations from an empty forest through the mechanism's own rules
(:func:`mnemoflow.nodes.tme.turn.apply_operations`), each turn's re-derivations taking the value the step's history
gives for that turn. The rebuild is checked: the forest it ends with must equal the stored one, field by field
(values, versions, histories, statuses, links, stale marks). When it does not (a turn record missing or unreadable,
turns saved without their operations, or more than :data:`MAX_TURNS` turns), earlier forests are not shown, and the
page says why; the forest after the last turn is always the stored one.

Pages: ``/mechanisms/tme`` (conversations, optionally of one ``namespace``) and
``/mechanisms/tme/session?namespace=&session=`` with optional ``turn`` (the forest after that turn; the last by
default), ``run`` (the turn a run saved) and ``step`` (a step's key: its value history). APIs, the same data as
JSON: ``/api/mechanisms/tme/sessions``, ``/api/mechanisms/tme/session`` and ``/api/mechanisms/tme/step``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import ValidationError

from mnemoflow.flows.server.state import ServerState, server_state
from mnemoflow.flows.server.ui import pages
from mnemoflow.flows.server.ui.runs import run_url
from mnemoflow.flows.server.ui.views import UIError, get_many, record_url, store_errors
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import NodeRecord
from mnemoflow.nodes.tme.agents import Operation
from mnemoflow.nodes.tme.conversation import forest_from_records, node_record_ids
from mnemoflow.nodes.tme.forest import Forest, ForestError, TaskNode, node_key, slot_key
from mnemoflow.nodes.tme.model import SESSION, TASK_NODE, TURN, session_record_id, task_node_id, turn_record_id
from mnemoflow.nodes.tme.turn import apply_operations

__all__ = [
    "GRAPH",
    "MAX_TURNS",
    "rebuild_forests",
    "record_links",
    "router",
    "run_links",
    "session_url",
    "session_view",
    "sessions_view",
    "step_view",
]

GRAPH = "tme-turn"
"""The library graph whose runs are a conversation's turns (the input's ``session`` names the conversation)."""
MAX_SESSIONS = 200
"""Conversations listed per namespace, most recently changed first."""
MAX_TURNS = 1000
"""Turn records read for a conversation's page: the most recent ones. A longer conversation shows its last turns
and only its current forest (the replay needs every turn from the first)."""

router = APIRouter(include_in_schema=False)
State = Annotated[ServerState, Depends(server_state)]
Namespace = Annotated[str, Query(min_length=1, max_length=200, description="The namespace the turns ran in.")]
Session = Annotated[str, Query(min_length=1, max_length=200, description="The conversation's session id.")]
TurnNumber = Annotated[int, Query(ge=1, le=1_000_000_000, description="A turn of the conversation, from 1.")]
StepKey = Annotated[str, Query(min_length=1, max_length=300, description="A step's key (task/slot, lower case; a task's own: its title).")]
RunId = Annotated[str, Query(min_length=1, max_length=200, description="A run of tme-turn: show the turn it saved.")]


def session_url(namespace: str, session: str, **extra: str | int) -> str:
    """The conversation page's address (``extra``: ``turn``, ``step``, ``run``)."""
    return "/mechanisms/tme/session?" + urlencode({"namespace": namespace, "session": session, **extra})


def run_links(run: dict[str, Any]) -> list[dict[str, str]]:
    """A ``tme-turn`` run links to its conversation, at the turn it saved (the input's ``session``)."""
    namespace, values = run.get("namespace"), run.get("input")
    session = values.get("session") if isinstance(values, dict) else None
    if run.get("graph") != GRAPH or not namespace or not isinstance(session, str) or not session:
        return []
    extra = {"run": str(run["run_id"])} if run.get("run_id") else {}
    return [
        {
            "label": f"TME conversation {session}: the task forest after this turn",
            "url": session_url(str(namespace), session, **extra),
        }
    ]


def record_links(node: dict[str, Any]) -> list[dict[str, str]]:
    """The views a record's page links to (``node`` as :func:`~mnemoflow.flows.server.ui.views.node_json` gives it):
    a conversation to its page, a task node to its value history, a turn to the forest after it."""
    namespace, kind, properties = node.get("namespace"), node.get("kind"), node.get("properties")
    p = properties if isinstance(properties, dict) else {}
    session = p.get("session")
    if not namespace or not isinstance(session, str) or not session:
        return []
    if kind == SESSION:
        return [{"label": f"TME conversation {session}", "url": session_url(str(namespace), session)}]
    if kind == TASK_NODE and isinstance(p.get("slot"), str):
        task = p.get("task_key")
        task = task if isinstance(task, str) and task != slot_key(p["slot"]) else None
        url = session_url(str(namespace), session, step=node_key(task, p["slot"]))
        return [{"label": f"TME conversation {session}: the history of this step", "url": url}]
    if kind == TURN and _int(p.get("turn")) > 0:
        url = session_url(str(namespace), session, turn=_int(p.get("turn")))
        return [{"label": f"TME conversation {session}: the forest after this turn", "url": url}]
    return []


# -- reading -----------------------------------------------------------------------------------------------


def _int(value: object, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _strings(value: object) -> list[str]:
    return [str(item) for item in value] if isinstance(value, list) else []


def _dicts(value: object) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


@dataclass(frozen=True)
class _Conversation:
    """A conversation as stored: its session record, its forest now, and its turn records (``first`` is the number
    of ``turns[0]``; None where a record is missing)."""

    record: NodeRecord
    forest: Forest
    unreadable: list[str]
    first: int
    turns: list[NodeRecord | None]


async def _conversation(store: GraphStore, namespace: str, session: str) -> _Conversation:
    """The stored conversation; 404 when the namespace has no such session."""
    [record] = await get_many(store, namespace, [session_record_id(namespace, session)])
    if record is None or record.kind != SESSION:
        raise UIError(404, f"no TME conversation {session!r} in namespace {namespace!r}")
    keys = _strings(record.properties.get("nodes"))
    tasks: list[dict[str, Any]] = []
    unreadable = []
    for key, node in zip(keys, await get_many(store, namespace, node_record_ids(namespace, session, record.properties)), strict=True):
        if node is None or node.kind != TASK_NODE:
            continue
        try:
            tasks.append(TaskNode.model_validate(node.properties.get("task")).model_dump())
        except ValidationError:
            unreadable.append(key)
    count = _int(record.properties.get("turns"))
    first = max(1, count - MAX_TURNS + 1)
    numbers = range(first, count + 1)
    turns = await get_many(store, namespace, [turn_record_id(namespace, session, number) for number in numbers])
    turns = [turn if turn is not None and turn.kind == TURN else None for turn in turns]
    return _Conversation(record, forest_from_records(record.properties, tasks), unreadable, first, turns)


# -- the forest after each turn ----------------------------------------------------------------------------


def _value_of_version(node: TaskNode, version: int) -> tuple[bool, str | None]:
    """The value ``node`` held at ``version`` (from its history, or its current value), and whether it is known."""
    for entry in node.history:
        if entry.version == version:
            return True, entry.value
    return (True, node.value) if node.version == version else (False, None)


def _rederive(forest: Forest, change: dict[str, Any], turn: int, final: Forest) -> None:
    """Replay a re-derivation (a recorded change) at ``turn``: the new value is the one the step's stored history
    gives after the version this turn re-derived (no such entry: the value did not change, and only the stale
    mark goes). The step is found by the change's key, or by its slot in turns saved before steps had task keys."""
    try:
        node = forest.nodes.get(str(change.get("key") or "")) or forest.get(str(change.get("slot", "")))
    except ForestError:
        return
    if node is None or node.status != "active":
        return
    value = node.value
    stored = final.nodes.get(node.key)
    if stored is not None:
        entry = next(
            (e for e in stored.history if e.turn == turn and e.reason == "re-derived" and e.version == node.version), None
        )
        if entry is not None:
            known, later = _value_of_version(stored, entry.version + 1)
            value = later if known else value
    try:
        forest.refresh(node.slot, value, turn=turn, task=node.task_key)
    except ForestError:
        return


def rebuild_forests(turns: Sequence[NodeRecord | None], final: Forest) -> tuple[list[Forest], str]:
    """The forest after each turn, rebuilt from turn 1's record on by replaying the recorded operations (and
    re-derivations), and ``""`` when the last rebuilt forest equals ``final`` (the stored one), else why not: then
    the forests are not to be trusted and the list is empty."""
    forest = Forest()
    forests: list[Forest] = []
    for number, record in enumerate(turns, start=1):
        if record is None:
            return [], f"the record of turn {number} is missing"
        try:
            operations = [Operation.model_validate(operation) for operation in _dicts(record.properties.get("operations"))]
        except ValidationError:
            return [], f"the operations of turn {number} cannot be read"
        forest, _, _ = apply_operations(forest, operations, number)
        for change in _dicts(record.properties.get("changes")):
            if change.get("op") == "rederive":
                _rederive(forest, change, number, final)
        forests.append(forest.model_copy(deep=True))
    if not forests:
        return [], "the conversation has no turns yet"
    if forests[-1].model_dump() != final.model_dump():
        return [], "replaying the recorded operations does not give the stored forest (a turn saved without its operations?)"
    return forests, ""


def _step_json(forest: Forest, node: TaskNode, turn: int, links: dict[str, str]) -> dict[str, Any]:
    """A step as the forest after ``turn`` holds it (children added by :func:`_forest_json`)."""
    return {
        "key": node.key,
        "slot": node.slot,
        "task": forest.task_title(node),
        "value": node.value,
        "version": node.version,
        "status": node.status,
        "stale": node.stale,
        "stale_reason": node.stale_reason,
        "changed_children": [flag.model_dump() for flag in node.changed_children],
        "parent": node.parent,
        "depends_on": [
            {
                "key": key,
                "slot": forest.nodes[key].slot if key in forest.nodes else key,
                "status": forest.nodes[key].status if key in forest.nodes else "missing",
            }
            for key in node.depends_on
        ],
        "created_turn": node.created_turn,
        "updated_turn": node.updated_turn,
        "changed": node.updated_turn == turn,
        "history": [entry.model_dump() for entry in node.history],
        "url": links.get(node.key, ""),
    }


def _order(node: TaskNode) -> tuple[int, str]:
    return (node.created_turn, node.key)


def _forest_json(forest: Forest, turn: int, links: dict[str, str]) -> dict[str, Any]:
    """The forest after ``turn``: active steps as a tree (a step whose task is not active is shown as a root),
    removed steps, and the stale steps with their reasons.

    ``{"turn", "roots": [step + "children": [...]], "removed": [step], "stale": [{"key", "slot", "reason"}],
    "active": n, "removed_count": n}`` where a step is ``{"key", "slot", "task", "value", "version", "status", "stale",
    "stale_reason", "changed_children": [{"child", "cause", "turn"}], "parent", "depends_on": [{"key", "slot",
    "status"}], "created_turn", "updated_turn", "changed",
    "history": [{"version", "value", "turn", "reason"}], "url"}`` (``changed``: this turn changed it)."""
    active = sorted(forest.active(), key=_order)
    keys = {node.key for node in active}
    placed: set[str] = set()

    def tree(node: TaskNode) -> dict[str, Any]:
        placed.add(node.key)
        step = _step_json(forest, node, turn, links)
        step["children"] = [tree(child) for child in active if child.parent == node.key and child.key not in placed]
        return step

    roots = [tree(node) for node in active if (node.parent is None or node.parent not in keys) and node.key not in placed]
    roots += [tree(node) for node in active if node.key not in placed]  # a parent loop: shown rather than lost
    removed = [node for node in sorted(forest.nodes.values(), key=_order) if node.status != "active"]  # replaced too
    return {
        "turn": turn,
        "roots": roots,
        "removed": [_step_json(forest, node, turn, links) for node in removed],
        "stale": [{"key": node.key, "slot": node.slot, "reason": node.stale_reason or ""} for node in active if node.stale],
        "active": len(active),
        "removed_count": len(removed),
    }


# -- views -------------------------------------------------------------------------------------------------


def _turn_json(namespace: str, session: str, number: int, record: NodeRecord | None, *, full: bool) -> dict[str, Any]:
    """A turn as the page lists it; ``full`` adds the decomposition, operations, prompt and response."""
    p = record.properties if record is not None else {}
    run_id = str(p.get("run_id") or "")
    turn: dict[str, Any] = {
        "turn": number,
        "missing": record is None,
        "utterance": str(p.get("utterance") or ""),
        "changes": [
            {
                "op": str(c.get("op", "")),
                "slot": str(c.get("slot", "")),
                "detail": str(c.get("detail") or ""),
                "stale": _strings(c.get("stale")),
            }
            for c in _dicts(p.get("changes"))
        ],
        "stale": _strings(p.get("stale")),
        "errors": _strings(p.get("errors")),
        "run_id": run_id,
        "run_url": run_url(namespace, run_id) if run_id else "",
        "url": session_url(namespace, session, turn=number),
        "saved_at": record.created_at.timestamp() if record is not None and record.created_at else None,
    }
    if full:
        decomposition = p.get("decomposition")
        turn.update(
            decomposition=decomposition if isinstance(decomposition, dict) else {},
            operations=_dicts(p.get("operations")),
            prompt=str(p.get("prompt") or ""),
            response=str(p.get("response") or ""),
            record_url=record_url(namespace, record.id) if record is not None else "",
        )
    return turn


async def sessions_view(store: GraphStore, namespace: str | None) -> list[dict[str, Any]]:
    """The conversations of a namespace (or of every namespace), most recently changed first, at most
    ``MAX_SESSIONS`` per namespace: ``[{"namespace", "session", "id", "turns", "steps", "updated_at", "url"}]``."""
    with store_errors():
        names = [namespace] if namespace else [summary.name for summary in await store.namespaces()]
        records: list[NodeRecord] = []
        for name in names:
            records += await store.list_nodes(name, kind=SESSION, limit=MAX_SESSIONS)
    found: list[dict[str, Any]] = []
    for record in records:
        session = str(record.properties.get("session") or "")
        found.append(
            {
                "namespace": record.namespace,
                "session": session,
                "id": record.id,
                "turns": _int(record.properties.get("turns")),
                "steps": len(_strings(record.properties.get("nodes"))),
                "updated_at": record.updated_at.timestamp() if record.updated_at else None,
                "url": session_url(record.namespace, session),
            }
        )
    found.sort(key=lambda found_session: found_session["updated_at"] or 0, reverse=True)
    return found


def _pick_turn(conversation: _Conversation, turn: int | None, run: str | None) -> tuple[int, str]:
    """The turn to show (the one ``run`` saved, else ``turn``, else the last) and a note when ``run`` saved none."""
    count = conversation.first + len(conversation.turns) - 1
    if run is not None:
        for number, record in enumerate(conversation.turns, start=conversation.first):
            if record is not None and record.properties.get("run_id") == run:
                return number, ""
        return count, f"run {run} saved no turn of this conversation (it failed, or was refused); showing the last turn"
    if turn is None:
        return count, ""
    if not conversation.first <= turn <= count:
        shown = f"turns {conversation.first} to {count}" if count else "no turns"
        raise UIError(404, f"the TME conversation {conversation.record.properties.get('session')!r} has {shown}, not turn {turn}")
    return turn, ""


def _forests(conversation: _Conversation) -> tuple[list[Forest], str]:
    """The conversation's forest after each turn (see :func:`rebuild_forests`), or none and why."""
    if conversation.first != 1:
        return [], f"the conversation has more than {MAX_TURNS} turns: only the last are read"
    return rebuild_forests(conversation.turns, conversation.forest)


async def session_view(
    store: GraphStore, namespace: str, session: str, *, turn: int | None = None, run: str | None = None, step: str | None = None
) -> dict[str, Any]:
    """A conversation: its turns, the chosen turn in full, the task forest after it (see :func:`_forest_json`) and,
    with ``step`` (a step's key), that step's value history (see :func:`step_view`).

    ``{"namespace", "session", "id", "turns", "first_turn", "updated_at", "record_url", "url", "turn", "note",
    "history": {"rebuilt", "reason"}, "turn_list": [{"turn", "missing", "utterance", "changes": [{"op", "slot",
    "detail", "stale"}], "stale", "errors", "run_id", "run_url", "url", "saved_at"}], "chosen": the chosen turn with
    "decomposition", "operations", "prompt", "response", "record_url" | None, "forest": {...} | None, "step": {...} |
    None, "unreadable_steps": [keys]}``. ``history.rebuilt`` says whether the forests of earlier turns could be
    rebuilt (``reason``: why not); when not, ``forest`` is None for any turn but the last. 404 for an unknown
    conversation, a turn it does not have, or an unknown step.
    """
    conversation = await _conversation(store, namespace, session)
    count = conversation.first + len(conversation.turns) - 1
    chosen_turn, note = _pick_turn(conversation, turn, run)
    forests, reason = _forests(conversation)
    links = {key: session_url(namespace, session, turn=chosen_turn, step=key) for key in conversation.forest.nodes}
    then: Forest | None = conversation.forest if chosen_turn == count else forests[chosen_turn - 1] if forests else None
    history = None
    if step is not None:
        node = conversation.forest.nodes.get(step)
        if node is None:
            raise UIError(404, f"the TME conversation {session!r} has no step {step!r}")
        history = _history_json(namespace, session, node, *_step_then(conversation, forests, step, chosen_turn))
    chosen = None
    if chosen_turn:
        chosen = _turn_json(namespace, session, chosen_turn, conversation.turns[chosen_turn - conversation.first], full=True)
    record = conversation.record
    return {
        "namespace": namespace,
        "session": session,
        "id": record.id,
        "turns": count,
        "first_turn": conversation.first,
        "updated_at": record.updated_at.timestamp() if record.updated_at else None,
        "record_url": record_url(namespace, record.id),
        "url": session_url(namespace, session),
        "turn": chosen_turn,
        "note": note,
        "history": {"rebuilt": bool(forests), "reason": reason},
        "turn_list": [
            _turn_json(namespace, session, number, turn_record, full=False)
            for number, turn_record in enumerate(conversation.turns, start=conversation.first)
        ],
        "chosen": chosen,
        "forest": _forest_json(then, chosen_turn, links) if then is not None else None,
        "step": history,
        "unreadable_steps": conversation.unreadable,
    }


def _history_json(namespace: str, session: str, node: TaskNode, then: TaskNode | None, known: bool) -> dict[str, Any]:
    """A step's value history (see :func:`step_view`); ``then`` is the step in the forest after the chosen turn,
    ``known`` whether that forest is known."""
    versions = []
    start = node.created_turn
    for entry in node.history:
        versions.append(
            {
                "version": entry.version,
                "value": entry.value,
                "from_turn": start,
                "until_turn": entry.turn,
                "ended_by": entry.reason,
                "current": False,
            }
        )
        start = entry.turn
    versions.append(
        {"version": node.version, "value": node.value, "from_turn": start, "until_turn": None, "ended_by": None, "current": True}
    )
    return {
        "key": node.key,
        "slot": node.slot,
        "status": node.status,
        "value": node.value,
        "version": node.version,
        "stale": node.stale,
        "stale_reason": node.stale_reason,
        "parent": node.parent,
        "created_turn": node.created_turn,
        "updated_turn": node.updated_turn,
        "record_url": record_url(namespace, task_node_id(namespace, session, node.key)),
        "shown_version": then.version if known and then is not None else None,
        "versions": versions,
    }


def _step_then(conversation: _Conversation, forests: list[Forest], step: str, turn: int) -> tuple[TaskNode | None, bool]:
    """The step as the forest after ``turn`` held it, and whether that forest is known (the last turn's always is)."""
    if turn == conversation.first + len(conversation.turns) - 1:
        return conversation.forest.nodes.get(step), True
    if forests and 1 <= turn <= len(forests):
        return forests[turn - 1].nodes.get(step), True
    return None, False


async def step_view(store: GraphStore, namespace: str, session: str, step: str, *, turn: int | None = None) -> dict[str, Any]:
    """A step's value history: every version with its value, the turns it held from and until, and why it ended.

    ``{"key", "slot", "status", "value", "version", "stale", "stale_reason", "parent", "created_turn",
    "updated_turn", "record_url", "shown_version", "versions": [{"version", "value", "from_turn", "until_turn",
    "ended_by", "current"}]}``, oldest first; ``shown_version`` is the version the step had after ``turn`` (the last
    turn by default; None when that forest is not known, or the step did not exist yet). 404 for an unknown
    conversation or step.
    """
    conversation = await _conversation(store, namespace, session)
    node = conversation.forest.nodes.get(step)
    if node is None:
        raise UIError(404, f"the TME conversation {session!r} has no step {step!r}")
    chosen, _ = _pick_turn(conversation, turn, None)
    forests = _forests(conversation)[0] if chosen != conversation.first + len(conversation.turns) - 1 else []
    return _history_json(namespace, session, node, *_step_then(conversation, forests, step, chosen))


# -- pages -------------------------------------------------------------------------------------------------


@router.get("/mechanisms/tme")
async def sessions_page(
    request: Request, state: State, namespace: Annotated[str | None, Query(max_length=200)] = None
) -> HTMLResponse:
    sessions = await sessions_view(state.store, namespace or None)
    return pages.render(
        request,
        "mechanisms/tme_sessions.html",
        section="memory",
        title="TME conversations",
        sessions=sessions,
        namespace=namespace,
    )


@router.get("/mechanisms/tme/session")
async def session_page(
    request: Request,
    state: State,
    namespace: Namespace,
    session: Session,
    turn: TurnNumber | None = None,
    run: Annotated[str | None, Query(max_length=200)] = None,
    step: Annotated[str | None, Query(max_length=300)] = None,
) -> HTMLResponse:
    shown = await session_view(state.store, namespace, session, turn=turn, run=run or None, step=step or None)
    return pages.render(request, "mechanisms/tme.html", section="memory", title=f"TME conversation {session}", conversation=shown)


# -- APIs --------------------------------------------------------------------------------------------------


@router.get("/api/mechanisms/tme/sessions")
async def sessions_api(
    state: State, namespace: Annotated[str | None, Query(min_length=1, max_length=200)] = None
) -> list[dict[str, Any]]:
    """The TME conversations of a namespace (or of all), most recently changed first."""
    return await sessions_view(state.store, namespace)


@router.get("/api/mechanisms/tme/session")
async def session_api(
    state: State, namespace: Namespace, session: Session, turn: TurnNumber | None = None, run: RunId | None = None
) -> dict[str, Any]:
    """A conversation: its turns and the task forest after one of them (the last by default)."""
    return await session_view(state.store, namespace, session, turn=turn, run=run)


@router.get("/api/mechanisms/tme/step")
async def step_api(
    state: State, namespace: Namespace, session: Session, step: StepKey, turn: TurnNumber | None = None
) -> dict[str, Any]:
    """A step's value history, version by version."""
    return await step_view(state.store, namespace, session, step, turn=turn)
