"""TME: the task forest's rules, the tme-turn graph on both stores against the scripted model, and ``mnemoflow chat tme``."""

from __future__ import annotations

import asyncio
import queue
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mnemoflow.errors import NodeError
from mnemoflow.graphs import load_graph, run_graph
from mnemoflow.graphs.runner import RunResult
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.nodes.tme.agents import Operation
from mnemoflow.nodes.tme.conversation import SessionConflictError, load_conversation, save_turn
from mnemoflow.nodes.tme.forest import Forest, ForestError
from mnemoflow.nodes.tme.model import turn_record_id
from mnemoflow.nodes.tme.session import one_turn_at_a_time
from mnemoflow.nodes.tme.turn import apply_operations
from tests.conftest import EMBEDDER, settings_of
from tests.support.openai_server import Rule, ScriptedOpenAIServer

MNEMOFLOW = str(Path(sys.executable).with_name("mnemoflow"))
DECOMPOSE = "You split one user message"
CLASSIFY = "You are TRIM"
ANSWER = "You are an assistant helping a user"
SESSION = "s1"
WAIT_S = 30.0
TURN_STEPS = ["load", "decompose", "classify", "apply", "synthesize", "answer", "persist"]


# -- the forest, alone ------------------------------------------------------------------------------------


def chain() -> Forest:
    """A <- B <- C: C depends on B, B depends on A."""
    forest = Forest()
    forest.add("A", "Lisbon", parent=None, depends_on=[], turn=1)
    forest.add("B", "flight", parent=None, depends_on=["A"], turn=1)
    forest.add("C", "room", parent=None, depends_on=["B"], turn=1)
    return forest


def test_add_update_revert_remove_keep_history() -> None:
    forest = Forest()
    change = forest.add("Destination", "Paris", parent=None, depends_on=[], turn=1)
    assert change.op == "new" and forest.require("destination ", "read").value == "Paris"
    forest.update("destination", "Rome", turn=2, reason="changed its mind")
    forest.update("destination", "Oslo", turn=3)
    node = forest.require("destination", "read")
    assert (node.value, node.version, node.updated_turn) == ("Oslo", 3, 3)
    assert [(h.version, h.value, h.turn, h.reason) for h in node.history] == [
        (1, "Paris", 2, "changed its mind"),
        (2, "Rome", 3, "updated"),
    ]
    assert forest.revert("destination", to=None, turn=4).op == "revert"
    assert (
        node.value == "Rome"
        and node.version == 4
        and node.history[-1].model_dump() == {"version": 3, "value": "Oslo", "turn": 4, "reason": "reverted"}
    )
    forest.revert("destination", to="paris", turn=5)  # a named earlier value, matched by its key
    assert node.value == "Paris" and node.version == 5 and node.history[-1].value == "Rome"
    with pytest.raises(ForestError, match="never had that value"):
        forest.revert("destination", to="Lima", turn=6)
    removed = forest.remove("destination", turn=6)
    assert removed.op == "remove" and node.status == "removed" and node.version == 6
    assert node.history[-1].model_dump() == {"version": 5, "value": "Paris", "turn": 6, "reason": "removed"}
    assert forest.get("destination") is node and forest.active() == []
    with pytest.raises(ForestError, match="no such task step"):
        forest.update("destination", "Rome", turn=7)


def test_update_marks_transitive_dependents_stale_without_the_old_value() -> None:
    forest = chain()
    change = forest.update("A", "Porto", turn=2)
    assert change.stale == ["b", "c"]  # their keys, nearest first
    for slot in ("B", "C"):
        node = forest.require(slot, "read")
        assert node.stale and node.stale_reason is not None
        assert "'A'" in node.stale_reason and "turn 2" in node.stale_reason
        assert "Lisbon" not in node.stale_reason and "Porto" not in node.stale_reason
    assert not forest.require("A", "read").stale
    forest.refresh("B", "2b", turn=3)
    assert not forest.require("B", "read").stale and forest.require("C", "read").stale


def test_stale_reason_never_quotes_the_replaced_value() -> None:
    forest = Forest()
    forest.add("hotel", "Hotel Lutetia", parent=None, depends_on=[], turn=1)
    forest.add("taxi", "from the station", parent=None, depends_on=["hotel"], turn=1)
    forest.update("hotel", "Hotel Ritz", turn=2)
    reason = forest.require("taxi", "read").stale_reason
    assert reason is not None and "hotel" in reason and "Lutetia" not in reason


def test_shared_subtask_marks_every_dependent() -> None:
    forest = Forest()
    forest.add("dates", "May 3-7", parent=None, depends_on=[], turn=1)
    forest.add("flight", "AF123", parent=None, depends_on=["dates"], turn=1)
    forest.add("hotel", "Lutetia", parent=None, depends_on=["dates"], turn=1)
    forest.add("museum", "Louvre", parent=None, depends_on=[], turn=1)
    change = forest.update("dates", "June 1-4", turn=2)
    assert sorted(change.stale) == ["flight", "hotel"]
    assert forest.require("flight", "read").stale and forest.require("hotel", "read").stale
    assert not forest.require("museum", "read").stale


def test_a_cycle_is_refused_and_the_forest_is_unchanged() -> None:
    forest = chain()
    before = forest.model_dump()
    with pytest.raises(ForestError) as refused:
        forest.link("A", "C", turn=2)
    assert "'A'" in str(refused.value) and "'C'" in str(refused.value) and "cycle" in str(refused.value)
    assert forest.model_dump() == before
    with pytest.raises(ForestError, match="'B'"):
        forest.link("B", "B", turn=2)
    assert forest.model_dump() == before


def test_update_of_a_missing_slot_lists_the_known_ones() -> None:
    forest = chain()
    before = forest.model_dump()
    with pytest.raises(ForestError) as refused:
        forest.update("budget", "100", turn=2)
    message = str(refused.value)
    assert "'budget'" in message and "known: A, B, C" in message
    assert forest.model_dump() == before


def test_revert_without_an_earlier_value_is_refused() -> None:
    forest = chain()
    before = forest.model_dump()
    with pytest.raises(ForestError, match="no earlier value"):
        forest.revert("A", to=None, turn=2)
    assert forest.model_dump() == before


def test_revert_of_a_removed_step_restores_it_and_its_task() -> None:
    forest = Forest()
    forest.add("cart", None, parent=None, depends_on=[], turn=1)
    forest.add("bread", "1 loaf", parent="cart", depends_on=[], turn=1)
    forest.add("sandwich", "toast", parent="cart", depends_on=["bread"], turn=1)
    forest.remove("bread", turn=2)
    assert forest.superseded_values() == {"1 loaf"} and forest.get("sandwich").stale  # type: ignore[union-attr]
    change = forest.revert("bread", to=None, turn=3)
    bread = forest.get("bread")
    assert bread is not None and bread.status == "active" and bread.value == "1 loaf" and bread.version == 3
    assert [entry.reason for entry in bread.history] == ["removed", "restored"]
    assert change.op == "restore" and change.stale == ["cart/sandwich"] and forest.superseded_values() == set()


def test_superseded_values_after_update_then_revert() -> None:
    forest = Forest()
    forest.add("destination", "Paris", parent=None, depends_on=[], turn=1)
    assert forest.superseded_values() == set()
    forest.update("destination", "Rome", turn=2)
    assert forest.superseded_values() == {"Paris"}
    forest.revert("destination", to="Paris", turn=3)
    assert forest.superseded_values() == {"Rome"}  # reverted away from; the restored value is current again


def test_apply_operations_keeps_good_ops_and_reports_bad_ones() -> None:
    forest = chain()
    operations = [
        Operation(intent="update", slot="A", value="10"),
        Operation(intent="update", slot="budget", value="100"),  # refused: no such step
        Operation(intent="new", slot="hotel", value="Lutetia", parent="trip"),
        Operation(intent="depend", slot="A", depends_on=["hotel", "C"]),  # hotel fine, then C closes a cycle
        Operation(intent="revert", slot="hotel"),  # refused: no earlier value
    ]
    result, changes, errors = apply_operations(forest, operations, turn=2)
    assert [change.op for change in changes] == ["update", "new", "new"]
    assert result.require("A", "read").value == "10" and result.require("C", "read").stale
    assert result.require("hotel", "read").parent == "trip" and result.require("trip", "read").parent is None
    assert result.require("A", "read").depends_on == []  # the depend op was refused whole, not half applied
    assert len(errors) == 3
    assert errors[0].startswith("update 'budget'") and "known:" in errors[0]
    assert errors[1].startswith("depend 'A'") and "cycle" in errors[1]
    assert errors[2].startswith("revert 'hotel'") and "no earlier value" in errors[2]
    assert forest.model_dump() == chain().model_dump()  # the input forest itself is never changed


# -- the tme-turn graph against the scripted model, on both stores ------------------------------------------


@pytest.fixture
def server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer() as running:
        yield running


def script(server: ScriptedOpenAIServer, *classify: Rule, answer: str = "Noted.") -> None:
    """Decompose and answer replies fixed; the classifier's replies as given (tried in order)."""
    server.script(Rule(system=DECOMPOSE, json={"task": "plan a trip", "substeps": []}))
    server.script(*classify)
    server.script(Rule(system=ANSWER, text=answer))


def chats(server: ScriptedOpenAIServer, system: str) -> list[dict[str, Any]]:
    return [
        r for r in server.requests if r["path"].endswith("/chat/completions") and system in r["body"]["messages"][0]["content"]
    ]


class Turns:
    """Runs turns of one session on the ``store`` fixture with the scripted model."""

    def __init__(
        self, store: GraphStore, server: ScriptedOpenAIServer, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
    ) -> None:
        self.store, self.namespace = store, namespace
        self.llm = server.gateway()
        self.settings = settings_of(store, tmp_path, request)
        self.graph = load_graph("tme-turn")

    async def run(self, utterance: str, session: str = SESSION) -> RunResult:
        return await run_graph(
            self.graph, {"session": session, "utterance": utterance}, store=self.store, embedder=EMBEDDER, llm=self.llm,
            settings=self.settings, checkpointer=None, namespace=self.namespace,
        )  # fmt: skip

    async def seed(self, forest: Forest, session: str = SESSION) -> None:
        """Save ``forest`` as the session's first turn."""
        await save_turn(self.store, self.namespace, session, expected_turns=0, forest=forest, turn={"utterance": "seed"})

    async def forest(self, session: str = SESSION) -> dict[str, Any]:
        return (await load_conversation(self.store, self.namespace, session)).forest.model_dump()

    async def turns(self, session: str = SESSION) -> int:
        return (await load_conversation(self.store, self.namespace, session)).turns


@pytest.fixture
def turns(
    store: GraphStore, server: ScriptedOpenAIServer, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Turns:
    return Turns(store, server, namespace, tmp_path, request)


async def test_update_of_a_missing_slot_is_reported_and_changes_nothing(turns: Turns, server: ScriptedOpenAIServer) -> None:
    await turns.seed(chain())
    before = await turns.forest()
    script(server, Rule(system=CLASSIFY, json={"operations": [{"intent": "update", "slot": "budget", "value": "100"}]}))
    result = await turns.run("make the budget 100")
    assert result.status == "completed" and result.state["response"] == "Noted."
    [error] = result.state["errors"]
    assert "'budget'" in error and "known: A, B, C" in error
    assert "Could not apply: " in result.state["prompt"] and "'budget'" in result.state["prompt"]
    assert await turns.forest() == before
    assert await turns.turns() == 2  # the turn itself is recorded


async def test_a_requested_cycle_is_refused_and_changes_nothing(turns: Turns, server: ScriptedOpenAIServer) -> None:
    await turns.seed(chain())
    before = await turns.forest()
    script(server, Rule(system=CLASSIFY, json={"operations": [{"intent": "depend", "slot": "A", "depends_on": ["C"]}]}))
    result = await turns.run("A needs C now")
    assert result.status == "completed"
    [error] = result.state["errors"]
    assert "'A'" in error and "'C'" in error and "cycle" in error
    assert await turns.forest() == before


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(Rule(system=CLASSIFY, json={"operations": [{"intent": "explode"}]}), id="invalid-operation"),
        pytest.param(Rule(system=CLASSIFY, text="I would rather not say."), id="not-json"),
    ],
)
async def test_an_unreadable_classification_changes_nothing(turns: Turns, server: ScriptedOpenAIServer, bad: Rule) -> None:
    await turns.seed(chain())
    before = await turns.forest()
    script(server, bad)
    result = await turns.run("set A to 5")
    assert result.status == "completed" and result.state["operations"] == [] and result.state["changes"] == []
    [error] = result.state["errors"]
    assert "the classification could not be read, so nothing was changed" in error
    assert len(chats(server, CLASSIFY)) == 2  # asked, then re-asked once with the validation error
    assert await turns.forest() == before


@pytest.mark.parametrize("utterance", ["", "   \n\t"])
async def test_an_empty_utterance_is_refused_and_nothing_is_stored(
    turns: Turns, server: ScriptedOpenAIServer, utterance: str
) -> None:
    await turns.seed(chain())
    before = await turns.forest()
    script(server, Rule(system=CLASSIFY, json={"operations": []}))
    with pytest.raises(NodeError, match="empty"):
        await turns.run(utterance)
    assert server.requests == []
    assert await turns.turns() == 1 and await turns.forest() == before
    assert await turns.store.count_nodes(turns.namespace, "TmeTurn") == 1  # only the seed's
    [second] = await turns.store.get_nodes(turns.namespace, [turn_record_id(turns.namespace, SESSION, 2)])
    assert second is None


def new_step(slot: str, value: str) -> Rule:
    """The classifier adds ``slot`` when the message is ``slot: value``."""
    return Rule(
        system=CLASSIFY, user=f"Message: {slot}: {value}", json={"operations": [{"intent": "new", "slot": slot, "value": value}]}
    )


async def test_turns_of_one_session_through_the_lock_both_apply(turns: Turns, server: ScriptedOpenAIServer) -> None:
    slow = [new_step("destination", "Paris"), new_step("origin", "Oslo")]
    for rule in slow:
        rule.latency = 0.3
    script(server, *slow)

    def turn(utterance: str) -> Any:
        return one_turn_at_a_time(turns.namespace, SESSION, lambda: turns.run(utterance))

    first, second = await asyncio.gather(turn("destination: Paris"), turn("origin: Oslo"))
    assert first.status == second.status == "completed"
    assert {first.state["turn"], second.state["turn"]} == {0, 1}  # the second loaded after the first saved
    assert await turns.turns() == 2
    conversation = await load_conversation(turns.store, turns.namespace, SESSION)
    assert {node.slot: node.value for node in conversation.forest.active()} == {"destination": "Paris", "origin": "Oslo"}
    records = await turns.store.get_nodes(turns.namespace, [turn_record_id(turns.namespace, SESSION, n) for n in (1, 2)])
    assert sorted(str(r.properties["utterance"]) for r in records if r is not None) == ["destination: Paris", "origin: Oslo"]


class Interleave:
    """Scripted classifications that interleave two turns: the second turn loads the session before the first saves,
    and answers only once the first has been saved, so its save finds the session moved on."""

    def __init__(self, first: str, operations: dict[str, list[dict[str, Any]]]) -> None:
        self.first, self.operations = first, operations
        self.second_loaded, self.first_saved = threading.Event(), threading.Event()
        self.seen: list[str] = []

    def classify(self, body: dict[str, Any]) -> dict[str, Any]:
        content = str(body["messages"][-1]["content"])
        self.seen.append(content)
        if content.endswith(f"Message: {self.first}"):
            assert self.second_loaded.wait(WAIT_S), "the second turn never loaded"
        elif not self.second_loaded.is_set():
            self.second_loaded.set()
            assert self.first_saved.wait(WAIT_S), "the first turn never saved"
        return {"operations": self.operations[content.rsplit("Message: ", 1)[1]]}


async def test_racing_turns_without_the_lock_both_land_in_order(turns: Turns, server: ScriptedOpenAIServer) -> None:
    """Two turns load the same state; the one saved second starts over on the new state and keeps nothing of its
    first attempt (the update that found no step there is not reported)."""
    paris, rome = "destination: Paris", "go to Rome instead"
    race = Interleave(
        paris,
        {
            paris: [{"intent": "new", "slot": "destination", "value": "Paris"}],
            rome: [{"intent": "update", "slot": "destination", "value": "Rome"}],
        },
    )
    script(server, Rule(system=CLASSIFY, respond=race.classify))

    async def first() -> RunResult:
        try:
            return await turns.run(paris)
        finally:
            race.first_saved.set()

    saved_first, restarted = await asyncio.gather(first(), turns.run(rome))
    assert saved_first.status == restarted.status == "completed"
    assert saved_first.state["attempt"] == 1 and restarted.state["attempt"] == 2
    assert restarted.state["turn"] == 1 and restarted.state["errors"] == [] and restarted.state["conflict"] == ""
    assert restarted.steps == [*TURN_STEPS, *TURN_STEPS]  # started over from its load once
    assert len(race.seen) == 3 and "destination" in race.seen[2].split("Message:")[0]  # re-asked on the new state
    assert await turns.turns() == 2
    node = (await load_conversation(turns.store, turns.namespace, SESSION)).forest.require("destination", "read")
    assert (node.value, node.version, [entry.value for entry in node.history]) == ("Rome", 2, ["Paris"])
    first_record, second_record = await turns.store.get_nodes(
        turns.namespace, [turn_record_id(turns.namespace, SESSION, n) for n in (1, 2)]
    )
    assert first_record is not None and second_record is not None
    assert (first_record.properties["utterance"], first_record.properties["attempts"]) == (paris, 1)
    assert (second_record.properties["utterance"], second_record.properties["attempts"]) == (rome, 2)
    assert second_record.properties["errors"] == [] and second_record.properties["run_id"] == restarted.run_id


async def test_a_turn_that_loses_every_race_gives_up_after_max_attempts(turns: Turns, server: ScriptedOpenAIServer) -> None:
    """Another process saves a turn of the session while each attempt answers: the turn starts over until its
    bound, then fails saying what happened, and nothing of it is saved."""
    asked: queue.Queue[None] = queue.Queue()
    release = threading.Semaphore(0)

    def held_answer(body: dict[str, Any]) -> str:
        asked.put(None)
        assert release.acquire(timeout=WAIT_S), "the test never let the answer go"
        return "Noted."

    server.script(Rule(system=ANSWER, respond=held_answer))
    script(server, new_step("origin", "Oslo"))
    bound = turns.graph.spec.nodes["persist"].with_["max_attempts"]
    turn = asyncio.create_task(turns.run("origin: Oslo"))
    for number in range(1, bound + 1):
        await asyncio.to_thread(asked.get, timeout=WAIT_S)
        other = {"utterance": f"other {number}"}
        await save_turn(turns.store, turns.namespace, SESSION, expected_turns=number - 1, forest=Forest(), turn=other)
        release.release()
    with pytest.raises(SessionConflictError) as refused:
        await turn
    assert f"saved first every time this turn ran ({bound} attempts; the last time turn {bound})" in str(refused.value)
    assert "send the message again" in str(refused.value)
    assert len(chats(server, CLASSIFY)) == bound and await turns.turns() == bound
    assert (await load_conversation(turns.store, turns.namespace, SESSION)).forest.active() == []
    [after] = await turns.store.get_nodes(turns.namespace, [turn_record_id(turns.namespace, SESSION, bound + 1)])
    assert after is None


async def test_two_saves_based_on_the_same_turn_one_is_refused(store: GraphStore, namespace: str) -> None:
    """Two processes saving the same session: the claim on the next turn's record lets exactly one through; the
    winner repeating its save (resumed after a kill) finishes it, the loser repeating its own is refused again."""

    async def save(slot: str) -> None:
        forest = Forest()
        forest.add(slot, "x", parent=None, depends_on=[], turn=1)
        await save_turn(
            store, namespace, SESSION, expected_turns=0, forest=forest, turn={"utterance": slot}, saved_by=f"run-{slot}/1"
        )

    results = await asyncio.gather(save("destination"), save("origin"), return_exceptions=True)
    refused = [isinstance(result, SessionConflictError) for result in results]
    assert sorted(refused) == [False, True], results
    saved, lost = ["destination", "origin"][refused.index(False)], ["destination", "origin"][refused.index(True)]
    await save(saved)
    with pytest.raises(SessionConflictError, match="turn 1 was saved by another"):
        await save(lost)
    conversation = await load_conversation(store, namespace, SESSION)
    assert conversation.turns == 1 and [node.slot for node in conversation.forest.active()] == [saved]
    [record] = await store.get_nodes(namespace, [turn_record_id(namespace, SESSION, 1)])
    assert record is not None and record.properties["utterance"] == saved and record.properties["saved_by"] == f"run-{saved}/1"


async def test_the_turn_record_holds_utterance_operations_prompt_and_response(turns: Turns, server: ScriptedOpenAIServer) -> None:
    script(
        server,
        new_step("destination", "Paris"),
        Rule(
            system=CLASSIFY,
            user="Message: go to Rome instead",
            json={"operations": [{"intent": "update", "slot": "destination", "value": "Rome"}]},
        ),
        answer="Rome it is.",
    )
    await turns.run("destination: Paris")
    result = await turns.run("go to Rome instead")
    [record] = await turns.store.get_nodes(turns.namespace, [turn_record_id(turns.namespace, SESSION, 2)])
    assert record is not None and record.kind == "TmeTurn"
    properties = record.properties
    assert properties["utterance"] == "go to Rome instead" and properties["turn"] == 2 and properties["session"] == SESSION
    assert properties["operations"] == [
        {
            "intent": "update",
            "slot": "destination",
            "value": "Rome",
            "parent": None,
            "depends_on": [],
            "task": None,
            "new_slot": None,
        }
    ]
    assert properties["response"] == "Rome it is." and properties["run_id"] == result.run_id
    assert properties["prompt"] == result.state["prompt"]
    assert "Task: destination = Rome" in properties["prompt"] and properties["prompt"].endswith("User: go to Rome instead")
    assert "Paris" not in properties["prompt"]  # a replaced value never reaches the answer prompt
    [answered] = chats(server, ANSWER)[-1:]
    assert answered["body"]["messages"][-1]["content"] == properties["prompt"]
