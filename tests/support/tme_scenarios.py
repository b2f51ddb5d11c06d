"""The four evaluation scenarios of the TME paper as scripted conversations.

Each turn holds the utterance, the scripted model replies (decomposition, TRIM classification, re-derivation
when the scenario runs with ``rederive: true``, answer text) and what the task forest must look like after it:
the nodes the turn adds or changes (complete, with their whole history) and the slots it marks stale. The
expected forest after a turn is the one after the turn before, with those nodes replaced
(:func:`expected_forests`); the tests compare the whole forest every turn.

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

from mnemoflow.graphs import GraphRunner, LoadedGraph, load_graph
from mnemoflow.nodes.tme.agents import ANSWER_SYSTEM, CLASSIFY_SYSTEM, DECOMPOSE_SYSTEM, REDERIVE_SYSTEM
from mnemoflow.nodes.tme.forest import Forest, slot_key
from mnemoflow.nodes.tme.measure import count_tokens, full_history_prompt, stale_facts
from tests.support.openai_server import Rule, ScriptedOpenAIServer

__all__ = [
    "SCENARIOS",
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
class Node:
    """What one task node must hold after a turn (slots, parents and dependencies by their slot text)."""

    value: str | None
    parent: str | None = None
    needs: tuple[str, ...] = ()
    version: int = 1
    history: tuple[H, ...] = ()
    status: str = "active"
    stale: str | None = None
    """The node's stale reason, exactly; None when it is current."""

    def view(self, slot: str) -> dict[str, Any]:
        return {
            "slot": slot,
            "value": self.value,
            "parent": slot_key(self.parent) if self.parent else None,
            "depends_on": tuple(slot_key(need) for need in self.needs),
            "status": self.status,
            "stale": self.stale,
            "version": self.version,
            "history": self.history,
        }


def op(
    intent: str, slot: str, value: str | None = None, *, parent: str | None = None, needs: tuple[str, ...] = ()
) -> dict[str, Any]:
    """One TRIM operation as the model's JSON."""
    return {"intent": intent, "slot": slot, "value": value, "parent": parent, "depends_on": list(needs)}


@dataclass(frozen=True)
class Turn:
    utterance: str
    task: str
    substeps: tuple[str, ...]
    operations: tuple[dict[str, Any], ...]
    answer: str
    expect: dict[str, Node] = field(default_factory=dict)
    """The nodes this turn adds or changes, complete; the others stay as after the previous turn."""
    stale: tuple[str, ...] = ()
    """The slots this turn's propagation marks stale, nearest first (the state's ``stale``); at one distance in the
    order of their keys, which is the order a turn loads the forest in."""
    rederived: tuple[tuple[str, str], ...] = ()
    """The scripted re-derivation (slot, value) pairs, for a scenario run with ``rederive: true``."""

    @property
    def checks(self) -> list[str]:
        return [operation["slot"] for operation in self.operations if operation["intent"] == "check"]

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
    """Per turn, the whole expected forest as comparable views keyed by slot key."""
    forests: list[dict[str, dict[str, Any]]] = []
    current: dict[str, dict[str, Any]] = {}
    for turn in scenario.turns:
        current = {**current, **{slot_key(slot): node.view(slot) for slot, node in turn.expect.items()}}
        forests.append(current)
    return forests


def forest_view(forest: Forest) -> dict[str, dict[str, Any]]:
    """The forest in the shape of :meth:`Node.view`."""
    return {
        key: {
            "slot": node.slot,
            "value": node.value,
            "parent": node.parent,
            "depends_on": tuple(node.depends_on),
            "status": node.status,
            "stale": (node.stale_reason or "(stale without a reason)") if node.stale else None,
            "version": node.version,
            "history": tuple(H(entry.value, entry.reason, entry.turn) for entry in node.history),
        }
        for key, node in forest.nodes.items()
    }


def checked_values(forest: Forest, slot: str) -> list[str]:
    """What a prompt answering a check of ``slot`` must show: its value, or for a task root its steps' values."""
    node = forest.require(slot, "check")
    if node.value:
        return [node.value]
    return [child.value for child in forest.children(node.key) if child.value]


# -- the four scenarios ----------------------------------------------------------------------------------------

TRIP_ROOT = "plan a trip"

TRIP = Scenario(
    name="trip",
    title="trip planning",
    stresses="date and destination revisions re-derived downstream, a revert to the original, a false-premise check, "
    "a flight request contradicting memory, a final summary",
    rederive=True,
    turns=(
        Turn(
            "I'm planning a trip to Paris, leaving from New York.",
            TRIP_ROOT, ("destination", "departure city"),
            (op("new", "destination", "Paris", parent=TRIP_ROOT), op("new", "departure city", "New York", parent=TRIP_ROOT)),
            "Great, a trip to Paris from New York. When would you like to travel, and for how many nights?",
            expect={TRIP_ROOT: Node(None), "destination": Node("Paris", parent=TRIP_ROOT), "departure city": Node("New York", parent=TRIP_ROOT)},
        ),
        Turn(
            "I'd like to travel from June 10 to June 14.",
            TRIP_ROOT, ("travel dates",),
            (op("new", "travel dates", "June 10-14", parent=TRIP_ROOT),),
            "Noted: you travel June 10-14, four nights in Paris. Shall I look for a hotel next?",
            expect={"travel dates": Node("June 10-14", parent=TRIP_ROOT)},
        ),
        Turn(
            "Yes, find me a hotel for those nights.",
            TRIP_ROOT, ("hotel",),
            (op("new", "hotel", "Hotel du Louvre", parent=TRIP_ROOT, needs=("destination", "travel dates")),),
            "I suggest the Hotel du Louvre for June 10-14: central, well reviewed, and a short walk from the river. "
            "Do you want me to search flights as well?",
            expect={"hotel": Node("Hotel du Louvre", parent=TRIP_ROOT, needs=("destination", "travel dates"))},
        ),
        Turn(
            "Search flights for the first day.",
            TRIP_ROOT, ("flight search",),
            (op("new", "flight search", "New York to Paris, June 10", parent=TRIP_ROOT, needs=("departure city", "destination", "travel dates")),),
            "Searching New York to Paris, June 10: there are nonstop evening departures from JFK and Newark, "
            "arriving the next morning.",
            expect={
                "flight search": Node("New York to Paris, June 10", parent=TRIP_ROOT, needs=("departure city", "destination", "travel dates"))
            },
        ),
        Turn(
            "Actually, push everything a week later: June 17 to June 21.",
            TRIP_ROOT, (),
            (op("update", "travel dates", "June 17-21"),),
            "Moved: you now travel June 17-21. The Hotel du Louvre still has rooms for those nights, and the flight "
            "search is now New York to Paris, June 17.",
            expect={
                "travel dates": Node("June 17-21", parent=TRIP_ROOT, version=2, history=(H("June 10-14", "updated", 5),)),
                "flight search": Node(
                    "New York to Paris, June 17", parent=TRIP_ROOT, needs=("departure city", "destination", "travel dates"),
                    version=2, history=(H("New York to Paris, June 10", "re-derived", 5),),
                ),
            },
            stale=("flight search", "hotel"),
            rederived=(("hotel", "Hotel du Louvre"), ("flight search", "New York to Paris, June 17")),
        ),
        Turn(
            "Change of plan, let's go to Rome instead of Paris.",
            TRIP_ROOT, (),
            (op("update", "destination", "Rome"),),
            "Rome it is, June 17-21. I switched the hotel to the Hotel Artemide near Termini, and the flight search "
            "is now New York to Rome, June 17.",
            expect={
                "destination": Node("Rome", parent=TRIP_ROOT, version=2, history=(H("Paris", "updated", 6),)),
                "hotel": Node(
                    "Hotel Artemide", parent=TRIP_ROOT, needs=("destination", "travel dates"), version=2,
                    history=(H("Hotel du Louvre", "re-derived", 6),),
                ),
                "flight search": Node(
                    "New York to Rome, June 17", parent=TRIP_ROOT, needs=("departure city", "destination", "travel dates"), version=3,
                    history=(H("New York to Paris, June 10", "re-derived", 5), H("New York to Paris, June 17", "re-derived", 6)),
                ),
            },
            stale=("flight search", "hotel"),
            rederived=(("hotel", "Hotel Artemide"), ("flight search", "New York to Rome, June 17")),
        ),
        Turn(
            "Hmm, go back to Paris as originally planned.",
            TRIP_ROOT, (),
            (op("revert", "destination", "Paris"),),
            "Back to Paris for June 17-21: the Hotel du Louvre again, and flights New York to Paris, June 17.",
            expect={
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
            },
            stale=("flight search", "hotel"),
            rederived=(("hotel", "Hotel du Louvre"), ("flight search", "New York to Paris, June 17")),
        ),
        Turn(
            "Wait, wasn't I departing from Boston?",
            TRIP_ROOT, (),
            (op("check", "departure city"),),
            "No: you are departing from New York. Boston has not come up in this plan.",
        ),
        Turn(
            "Book me the Boston to Paris flight on June 17.",
            TRIP_ROOT, (),
            (op("check", "flight search"), op("check", "departure city")),
            "Your plan departs from New York (New York to Paris, June 17). Should I change the departure city to "
            "Boston, or keep New York?",
        ),
        Turn(
            "Keep New York. Add a dinner reservation for our first evening.",
            TRIP_ROOT, ("dinner reservation",),
            (op("new", "dinner reservation", "Le Comptoir, June 17, 8pm", parent=TRIP_ROOT, needs=("destination", "travel dates")),),
            "Keeping New York. I reserved Le Comptoir, June 17, 8pm, for your first evening in Paris.",
            expect={"dinner reservation": Node("Le Comptoir, June 17, 8pm", parent=TRIP_ROOT, needs=("destination", "travel dates"))},
        ),
        Turn(
            "Give me a summary of the whole trip.",
            TRIP_ROOT, (),
            (op("check", TRIP_ROOT),),
            "Paris, June 17-21, departing from New York: flights New York to Paris, June 17; four nights at the "
            "Hotel du Louvre; dinner at Le Comptoir, June 17, 8pm.",
        ),
    ),
)  # fmt: skip

COOK_ROOT = "cook dinner"
_shared = ("shared vegetable",)

COOKING = Scenario(
    name="cooking",
    title="cooking",
    stresses="one ingredient shared by the soup and the dumplings, a substitution that marks both stale, checks of what was said",
    turns=(
        Turn(
            "Tonight I'm making a vegetable soup and pork dumplings.",
            COOK_ROOT, ("soup", "dumplings"),
            (op("new", "soup", "vegetable soup", parent=COOK_ROOT), op("new", "dumplings", "pork dumplings", parent=COOK_ROOT)),
            "A nice menu: a vegetable soup and pork dumplings. What goes into each of them?",
            expect={COOK_ROOT: Node(None), "soup": Node("vegetable soup", parent=COOK_ROOT), "dumplings": Node("pork dumplings", parent=COOK_ROOT)},
        ),
        Turn(
            "Prepare celery for both: it goes in the soup and in the dumpling filling.",
            COOK_ROOT, ("shared vegetable",),
            (
                op("new", "shared vegetable", "celery", parent=COOK_ROOT),
                op("depend", "soup", needs=_shared),
                op("depend", "dumplings", needs=_shared),
            ),
            "Got it: chop the celery once and use it in both the vegetable soup and the dumpling filling.",
            expect={
                "shared vegetable": Node("celery", parent=COOK_ROOT),
                "soup": Node("vegetable soup", parent=COOK_ROOT, needs=_shared),
                "dumplings": Node("pork dumplings", parent=COOK_ROOT, needs=_shared),
            },
        ),
        Turn(
            "The soup also needs two carrots.",
            COOK_ROOT, ("carrots",),
            (op("new", "carrots", "2 carrots", parent="soup"),),
            "Added 2 carrots to the vegetable soup, next to the celery.",
            expect={"carrots": Node("2 carrots", parent="soup")},
        ),
        Turn(
            "Did I say celery goes in the dumplings too?",
            COOK_ROOT, (),
            (op("check", "dumplings"), op("check", "shared vegetable")),
            "Yes: the celery goes in both the soup and the pork dumplings.",
        ),
        Turn(
            "Swap the celery for mushrooms everywhere.",
            COOK_ROOT, (),
            (op("update", "shared vegetable", "mushrooms"),),
            "Swapped: mushrooms replace the celery in the soup and in the dumplings. Both recipes need a second look.",
            expect={
                "shared vegetable": Node("mushrooms", parent=COOK_ROOT, version=2, history=(H("celery", "updated", 5),)),
                "soup": Node("vegetable soup", parent=COOK_ROOT, needs=_shared, stale="'shared vegetable' was updated at turn 5"),
                "dumplings": Node("pork dumplings", parent=COOK_ROOT, needs=_shared, stale="'shared vegetable' was updated at turn 5"),
            },
            stale=("dumplings", "soup"),
        ),
        Turn(
            "Steam the dumplings for 12 minutes.",
            COOK_ROOT, ("steaming time",),
            (op("new", "steaming time", "12 minutes", parent="dumplings", needs=_shared),),
            "Steaming time set: 12 minutes for the pork dumplings with their mushroom filling.",
            expect={"steaming time": Node("12 minutes", parent="dumplings", needs=_shared)},
        ),
        Turn(
            "Let's call the soup a mushroom soup now.",
            COOK_ROOT, (),
            (op("update", "soup", "mushroom soup"),),
            "Renamed: the vegetable soup is a mushroom soup now, still with 2 carrots.",
            expect={"soup": Node("mushroom soup", parent=COOK_ROOT, needs=_shared, version=2, history=(H("vegetable soup", "updated", 7),))},
        ),
        Turn(
            "What's in the soup now?",
            COOK_ROOT, (),
            (op("check", "soup"),),
            "The mushroom soup has mushrooms and 2 carrots; the celery is gone.",
        ),
    ),
)  # fmt: skip

MEETING_ROOT = "schedule a meeting"
_plan_needs = ("participants", "date", "start time")

MEETING = Scenario(
    name="meeting",
    title="meeting scheduling",
    stresses="a participant added, a conflict that splits the meeting into two sessions, the merge back, a 'why two sessions?' check",
    turns=(
        Turn(
            "Schedule a project kickoff with Alice, Bob and Carol next Tuesday at 10am.",
            MEETING_ROOT, ("participants", "date", "start time", "session plan"),
            (
                op("new", "participants", "Alice, Bob and Carol", parent=MEETING_ROOT),
                op("new", "date", "next Tuesday", parent=MEETING_ROOT),
                op("new", "start time", "10am", parent=MEETING_ROOT),
                op("new", "session plan", "one 60-minute session", parent=MEETING_ROOT, needs=_plan_needs),
            ),
            "Booked one 60-minute session next Tuesday at 10am for Alice, Bob and Carol.",
            expect={
                MEETING_ROOT: Node(None),
                "participants": Node("Alice, Bob and Carol", parent=MEETING_ROOT),
                "date": Node("next Tuesday", parent=MEETING_ROOT),
                "start time": Node("10am", parent=MEETING_ROOT),
                "session plan": Node("one 60-minute session", parent=MEETING_ROOT, needs=_plan_needs),
            },
        ),
        Turn(
            "Add Dave to the invite.",
            MEETING_ROOT, ("participants",),
            (op("update", "participants", "Alice, Bob, Carol and Dave"),),
            "Dave is invited: Alice, Bob, Carol and Dave, next Tuesday at 10am. The session plan needs a second look.",
            expect={
                "participants": Node("Alice, Bob, Carol and Dave", parent=MEETING_ROOT, version=2, history=(H("Alice, Bob and Carol", "updated", 2),)),
                "session plan": Node("one 60-minute session", parent=MEETING_ROOT, needs=_plan_needs, stale="'participants' was updated at turn 2"),
            },
            stale=("session plan",),
        ),
        Turn(
            "Carol and Dave can't both make 10am, so split it into two sessions.",
            MEETING_ROOT, ("session plan",),
            (
                op("new", "split reason", "Carol and Dave clash at 10am", parent=MEETING_ROOT),
                op("update", "session plan", "two 30-minute sessions"),
                op("depend", "session plan", needs=("split reason",)),
            ),
            "Split into two 30-minute sessions next Tuesday, because Carol and Dave clash at 10am.",
            expect={
                "split reason": Node("Carol and Dave clash at 10am", parent=MEETING_ROOT),
                "session plan": Node(
                    "two 30-minute sessions", parent=MEETING_ROOT, needs=(*_plan_needs, "split reason"), version=2,
                    history=(H("one 60-minute session", "updated", 3),),
                ),
            },
        ),
        Turn(
            "Why two sessions again?",
            MEETING_ROOT, (),
            (op("check", "session plan"), op("check", "split reason")),
            "Because Carol and Dave clash at 10am, the kickoff is two 30-minute sessions.",
        ),
        Turn(
            "Move it to Wednesday.",
            MEETING_ROOT, (),
            (op("update", "date", "next Wednesday"),),
            "Moved from next Tuesday to next Wednesday; the two 30-minute sessions need checking against the new date.",
            expect={
                "date": Node("next Wednesday", parent=MEETING_ROOT, version=2, history=(H("next Tuesday", "updated", 5),)),
                "session plan": Node(
                    "two 30-minute sessions", parent=MEETING_ROOT, needs=(*_plan_needs, "split reason"), version=2,
                    history=(H("one 60-minute session", "updated", 3),), stale="'date' was updated at turn 5",
                ),
            },
            stale=("session plan",),
        ),
        Turn(
            "Carol's clash is gone, merge it back into one session.",
            MEETING_ROOT, (),
            (op("remove", "split reason"), op("revert", "session plan", "one 60-minute session")),
            "Merged back into one 60-minute session next Wednesday at 10am, now that Carol is free.",
            expect={
                "split reason": Node(
                    "Carol and Dave clash at 10am", parent=MEETING_ROOT, status="removed", version=2,
                    history=(H("Carol and Dave clash at 10am", "removed", 6),),
                ),
                "session plan": Node(
                    "one 60-minute session", parent=MEETING_ROOT, needs=(*_plan_needs, "split reason"), version=3,
                    history=(H("one 60-minute session", "updated", 3), H("two 30-minute sessions", "reverted", 6)),
                ),
            },
            stale=("session plan",),
        ),
        Turn(
            "Who's attending, and when?",
            MEETING_ROOT, (),
            (op("check", "participants"), op("check", "date"), op("check", "start time"), op("check", "session plan")),
            "Alice, Bob, Carol and Dave, in one 60-minute session next Wednesday at 10am.",
        ),
    ),
)  # fmt: skip

CART_ROOT = "shopping cart"

CART = Scenario(
    name="cart",
    title="shopping cart",
    stresses="several items added, one removed and restored, a change undone, a swap, 'what's in my cart?', a reset",
    turns=(
        Turn(
            "Add 6 apples, 2 cartons of oat milk and a loaf of sourdough to my cart.",
            CART_ROOT, ("apples", "milk", "bread"),
            (
                op("new", "apples", "6 apples", parent=CART_ROOT),
                op("new", "milk", "2 cartons of oat milk", parent=CART_ROOT),
                op("new", "bread", "1 loaf of sourdough", parent=CART_ROOT),
            ),
            "Added 6 apples, 2 cartons of oat milk and 1 loaf of sourdough to your cart.",
            expect={
                CART_ROOT: Node(None),
                "apples": Node("6 apples", parent=CART_ROOT),
                "milk": Node("2 cartons of oat milk", parent=CART_ROOT),
                "bread": Node("1 loaf of sourdough", parent=CART_ROOT),
            },
        ),
        Turn(
            "Also add a bag of coffee beans.",
            CART_ROOT, ("coffee",),
            (op("new", "coffee", "1 bag of coffee beans", parent=CART_ROOT),),
            "Added 1 bag of coffee beans. Your cart holds 6 apples, 2 cartons of oat milk, 1 loaf of sourdough and "
            "1 bag of coffee beans.",
            expect={"coffee": Node("1 bag of coffee beans", parent=CART_ROOT)},
        ),
        Turn(
            "Remove the bread.",
            CART_ROOT, (),
            (op("remove", "bread"),),
            "Removed the 1 loaf of sourdough from your cart.",
            expect={
                "bread": Node("1 loaf of sourdough", parent=CART_ROOT, status="removed", version=2, history=(H("1 loaf of sourdough", "removed", 3),))
            },
        ),
        Turn(
            "Oops, undo that, I do want the bread.",
            CART_ROOT, ("bread",),
            (op("new", "bread", "1 loaf of sourdough", parent=CART_ROOT),),
            "Restored: 1 loaf of sourdough is back in your cart.",
            expect={"bread": Node("1 loaf of sourdough", parent=CART_ROOT, version=3, history=(H("1 loaf of sourdough", "removed", 3),))},
        ),
        Turn(
            "Make it 3 apples instead of 6.",
            CART_ROOT, (),
            (op("update", "apples", "3 apples"),),
            "Changed to 3 apples (you had 6 apples).",
            expect={"apples": Node("3 apples", parent=CART_ROOT, version=2, history=(H("6 apples", "updated", 5),))},
        ),
        Turn(
            "Undo the change to the apples.",
            CART_ROOT, (),
            (op("revert", "apples"),),
            "Undone: back to 6 apples instead of 3 apples.",
            expect={"apples": Node("6 apples", parent=CART_ROOT, version=3, history=(H("6 apples", "updated", 5), H("3 apples", "reverted", 6)))},
        ),
        Turn(
            "Swap the oat milk for almond milk.",
            CART_ROOT, (),
            (op("update", "milk", "2 cartons of almond milk"),),
            "Swapped: 2 cartons of almond milk instead of 2 cartons of oat milk.",
            expect={"milk": Node("2 cartons of almond milk", parent=CART_ROOT, version=2, history=(H("2 cartons of oat milk", "updated", 7),))},
        ),
        Turn(
            "What's in my cart?",
            CART_ROOT, (),
            (op("check", CART_ROOT),),
            "Your cart: 6 apples, 2 cartons of almond milk, 1 loaf of sourdough and 1 bag of coffee beans.",
        ),
        Turn(
            "Empty the cart, I'll start over tomorrow.",
            CART_ROOT, (),
            (op("remove", CART_ROOT),),
            "Done: your cart is empty.",
            expect={
                CART_ROOT: Node(None, status="removed", version=2, history=(H(None, "removed", 9),)),
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
                    history=(H("1 loaf of sourdough", "removed", 3), H("1 loaf of sourdough", "removed", 9)),
                ),
                "coffee": Node("1 bag of coffee beans", parent=CART_ROOT, status="removed", version=2, history=(H("1 bag of coffee beans", "removed", 9),)),
            },
        ),
    ),
)  # fmt: skip

SCENARIOS: tuple[Scenario, ...] = (TRIP, COOKING, MEETING, CART)


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
