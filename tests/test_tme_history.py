"""TME's task identity and history: steps scoped by task, checks that see what they check replaced, ordered and
capped re-derivation, the parent's child-changed flag, version records and ``REPLACED_BY``, the temperature, and a
session saved before steps had task keys (loaded and continued), on both stores against the scripted model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import NodeRecord
from mnemoflow.nodes.tme.agents import Operation
from mnemoflow.nodes.tme.conversation import load_conversation
from mnemoflow.nodes.tme.forest import Change, ChildChange, Forest, ForestError
from mnemoflow.nodes.tme.measure import stale_facts
from mnemoflow.nodes.tme.model import legacy_task_node_id, session_record_id, task_node_id, version_record_id
from mnemoflow.nodes.tme.prompt import memory_listing, synthesize_prompt
from mnemoflow.nodes.tme.turn import apply_operations
from tests.support.graph_variants import library_variant
from tests.support.openai_server import Rule, ScriptedOpenAIServer
from tests.test_tme import CLASSIFY, SESSION, Turns, chats, script

REDERIVE = "Some task steps are stale"
TRIP, MEETING = "plan a trip", "schedule a meeting"


@pytest.fixture
def server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer() as running:
        yield running


@pytest.fixture
def turns(
    store: GraphStore, server: ScriptedOpenAIServer, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Turns:
    return Turns(store, server, namespace, tmp_path, request)


def two_tasks() -> Forest:
    """A trip and a meeting, each with a "date"; the trip's hotel needs the trip's date."""
    forest, changes, errors = apply_operations(
        Forest(),
        [
            Operation(intent="new", slot="date", value="May 3", parent=TRIP),
            Operation(intent="new", slot="hotel", value="Alfama", parent=TRIP, depends_on=["date"]),
            Operation(intent="new", slot="date", value="April 28", parent=MEETING),
        ],
        turn=1,
    )
    assert errors == [] and [change.op for change in changes] == ["new", "new", "new", "new", "new"]
    return forest


# -- the forest, alone ------------------------------------------------------------------------------------


def test_the_same_slot_in_two_tasks_is_two_steps() -> None:
    forest = two_tasks()
    assert sorted(forest.nodes) == [TRIP, f"{TRIP}/date", f"{TRIP}/hotel", MEETING, f"{MEETING}/date"]
    assert memory_listing(forest).splitlines() == [
        "- plan a trip: (a task)",
        "- date: May 3 (task plan a trip, under plan a trip)",
        "- hotel: Alfama (task plan a trip, under plan a trip)",
        "- schedule a meeting: (a task)",
        "- date: April 28 (task schedule a meeting, under schedule a meeting)",
    ]
    moved, changes, errors = apply_operations(
        forest, [Operation(intent="update", slot="date", value="April 29", task=MEETING)], turn=2
    )
    assert errors == [] and [(c.op, c.key, c.stale) for c in changes] == [("update", f"{MEETING}/date", [])]
    assert moved.nodes[f"{TRIP}/date"].value == "May 3" and not moved.nodes[f"{TRIP}/hotel"].stale
    assert moved.nodes[f"{MEETING}/date"].value == "April 29"
    # a name two tasks have, without the task, is refused and changes nothing
    same, _, [error] = apply_operations(moved, [Operation(intent="update", slot="date", value="June 1")], turn=3)
    assert error == "update 'date': 'date' is a step of several tasks (plan a trip, schedule a meeting): name the task"
    assert same.model_dump() == moved.model_dump()
    # the trip's date changes the trip's hotel only
    trip, changes, _ = apply_operations(moved, [Operation(intent="update", slot="date", value="May 4", task=TRIP)], turn=3)
    assert changes[0].stale == [f"{TRIP}/hotel"] and trip.nodes[f"{MEETING}/date"].value == "April 29"


def test_a_parent_is_flagged_when_a_child_changes_until_it_is_updated() -> None:
    forest, _, _ = apply_operations(
        Forest(),
        [
            Operation(intent="new", slot="soup", value="vegetable soup", parent="dinner"),
            Operation(intent="new", slot="carrots", value="2 carrots", parent="soup"),
            Operation(intent="new", slot="bread", value="rye", parent="dinner"),
        ],
        turn=1,
    )
    forest.update("carrots", "3 carrots", turn=2)
    soup, root = forest.nodes["dinner/soup"], forest.nodes["dinner"]
    assert soup.changed_children == [ChildChange(child="carrots", cause="updated", turn=2)]
    assert root.changed_children == []  # the direct parent only
    prompt = synthesize_prompt(forest, [Change(op="update", slot="carrots", key="dinner/carrots")], [], "more carrots")
    assert "- soup: vegetable soup [steps under it changed: carrots updated at turn 2]" in prompt.splitlines()
    forest.remove("bread", turn=3)
    forest.revert("carrots", to=None, turn=4)
    assert soup.changed_children == [ChildChange(child="carrots", cause="reverted", turn=4)]  # the latest per child
    assert root.changed_children == [ChildChange(child="bread", cause="removed", turn=3)]
    forest.update("soup", "carrot soup", turn=5)
    assert soup.changed_children == []  # cleared when the parent itself changes
    assert root.changed_children == [ChildChange(child="bread", cause="removed", turn=3), ChildChange(child="soup", cause="updated", turn=5)]
    assert "- dinner  [bread removed at turn 3]  [soup updated at turn 5]  v1" in forest.render()


def test_a_swapped_step_is_kept_replaced_and_its_dependents_move_to_the_new_one() -> None:
    forest, _, _ = apply_operations(
        Forest(),
        [
            Operation(intent="new", slot="oat milk", value="2 cartons", parent="cart"),
            Operation(intent="new", slot="porridge", value="for 2", parent="cart", depends_on=["oat milk"]),
        ],
        turn=1,
    )
    forest, [change], errors = apply_operations(
        forest, [Operation(intent="update", slot="oat milk", new_slot="almond milk", value="1 carton")], turn=2
    )
    assert errors == [] and (change.op, change.key, change.detail, change.stale) == ("replace", "cart/oat milk", "by almond milk", ["cart/porridge"])
    old, new = forest.nodes["cart/oat milk"], forest.nodes["cart/almond milk"]
    assert (old.status, old.replaced_by, old.version, old.history[-1].reason) == ("replaced", "cart/almond milk", 2, "replaced by almond milk")
    assert (new.value, new.parent, new.created_turn) == ("1 carton", "cart", 2)
    assert forest.nodes["cart/porridge"].depends_on == ["cart/almond milk"] and forest.nodes["cart/porridge"].stale
    assert forest.superseded_values() == {"2 cartons"}
    with pytest.raises(ForestError, match="it was replaced by 'almond milk'"):
        forest.update("oat milk", "3 cartons", turn=3)


def test_stale_steps_come_in_dependency_layers() -> None:
    forest = Forest()
    forest.add("A", "1", parent=None, depends_on=[], turn=1)
    forest.add("B", "2", parent=None, depends_on=["A"], turn=1)
    forest.add("C", "3", parent=None, depends_on=["B"], turn=1)
    forest.add("D", "4", parent=None, depends_on=["A"], turn=1)
    forest.add("E", "5", parent=None, depends_on=["C", "D"], turn=1)
    change = forest.update("A", "10", turn=2)
    assert change.stale == ["b", "d", "c", "e"]
    assert [[node.slot for node in layer] for layer in forest.stale_layers(["d", "b"])] == [["D", "B"], ["C"], ["E"]]


def test_a_check_sees_what_the_checked_step_replaced_and_nothing_else_does() -> None:
    forest, _, _ = apply_operations(
        Forest(),
        [
            Operation(intent="new", slot="day", value="Saturday", parent="party"),
            Operation(intent="new", slot="guests", value="8 guests", parent="party"),
        ],
        turn=1,
    )
    forest.update("day", "Sunday", turn=2)
    forest.update("guests", "10 guests", turn=2)
    checked = synthesize_prompt(forest, [Change(op="check", slot="day", key="party/day")], [], "Which day did I pick first?")
    assert checked == "\n".join(
        [
            "Task memory (current values):",
            "Task: party",  # its flags are not shown: it has no value that could need another look
            "- day: Sunday (changed 1 time, last at turn 2)",
            "    replaced earlier values: Saturday (until turn 2: updated)",
            "This turn: check day",
            "",
            "User: Which day did I pick first?",
        ]
    )
    assert stale_facts(checked, forest.superseded_values(), "Which day did I pick first?") == []  # shown as replaced
    # another intent on the same forest: current values only
    other = synthesize_prompt(forest, [Change(op="check", slot="guests", key="party/guests")], [], "How many guests?")
    assert "Saturday" not in other and "8 guests (until turn 2: updated)" in other


# -- the tme-turn graph, on both stores ---------------------------------------------------------------------


async def test_every_call_samples_at_the_papers_temperature(turns: Turns, server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    script(server, Rule(system=CLASSIFY, json={"operations": [{"intent": "new", "slot": "destination", "value": "Paris"}]}))
    await turns.run("destination: Paris")
    bodies = [r["body"] for r in server.requests if r["path"].endswith("/chat/completions")]
    assert len(bodies) == 3 and [body["temperature"] for body in bodies] == [0.3, 0.3, 0.3]
    turns.graph = library_variant("tme-turn", tmp_path, {"with: {temperature: 0.3}\n  classify": "with: {temperature: 0}\n  classify"})
    await turns.run("destination: Paris", session="other")
    assert [r["body"]["temperature"] for r in server.requests[len(bodies) :]] == [0, 0.3, 0.3]


def chain_forest() -> Forest:
    """A <- B <- C and A <- D: B and D need A, C needs B (all in task T)."""
    forest, _, errors = apply_operations(
        Forest(),
        [
            Operation(intent="new", slot="A", value="Lisbon", parent="T"),
            Operation(intent="new", slot="B", value="flight to Lisbon", parent="T", depends_on=["A"]),
            Operation(intent="new", slot="C", value="taxi from the Lisbon flight", parent="T", depends_on=["B"]),
            Operation(intent="new", slot="D", value="Lisbon guide", parent="T", depends_on=["A"]),
        ],
        turn=1,
    )
    assert errors == []
    return forest


def rederiving(tmp_path: Path, cap: int) -> Any:
    return library_variant("tme-turn", tmp_path, {"{rederive: false}": "{rederive: true}", "max_rederive: 8": f"max_rederive: {cap}"})


UPDATE_A = Rule(system=CLASSIFY, json={"operations": [{"intent": "update", "slot": "A", "value": "Porto"}]})


async def test_rederivation_runs_layer_by_layer_each_seeing_the_layer_before(
    turns: Turns, server: ScriptedOpenAIServer, tmp_path: Path
) -> None:
    turns.graph = rederiving(tmp_path, 8)
    await turns.seed(chain_forest())
    script(
        server,
        UPDATE_A,
        Rule(system=REDERIVE, user="re-derive: B, D", json={"values": [{"slot": "B", "value": "flight to Porto"}, {"slot": "D", "value": "Porto guide"}]}),
        Rule(system=REDERIVE, user="re-derive: C", json={"values": [{"slot": "C", "value": "taxi from the Porto flight"}]}),
    )
    result = await turns.run("make A Porto")
    assert result.state["errors"] == [] and result.state["deferred"] == []
    first, second = [r["body"]["messages"][-1]["content"] for r in chats(server, REDERIVE)]
    assert first == "\n".join(
        [
            "- A: Porto (task T) (changed 1 time, last at turn 2)",
            "- B: (needs another look) (task T) (needs A) [stale: 'A' was updated at turn 2]",
            "- D: (needs another look) (task T) (needs A) [stale: 'A' was updated at turn 2]",
            "",
            "Stale steps to re-derive: B, D",
        ]
    )
    assert second == "\n".join(
        [
            "- A: Porto (task T) (changed 1 time, last at turn 2)",
            "- B: flight to Porto (task T) (needs A) (changed 1 time, last at turn 2)",
            "- C: (needs another look) (task T) (needs B) [stale: 'A' was updated at turn 2]",
            "",
            "Stale steps to re-derive: C",
        ]
    )
    forest = Forest.model_validate(await turns.forest())
    assert {n.slot: (n.value, n.stale) for n in forest.active() if n.parent} == {
        "A": ("Porto", False), "B": ("flight to Porto", False), "C": ("taxi from the Porto flight", False), "D": ("Porto guide", False),
    }  # fmt: skip
    assert forest.nodes["t"].changed_children[-1] == ChildChange(child="C", cause="re-derived", turn=2)


async def test_rederivation_stops_at_the_cap_and_the_turn_says_so(turns: Turns, server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    turns.graph = rederiving(tmp_path, 2)
    await turns.seed(chain_forest())
    script(
        server,
        UPDATE_A,
        Rule(
            system=REDERIVE, user="re-derive: B, D",
            json={"values": [{"slot": "B", "value": "flight to Porto"}, {"slot": "D", "value": "Porto guide"}]},
        ),
    )  # fmt: skip
    result = await turns.run("make A Porto")
    assert len(chats(server, REDERIVE)) == 1 and result.state["deferred"] == ["C"]
    assert "Still stale, not re-derived this turn: C" in result.state["prompt"]
    assert "- C: (needs another look) (needs B) [stale: 'A' was updated at turn 2]" in result.state["prompt"]
    # the next turn re-derives what was left, though nothing new went stale
    server.script(Rule(system=CLASSIFY, user="Message: thanks", json={"operations": []}))
    server.script(Rule(system=REDERIVE, user="re-derive: C", json={"values": [{"slot": "C", "value": "taxi from the Porto flight"}]}))
    later = await turns.run("thanks")
    assert later.state["deferred"] == [] and len(chats(server, REDERIVE)) == 2
    assert Forest.model_validate(await turns.forest()).nodes["t/c"].value == "taxi from the Porto flight"


async def test_an_unreadable_rederivation_leaves_the_steps_stale_and_says_so(
    turns: Turns, server: ScriptedOpenAIServer, tmp_path: Path
) -> None:
    turns.graph = rederiving(tmp_path, 8)
    await turns.seed(chain_forest())
    script(server, UPDATE_A, Rule(system=REDERIVE, text="no idea"))
    result = await turns.run("make A Porto")
    assert result.status == "completed" and result.state["deferred"] == ["B", "C", "D"]
    [error] = result.state["errors"]
    assert error.startswith("tme.rederive: the re-derivation of B, D could not be read, so they stay stale:")
    assert len(chats(server, REDERIVE)) == 2  # asked, re-asked once; C (needing B) is not asked for


async def test_versions_and_replacements_are_records_with_links(turns: Turns, server: ScriptedOpenAIServer) -> None:
    script(
        server,
        Rule(system=CLASSIFY, user="Message: add oat milk", json={"operations": [{"intent": "new", "slot": "oat milk", "value": "2 cartons", "parent": "cart"}]}),
        Rule(system=CLASSIFY, user="Message: make it 3", json={"operations": [{"intent": "update", "slot": "oat milk", "value": "3 cartons"}]}),
        Rule(
            system=CLASSIFY, user="Message: almond instead",
            json={"operations": [{"intent": "update", "slot": "oat milk", "new_slot": "almond milk"}]},
        ),
    )  # fmt: skip
    for utterance in ("add oat milk", "make it 3", "almond instead"):
        assert (await turns.run(utterance)).state["errors"] == []
    store, ns = turns.store, turns.namespace
    ids = [version_record_id(ns, SESSION, "cart/oat milk", version) for version in (1, 2, 3)]
    versions = await store.get_nodes(ns, ids)
    assert [(v.kind, v.properties["version"], v.properties["value"], v.properties["turn"], v.properties["reason"]) for v in versions if v] == [
        ("TaskNodeVersion", 1, "2 cartons", 1, "created"),
        ("TaskNodeVersion", 2, "3 cartons", 2, "updated"),
        ("TaskNodeVersion", 3, "3 cartons", 3, "replaced by almond milk"),
    ]
    old_id, new_id = task_node_id(ns, SESSION, "cart/oat milk"), task_node_id(ns, SESSION, "cart/almond milk")
    assert all(v is not None and v.properties["node"] == old_id for v in versions)
    page = await store.neighbours(ns, old_id)
    links = sorted((r.type, r.target_id, r.properties.get("turn")) for r in page.relationships if r.source_id == old_id)
    assert links == sorted(
        [("CHILD_OF", task_node_id(ns, SESSION, "cart"), None), ("REPLACED_BY", new_id, 3)] + [("HAS_VERSION", i, None) for i in ids]
    )
    chain_page = await store.neighbours(ns, ids[2])
    assert [(r.type, r.target_id) for r in chain_page.relationships if r.source_id == ids[2] and r.type == "PREV"] == [("PREV", ids[1])]
    [almond] = await store.get_nodes(ns, [version_record_id(ns, SESSION, "cart/almond milk", 1)])
    assert almond is not None and (almond.properties["value"], almond.properties["turn"]) == ("3 cartons", 3)


async def test_a_session_saved_by_slot_loads_and_continues(turns: Turns, server: ScriptedOpenAIServer) -> None:
    """The records today's code wrote before steps had task keys: the turn loads them, re-keys them by task,
    saves them under their new ids and deletes the old records."""
    store, ns = turns.store, turns.namespace

    def node(slot: str, value: str | None, parent: str | None, needs: list[str]) -> dict[str, Any]:
        return {
            "slot": slot, "value": value, "parent": parent, "depends_on": needs, "status": "active", "stale": False,
            "stale_reason": None, "version": 1, "history": [], "created_turn": 1, "updated_turn": 1,
        }  # fmt: skip

    old = {
        "plan a trip": node("plan a trip", None, None, []),
        "destination": node("destination", "Paris", "plan a trip", []),
        "hotel": node("hotel", "Louvre", "plan a trip", ["destination"]),
    }
    await store.upsert_nodes(
        [
            NodeRecord(id=session_record_id(ns, SESSION), namespace=ns, kind="TmeSession", text=f"conversation {SESSION}",
                       properties={"session": SESSION, "turns": 1, "nodes": sorted(old)}),
            *(
                NodeRecord(id=legacy_task_node_id(ns, SESSION, key), namespace=ns, kind="TaskNode", text=key,
                           properties={"session": SESSION, "slot": task["slot"], "value": task["value"], "status": "active",
                                       "stale": False, "version": 1, "task": task})
                for key, task in old.items()
            ),
        ]
    )  # fmt: skip
    script(server, Rule(system=CLASSIFY, json={"operations": [{"intent": "update", "slot": "destination", "value": "Rome"}]}))
    result = await turns.run("Rome instead")
    assert result.state["turn"] == 1 and result.state["errors"] == [] and result.state["stale"] == ["hotel"]
    assert "- destination: Rome" in result.state["prompt"] and "[stale: 'destination' was updated at turn 2]" in result.state["prompt"]
    conversation = await load_conversation(store, ns, SESSION)
    assert conversation.turns == 2
    assert {key: (n.task, n.parent, n.depends_on, n.value) for key, n in conversation.forest.nodes.items()} == {
        "plan a trip": (None, None, [], None),
        "plan a trip/destination": ("plan a trip", "plan a trip", [], "Rome"),
        "plan a trip/hotel": ("plan a trip", "plan a trip", ["plan a trip/destination"], "Louvre"),
    }
    assert await store.get_nodes(ns, [legacy_task_node_id(ns, SESSION, key) for key in old]) == [None, None, None]
    assert await store.count_nodes(ns, "TaskNode") == 3
    [version] = await store.get_nodes(ns, [version_record_id(ns, SESSION, "plan a trip/destination", 2)])
    assert version is not None and version.properties["value"] == "Rome"
