"""The evaluation scenarios of TME as scripted conversations: the paper's four and two of this project's.

The conversations come from the evaluation's data file (``bench/evaluation/data/tme/scenarios.yaml``, read with
``mnemoflow.evaluation.tme.load_scenarios``), where each turn holds the utterance, the expected decomposition and
TRIM classification, the slots it marks stale and a reference answer: here they are the scripted model replies.
This module adds what only the scripted tests check: the re-derivations the trip scenario runs with (its graph
re-derives stale steps) and what the task forest must look like after each turn: the nodes the turn adds or
changes (complete, with their whole history). The expected forest after a turn is the one after the turn before,
with those nodes replaced (:func:`expected_forests`); the tests compare the whole forest every turn.

Values are short facts the user states ("Paris", "June 10-14") so that the stale-fact measure
(``mnemoflow.nodes.tme.measure.stale_facts``, whole values, whole words) finds them in a prompt when they leak, and no
current value contains a replaced one as a phrase (which the measure would count although nothing leaked).

Used by ``tests/test_tme_scenarios.py`` and ``bench/tme.py``: :func:`script_scenario` scripts a
:class:`ScriptedOpenAIServer`, :func:`play` runs every turn through a ``tme-turn`` runner and measures each
turn's answer prompt (as sent over HTTP) against the full-history prompt a linear agent would send.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mnemoflow.evaluation.tme import ScenarioData, load_scenarios
from mnemoflow.graphs import GraphRunner, LoadedGraph, load_graph
from mnemoflow.nodes.tme.agents import ANSWER_SYSTEM, CLASSIFY_SYSTEM, DECOMPOSE_SYSTEM, REDERIVE_SYSTEM
from mnemoflow.nodes.tme.forest import Forest, node_key, slot_key
from mnemoflow.nodes.tme.measure import count_tokens, full_history_prompt, stale_facts
from tests.support.openai_server import Rule, ScriptedOpenAIServer

__all__ = [
    "SCENARIOS",
    "F",
    "H",
    "Node",
    "Scenario",
    "Turn",
    "TurnRecord",
    "checked_values",
    "expected_forests",
    "forest_view",
    "play",
    "role_of",
    "script_scenario",
    "turn_graph",
]

LIBRARY_GRAPH = Path(__file__).resolve().parents[2] / "graphs" / "library" / "tme-turn.yaml"
ROLES = {
    DECOMPOSE_SYSTEM[:30]: "decompose",
    CLASSIFY_SYSTEM[:30]: "classify",
    REDERIVE_SYSTEM[:30]: "rederive",
    ANSWER_SYSTEM[:30]: "answer",
}


# -- the data model --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class H:
    """One history entry of a node: the earlier value, why it changed, at which turn."""

    value: str | None
    reason: str
    turn: int


@dataclass(frozen=True)
class F:
    """One child-changed flag of a parent: which child, how, at which turn."""

    child: str
    cause: str
    turn: int


@dataclass(frozen=True)
class Node:
    """What one task node must hold after a turn (slots, parents and dependencies by their slot text, in the
    node's own task; a task root's slot is its task's title)."""

    value: str | None
    parent: str | None = None
    needs: tuple[str, ...] = ()
    version: int = 1
    history: tuple[H, ...] = ()
    status: str = "active"
    stale: str | None = None
    """The node's stale reason, exactly; None when it is current."""
    flags: tuple[F, ...] = ()
    """The child-changed flags, in the order they were raised (the latest per child)."""

    def view(self, slot: str, task: str | None, roots: set[str]) -> dict[str, Any]:
        """As :func:`forest_view` shows it; ``task``: the key of the node's task (None for a root), ``roots``: the
        keys of the task roots (a parent or a need that is a root is keyed by its slot alone)."""

        def key(name: str) -> str:
            return slot_key(name) if slot_key(name) in roots else node_key(task, name)

        return {
            "slot": slot,
            "task": task,
            "value": self.value,
            "parent": key(self.parent) if self.parent else None,
            "depends_on": tuple(key(need) for need in self.needs),
            "status": self.status,
            "stale": self.stale,
            "version": self.version,
            "history": self.history,
            "flags": self.flags,
        }


@dataclass(frozen=True)
class Turn:
    utterance: str
    task: str
    substeps: tuple[str, ...]
    operations: tuple[dict[str, Any], ...]
    answer: str
    expect: dict[str, Node] = field(default_factory=dict)
    """The nodes this turn adds or changes, complete, by slot (``task/slot`` where the slot alone would not say
    which task's step it is); the others stay as after the previous turn."""
    stale: tuple[str, ...] = ()
    """The slots this turn's propagation marks stale, nearest first (the state's ``stale``); at one distance in the
    order of their keys, which is the order a turn loads the forest in."""
    rederived: tuple[tuple[str, str], ...] = ()
    """The scripted re-derivation (slot, value) pairs, for a scenario run with ``rederive: true``."""

    @property
    def checks(self) -> list[tuple[str, str | None]]:
        """The (slot, task) of every step the turn checks."""
        return [(operation["slot"], operation.get("task")) for operation in self.operations if operation["intent"] == "check"]

    @property
    def revises(self) -> bool:
        return any(operation["intent"] in ("update", "revert", "remove") for operation in self.operations)


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    stresses: str
    turns: tuple[Turn, ...]
    rederive: bool = False
    """Run under a copy of ``tme-turn`` whose route re-derives stale steps (one more model call)."""

    def __str__(self) -> str:
        return self.name


def expected_forests(scenario: Scenario) -> list[dict[str, dict[str, Any]]]:
    """Per turn, the whole expected forest as comparable views keyed by the forest's keys (``task/slot``)."""
    forests: list[dict[str, dict[str, Any]]] = []
    current: dict[str, dict[str, Any]] = {}
    roots: set[str] = set()
    task_of: dict[str, str | None] = {}  # a step's slot key -> its task's key, to place the steps under it
    for turn in scenario.turns:
        views = {}
        for name, node in turn.expect.items():
            task_name, _, slot = name.rpartition("/")
            if node.parent is None:
                task, roots = None, roots | {slot_key(slot)}
            elif task_name:
                task = slot_key(task_name)
            else:
                task = slot_key(node.parent) if slot_key(node.parent) in roots else task_of[slot_key(node.parent)]
            task_of.setdefault(slot_key(slot), task)
            views[node_key(task, slot)] = node.view(slot, task, roots)
        current = {**current, **views}
        forests.append(current)
    return forests


def forest_view(forest: Forest) -> dict[str, dict[str, Any]]:
    """The forest in the shape of :meth:`Node.view`."""
    return {
        key: {
            "slot": node.slot,
            "task": node.task,
            "value": node.value,
            "parent": node.parent,
            "depends_on": tuple(node.depends_on),
            "status": node.status,
            "stale": (node.stale_reason or "(stale without a reason)") if node.stale else None,
            "version": node.version,
            "history": tuple(H(entry.value, entry.reason, entry.turn) for entry in node.history),
            "flags": tuple(F(flag.child, flag.cause, flag.turn) for flag in node.changed_children),
        }
        for key, node in forest.nodes.items()
    }


def checked_values(forest: Forest, slot: str, task: str | None = None) -> list[str]:
    """What a prompt answering a check of ``slot`` must show: its value and every value it replaced, or for a
    task root its steps' values."""
    node = forest.require(slot, "check", task)
    earlier = [entry.value for entry in node.history if entry.value]
    if node.value:
        return [node.value, *earlier]
    return [child.value for child in forest.children(node.key) if child.value] + earlier


# -- the four scenarios: the conversations from the evaluation's data file, the expected forests here -------------

TRIP_ROOT = "plan a trip"
COOK_ROOT = "cook dinner"
MEETING_ROOT = "schedule a meeting"
CART_ROOT = "shopping cart"
_shared = ("shared vegetable",)
_plan_needs = ("participants", "date", "start time")

TRIP_FORESTS: tuple[dict[str, Node], ...] = (
    {TRIP_ROOT: Node(None), "destination": Node("Paris", parent=TRIP_ROOT), "departure city": Node("New York", parent=TRIP_ROOT)},  # 1
    {"travel dates": Node("June 10-14", parent=TRIP_ROOT)},  # 2
    {"hotel": Node("Hotel du Louvre", parent=TRIP_ROOT, needs=("destination", "travel dates"))},  # 3
    {
        "flight search": Node("New York to Paris, June 10", parent=TRIP_ROOT, needs=("departure city", "destination", "travel dates"))
    },  # 4
    {
        TRIP_ROOT: Node(None, flags=(F("travel dates", "updated", 5), F("flight search", "re-derived", 5))),
        "travel dates": Node("June 17-21", parent=TRIP_ROOT, version=2, history=(H("June 10-14", "updated", 5),)),
        "flight search": Node(
            "New York to Paris, June 17", parent=TRIP_ROOT, needs=("departure city", "destination", "travel dates"),
            version=2, history=(H("New York to Paris, June 10", "re-derived", 5),),
        ),
    },  # 5
    {
        TRIP_ROOT: Node(
            None,
            flags=(
                F("travel dates", "updated", 5), F("destination", "updated", 6), F("hotel", "re-derived", 6),
                F("flight search", "re-derived", 6),
            ),
        ),
        "destination": Node("Rome", parent=TRIP_ROOT, version=2, history=(H("Paris", "updated", 6),)),
        "hotel": Node(
            "Hotel Artemide", parent=TRIP_ROOT, needs=("destination", "travel dates"), version=2,
            history=(H("Hotel du Louvre", "re-derived", 6),),
        ),
        "flight search": Node(
            "New York to Rome, June 17", parent=TRIP_ROOT, needs=("departure city", "destination", "travel dates"), version=3,
            history=(H("New York to Paris, June 10", "re-derived", 5), H("New York to Paris, June 17", "re-derived", 6)),
        ),
    },  # 6
    {
        TRIP_ROOT: Node(
            None,
            flags=(
                F("travel dates", "updated", 5), F("destination", "reverted", 7), F("hotel", "re-derived", 7),
                F("flight search", "re-derived", 7),
            ),
        ),
        "destination": Node("Paris", parent=TRIP_ROOT, version=3, history=(H("Paris", "updated", 6), H("Rome", "reverted", 7))),
        "hotel": Node(
            "Hotel du Louvre", parent=TRIP_ROOT, needs=("destination", "travel dates"), version=3,
            history=(H("Hotel du Louvre", "re-derived", 6), H("Hotel Artemide", "re-derived", 7)),
        ),
        "flight search": Node(
            "New York to Paris, June 17", parent=TRIP_ROOT, needs=("departure city", "destination", "travel dates"), version=4,
            history=(
                H("New York to Paris, June 10", "re-derived", 5),
                H("New York to Paris, June 17", "re-derived", 6),
                H("New York to Rome, June 17", "re-derived", 7),
            ),
        ),
    },  # 7
    {},  # 8: a check changes nothing
    {},  # 9: a check changes nothing
    {"dinner reservation": Node("Le Comptoir, June 17, 8pm", parent=TRIP_ROOT, needs=("destination", "travel dates"))},  # 10
    {},  # 11: a check changes nothing
)  # fmt: skip

TRIP_REDERIVED: dict[int, tuple[tuple[str, str], ...]] = {
    5: (("hotel", "Hotel du Louvre"), ("flight search", "New York to Paris, June 17")),
    6: (("hotel", "Hotel Artemide"), ("flight search", "New York to Rome, June 17")),
    7: (("hotel", "Hotel du Louvre"), ("flight search", "New York to Paris, June 17")),
}
"""The scripted re-derivations (slot, value) by turn: the trip runs under a graph that re-derives stale steps."""

COOKING_FORESTS: tuple[dict[str, Node], ...] = (
    {COOK_ROOT: Node(None), "soup": Node("vegetable soup", parent=COOK_ROOT), "dumplings": Node("pork dumplings", parent=COOK_ROOT)},  # 1
    {
        "shared vegetable": Node("celery", parent=COOK_ROOT),
        "soup": Node("vegetable soup", parent=COOK_ROOT, needs=_shared),
        "dumplings": Node("pork dumplings", parent=COOK_ROOT, needs=_shared),
    },  # 2
    {"carrots": Node("2 carrots", parent="soup")},  # 3
    {},  # 4: a check changes nothing
    {
        COOK_ROOT: Node(None, flags=(F("shared vegetable", "updated", 5),)),
        "shared vegetable": Node("mushrooms", parent=COOK_ROOT, version=2, history=(H("celery", "updated", 5),)),
        "soup": Node("vegetable soup", parent=COOK_ROOT, needs=_shared, stale="'shared vegetable' was updated at turn 5"),
        "dumplings": Node("pork dumplings", parent=COOK_ROOT, needs=_shared, stale="'shared vegetable' was updated at turn 5"),
    },  # 5
    {"steaming time": Node("12 minutes", parent="dumplings", needs=_shared)},  # 6
    {
        COOK_ROOT: Node(None, flags=(F("shared vegetable", "updated", 5), F("soup", "updated", 7))),
        "soup": Node("mushroom soup", parent=COOK_ROOT, needs=_shared, version=2, history=(H("vegetable soup", "updated", 7),)),
    },  # 7
    {},  # 8: a check changes nothing
)  # fmt: skip

MEETING_FORESTS: tuple[dict[str, Node], ...] = (
    {
        MEETING_ROOT: Node(None),
        "participants": Node("Alice, Bob and Carol", parent=MEETING_ROOT),
        "date": Node("next Tuesday", parent=MEETING_ROOT),
        "start time": Node("10am", parent=MEETING_ROOT),
        "session plan": Node("one 60-minute session", parent=MEETING_ROOT, needs=_plan_needs),
    },  # 1
    {
        MEETING_ROOT: Node(None, flags=(F("participants", "updated", 2),)),
        "participants": Node("Alice, Bob, Carol and Dave", parent=MEETING_ROOT, version=2, history=(H("Alice, Bob and Carol", "updated", 2),)),
        "session plan": Node("one 60-minute session", parent=MEETING_ROOT, needs=_plan_needs, stale="'participants' was updated at turn 2"),
    },  # 2
    {
        MEETING_ROOT: Node(None, flags=(F("participants", "updated", 2), F("session plan", "updated", 3))),
        "split reason": Node("Carol and Dave clash at 10am", parent=MEETING_ROOT),
        "session plan": Node(
            "two 30-minute sessions", parent=MEETING_ROOT, needs=(*_plan_needs, "split reason"), version=2,
            history=(H("one 60-minute session", "updated", 3),),
        ),
    },  # 3
    {},  # 4: a check changes nothing
    {
        MEETING_ROOT: Node(None, flags=(F("participants", "updated", 2), F("session plan", "updated", 3), F("date", "updated", 5))),
        "date": Node("next Wednesday", parent=MEETING_ROOT, version=2, history=(H("next Tuesday", "updated", 5),)),
        "session plan": Node(
            "two 30-minute sessions", parent=MEETING_ROOT, needs=(*_plan_needs, "split reason"), version=2,
            history=(H("one 60-minute session", "updated", 3),), stale="'date' was updated at turn 5",
        ),
    },  # 5
    {
        MEETING_ROOT: Node(
            None,
            flags=(
                F("participants", "updated", 2), F("date", "updated", 5), F("split reason", "removed", 6),
                F("session plan", "reverted", 6),
            ),
        ),
        "split reason": Node(
            "Carol and Dave clash at 10am", parent=MEETING_ROOT, status="removed", version=2,
            history=(H("Carol and Dave clash at 10am", "removed", 6),),
        ),
        "session plan": Node(
            "one 60-minute session", parent=MEETING_ROOT, needs=(*_plan_needs, "split reason"), version=3,
            history=(H("one 60-minute session", "updated", 3), H("two 30-minute sessions", "reverted", 6)),
        ),
    },  # 6
    {},  # 7: a check changes nothing
)  # fmt: skip

_bread_back = (H("1 loaf of sourdough", "removed", 3), H("1 loaf of sourdough", "restored", 4))
_cart_flags = (F("bread", "restored", 4), F("apples", "reverted", 6), F("milk", "updated", 7))

CART_FORESTS: tuple[dict[str, Node], ...] = (
    {
        CART_ROOT: Node(None),
        "apples": Node("6 apples", parent=CART_ROOT),
        "milk": Node("2 cartons of oat milk", parent=CART_ROOT),
        "bread": Node("1 loaf of sourdough", parent=CART_ROOT),
    },  # 1
    {"coffee": Node("1 bag of coffee beans", parent=CART_ROOT)},  # 2
    {
        CART_ROOT: Node(None, flags=(F("bread", "removed", 3),)),
        "bread": Node("1 loaf of sourdough", parent=CART_ROOT, status="removed", version=2, history=(H("1 loaf of sourdough", "removed", 3),)),
    },  # 3
    {
        CART_ROOT: Node(None, flags=(F("bread", "restored", 4),)),
        "bread": Node("1 loaf of sourdough", parent=CART_ROOT, version=3, history=_bread_back),
    },  # 4
    {
        CART_ROOT: Node(None, flags=(F("bread", "restored", 4), F("apples", "updated", 5))),
        "apples": Node("3 apples", parent=CART_ROOT, version=2, history=(H("6 apples", "updated", 5),)),
    },  # 5
    {
        CART_ROOT: Node(None, flags=(F("bread", "restored", 4), F("apples", "reverted", 6))),
        "apples": Node("6 apples", parent=CART_ROOT, version=3, history=(H("6 apples", "updated", 5), H("3 apples", "reverted", 6))),
    },  # 6
    {
        CART_ROOT: Node(None, flags=_cart_flags),
        "milk": Node("2 cartons of almond milk", parent=CART_ROOT, version=2, history=(H("2 cartons of oat milk", "updated", 7),)),
    },  # 7
    {},  # 8: a check changes nothing
    {
        CART_ROOT: Node(None, status="removed", version=2, history=(H(None, "removed", 9),), flags=_cart_flags),
        "apples": Node(
            "6 apples", parent=CART_ROOT, status="removed", version=4,
            history=(H("6 apples", "updated", 5), H("3 apples", "reverted", 6), H("6 apples", "removed", 9)),
        ),
        "milk": Node(
            "2 cartons of almond milk", parent=CART_ROOT, status="removed", version=3,
            history=(H("2 cartons of oat milk", "updated", 7), H("2 cartons of almond milk", "removed", 9)),
        ),
        "bread": Node(
            "1 loaf of sourdough", parent=CART_ROOT, status="removed", version=4,
            history=(*_bread_back, H("1 loaf of sourdough", "removed", 9)),
        ),
        "coffee": Node("1 bag of coffee beans", parent=CART_ROOT, status="removed", version=2, history=(H("1 bag of coffee beans", "removed", 9),)),
    },  # 9
)  # fmt: skip


TWO_TASKS_TRIP, TWO_TASKS_MEETING = "plan a trip", "schedule a meeting"

TWO_TASKS_FORESTS: tuple[dict[str, Node], ...] = (
    {
        TWO_TASKS_TRIP: Node(None),
        "destination": Node("Lisbon", parent=TWO_TASKS_TRIP),
        "date": Node("May 3", parent=TWO_TASKS_TRIP),
    },  # 1
    {"hotel": Node("Hotel Alfama, May 3", parent=TWO_TASKS_TRIP, needs=("date",))},  # 2
    {TWO_TASKS_MEETING: Node(None), "schedule a meeting/date": Node("April 28", parent=TWO_TASKS_MEETING)},  # 3: a second "date"
    {
        TWO_TASKS_MEETING: Node(None, flags=(F("date", "updated", 4),)),
        "schedule a meeting/date": Node("April 29", parent=TWO_TASKS_MEETING, version=2, history=(H("April 28", "updated", 4),)),
    },  # 4: the trip's date and the hotel that needs it are untouched
    {},  # 5: a check changes nothing
)  # fmt: skip

DINNER_ROOT = "host a dinner party"

DINNER_FORESTS: tuple[dict[str, Node], ...] = (
    {DINNER_ROOT: Node(None), "day": Node("Saturday", parent=DINNER_ROOT), "guests": Node("8 guests", parent=DINNER_ROOT)},  # 1
    {"menu": Node("roast chicken", parent=DINNER_ROOT, needs=("guests",))},  # 2
    {
        DINNER_ROOT: Node(None, flags=(F("day", "updated", 3), F("guests", "updated", 3))),
        "day": Node("Sunday", parent=DINNER_ROOT, version=2, history=(H("Saturday", "updated", 3),)),
        "guests": Node("10 guests", parent=DINNER_ROOT, version=2, history=(H("8 guests", "updated", 3),)),
        "menu": Node("roast chicken", parent=DINNER_ROOT, needs=("guests",), stale="'guests' was updated at turn 3"),
    },  # 3
    {},  # 4: a check changes nothing, and its prompt shows what the checked steps replaced
)  # fmt: skip


def _scenario(
    data: ScenarioData, forests: tuple[dict[str, Node], ...], rederived: dict[int, tuple[tuple[str, str], ...]] | None = None
) -> Scenario:
    """A scenario of the data file with the forest expected after each of its turns (one per turn, in order)."""
    if len(forests) != len(data.turns):
        raise ValueError(f"scenario {data.name!r}: {len(data.turns)} turns in the data file, {len(forests)} forests here")
    turns = tuple(
        Turn(
            turn.utterance,
            turn.decomposition.task,
            tuple(turn.decomposition.substeps),
            tuple(operation.model_dump() for operation in turn.operations),
            turn.answer,
            expect=expect,
            stale=tuple(turn.stale),
            rederived=(rederived or {}).get(number, ()),
        )
        for number, (turn, expect) in enumerate(zip(data.turns, forests, strict=True), start=1)
    )
    return Scenario(data.name, data.title, data.stresses, turns, rederive=rederived is not None)


_DATA = {scenario.name: scenario for scenario in load_scenarios()}
TRIP = _scenario(_DATA["trip"], TRIP_FORESTS, TRIP_REDERIVED)
COOKING = _scenario(_DATA["cooking"], COOKING_FORESTS)
MEETING = _scenario(_DATA["meeting"], MEETING_FORESTS)
CART = _scenario(_DATA["cart"], CART_FORESTS)

TWO_TASKS = _scenario(_DATA["two-tasks"], TWO_TASKS_FORESTS)
DINNER = _scenario(_DATA["dinner"], DINNER_FORESTS)

SCENARIOS: tuple[Scenario, ...] = (TRIP, COOKING, MEETING, CART, TWO_TASKS, DINNER)


# -- scripting the model server --------------------------------------------------------------------------------


def _ends_with(prefix: str, utterance: str) -> re.Pattern[str]:
    return re.compile(re.escape(f"{prefix}{utterance}") + r"\Z")


def script_scenario(server: ScriptedOpenAIServer, scenario: Scenario) -> None:
    """Rules for every turn, keyed on the utterance (decompose and classify end with ``Message: <utterance>``, the
    answer prompt with ``User: <utterance>``); re-derivations are used once each, in turn order."""
    utterances = [turn.utterance for turn in scenario.turns]
    if len(set(utterances)) != len(utterances):
        raise ValueError(f"scenario {scenario.name!r}: utterances must be unique to key the scripted replies")
    for turn in scenario.turns:
        server.script(
            Rule(system=DECOMPOSE_SYSTEM[:30], user=_ends_with("Message: ", turn.utterance), json={"task": turn.task, "substeps": list(turn.substeps)}),
            Rule(system=CLASSIFY_SYSTEM[:30], user=_ends_with("Message: ", turn.utterance), json={"operations": list(turn.operations)}),
            Rule(system=ANSWER_SYSTEM[:30], user=_ends_with("User: ", turn.utterance), text=turn.answer),
        )  # fmt: skip
        if scenario.rederive and turn.stale:
            values = [{"slot": slot, "value": value} for slot, value in turn.rederived]
            server.script(
                Rule(
                    system=REDERIVE_SYSTEM[:30],
                    user=f"Stale steps to re-derive: {', '.join(turn.stale)}",
                    json={"values": values},
                    times=1,
                )
            )


def turn_graph(scenario: Scenario, folder: Path) -> LoadedGraph:
    """The library ``tme-turn`` graph, or a copy in ``folder`` whose route re-derives stale steps."""
    if not scenario.rederive:
        return load_graph("tme-turn")
    spec = yaml.safe_load(LIBRARY_GRAPH.read_text())
    [route] = [route for route in spec["routes"] if route["router"] == "tme.after_apply"]
    route["with"] = {**route.get("with", {}), "rederive": True}
    path = folder / "tme-turn-rederive.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return load_graph(path)


# -- playing a scenario ----------------------------------------------------------------------------------------


@dataclass
class TurnRecord:
    """One played turn and what it measured."""

    number: int
    turn: Turn
    state: dict[str, Any]
    roles: list[str]
    """The model calls of the turn, in order (decompose, classify, [rederive], answer)."""
    prompt: str
    """The answer step's user message as sent over HTTP."""
    tme_tokens: int
    """Tokens of the answer request (system text and prompt)."""
    all_calls_tokens: int
    """Tokens of every model request of the turn (decompose, classify, rederive, answer)."""
    baseline_prompt: str
    baseline_tokens: int
    superseded: set[str]
    tme_stale: list[str]
    baseline_stale: list[str]

    def summary(self) -> dict[str, Any]:
        return {
            "turn": self.number,
            "utterance": self.turn.utterance,
            "tme_tokens": self.tme_tokens,
            "baseline_tokens": self.baseline_tokens,
            "tme_all_calls_tokens": self.all_calls_tokens,
            "tme_stale_facts": self.tme_stale,
            "baseline_stale_facts": self.baseline_stale,
            "stale_marked": list(self.state["stale"]),
        }


def role_of(request: dict[str, Any]) -> str:
    system = str(request["body"]["messages"][0]["content"])
    return next((role for marker, role in ROLES.items() if system.startswith(marker)), "other")


def _messages_text(request: dict[str, Any]) -> list[str]:
    return [str(message.get("content", "")) for message in request["body"]["messages"]]


async def play(
    scenario: Scenario, runner: GraphRunner, namespace: str, session: str, *, server: ScriptedOpenAIServer
) -> list[TurnRecord]:
    """Run every turn of ``scenario`` (scripted on ``server`` beforehand) and measure each answer prompt."""
    records: list[TurnRecord] = []
    earlier: list[tuple[str, str]] = []
    for number, turn in enumerate(scenario.turns, start=1):
        start = len(server.requests)
        result = await runner.run({"session": session, "utterance": turn.utterance}, namespace=namespace)
        requests = [r for r in server.requests[start:] if r["path"].endswith("/chat/completions") and r["status"] == 200]
        answers = [r for r in requests if role_of(r) == "answer" and _messages_text(r)[-1].endswith(f"User: {turn.utterance}")]
        if len(answers) != 1:
            raise AssertionError(f"{scenario.name} turn {number}: expected one answer request, found {len(answers)}")
        system, prompt = _messages_text(answers[0])
        superseded = Forest.model_validate(result.state["forest"]).superseded_values()
        baseline = full_history_prompt(earlier, turn.utterance)
        records.append(
            TurnRecord(
                number=number,
                turn=turn,
                state=result.state,
                roles=[role_of(r) for r in requests],
                prompt=prompt,
                tme_tokens=count_tokens(system) + count_tokens(prompt),
                all_calls_tokens=sum(count_tokens(text) for r in requests for text in _messages_text(r)),
                baseline_prompt=baseline,
                baseline_tokens=count_tokens(baseline),
                superseded=superseded,
                tme_stale=stale_facts(prompt, superseded, turn.utterance),
                baseline_stale=stale_facts(baseline, superseded, turn.utterance),
            )
        )
        earlier.append((turn.utterance, str(result.state["response"])))
    return records
