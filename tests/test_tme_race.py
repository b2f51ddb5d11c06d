"""TME across processes: two ``mnemoflow run tme-turn`` processes take a turn of one session at once, on both stores.

The scripted model holds each process's first classification until both have asked for one, so both turns load
the same state before either saves: the one saved second finds the session moved on, starts over from its load on
the session's new state, and lands as the next turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mnemoflow.memory.protocol import GraphStore
from mnemoflow.nodes.tme.conversation import load_conversation
from mnemoflow.nodes.tme.model import turn_record_id
from tests.conftest import cli_environment
from tests.support.openai_server import Rule, ScriptedOpenAIServer

MNEMOFLOW = str(Path(sys.executable).with_name("mnemoflow"))
DECOMPOSE = "You split one user message"
CLASSIFY = "You are TRIM"
ANSWER = "You are an assistant helping a user"
SESSION = "trip"
WAIT_S = 120.0
UTTERANCES = {"destination: Paris": ("destination", "Paris"), "origin: Oslo": ("origin", "Oslo")}


class BothAsked:
    """Holds the first classification of each turn until both turns have asked for one (both loaded the session)."""

    def __init__(self, parties: int) -> None:
        self.parties = parties
        self.asked: list[str] = []
        self._lock = threading.Lock()
        self._all_in = threading.Event()

    def classify(self, body: dict[str, Any]) -> dict[str, Any]:
        content = str(body["messages"][-1]["content"])
        with self._lock:
            self.asked.append(content)
            if len(self.asked) >= self.parties:
                self._all_in.set()
        if not self._all_in.wait(WAIT_S):
            raise TimeoutError("the other turn never asked for its classification")
        [(slot, value)] = [UTTERANCES[said] for said in UTTERANCES if content.endswith(f"Message: {said}")]
        return {"operations": [{"intent": "new", "slot": slot, "value": value}]}


@pytest.fixture
def model() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer() as running:
        yield running


@pytest.mark.subprocess
async def test_two_processes_taking_a_turn_of_one_session_both_land_in_order(
    store: GraphStore, model: ScriptedOpenAIServer, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    gate = BothAsked(parties=len(UTTERANCES))
    model.script(Rule(system=DECOMPOSE, json={"task": "plan a trip", "substeps": []}))
    model.script(Rule(system=CLASSIFY, respond=gate.classify))
    model.script(Rule(system=ANSWER, text="Noted."))
    neo4j_uri = request.getfixturevalue("empty_neo4j") if store.backend == "neo4j" else None
    environment = cli_environment(store.backend, tmp_path, namespace=namespace, neo4j_uri=neo4j_uri, model_url=model.base_url)
    commands = [
        [MNEMOFLOW, "run", "tme-turn", "--input", json.dumps({"session": SESSION, "utterance": said}), "--field", "response"]
        for said in UTTERANCES
    ]
    outs, errs = [tmp_path / f"turn-{n}.out" for n in (1, 2)], [tmp_path / f"turn-{n}.err" for n in (1, 2)]
    with contextlib.ExitStack() as files:  # files, not pipes: a pipe nobody reads could fill and stall its writer
        processes = [
            subprocess.Popen(
                command,
                env=environment,
                cwd=tmp_path,
                stdout=files.enter_context(out.open("w")),
                stderr=files.enter_context(err.open("w")),
            )
            for command, out, err in zip(commands, outs, errs, strict=True)
        ]
        try:
            codes = [await asyncio.to_thread(process.wait, WAIT_S) for process in processes]
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
    assert codes == [0, 0], "\n".join(err.read_text() for err in errs)
    assert [json.loads(out.read_text()) for out in outs] == ["Noted.", "Noted."]

    conversation = await load_conversation(store, namespace, SESSION)
    assert conversation.turns == 2
    assert {node.slot: node.value for node in conversation.forest.active()} == {"destination": "Paris", "origin": "Oslo"}
    first, second = await store.get_nodes(namespace, [turn_record_id(namespace, SESSION, n) for n in (1, 2)])
    assert first is not None and second is not None
    assert {first.properties["utterance"], second.properties["utterance"]} == set(UTTERANCES)
    assert (first.properties["attempts"], second.properties["attempts"]) == (1, 2)  # the second one started over
    assert second.properties["errors"] == [] and first.properties["run_id"] != second.properties["run_id"]
    # the restarted turn classified again, on the session as the first turn left it
    winner_slot = UTTERANCES[str(first.properties["utterance"])][0]
    assert len(gate.asked) == 3
    remembered = [asked.split("Message:")[0] for asked in gate.asked]
    assert winner_slot not in remembered[0] and winner_slot not in remembered[1] and winner_slot in remembered[2]
