"""What a run's record tells a reader: its input and outputs, per step the state it wrote, per model call the prompt,
the reply and the figures, all bounded; the gateway's call records; a run id chosen by the caller."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

import tests.support.testing_nodes  # noqa: F401  (registers testing.flaky)
from mnemoflow.errors import ConfigError, LLMOutputError
from mnemoflow.graphs import GraphRunner, load_graph
from mnemoflow.graphs.preview import json_chars, preview, preview_bounded
from mnemoflow.graphs.runner import input_problems
from mnemoflow.llm import LLM
from mnemoflow.llm.calls import MAX_CALL_RECORDS
from mnemoflow.memory.checkpoints import open_checkpointer
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import stable_id
from mnemoflow.nodes import NoConfig, RunContext, node
from mnemoflow.nodes.context import MAX_TRACED_CALLS
from mnemoflow.nodes.text import TextState
from mnemoflow.settings import Settings
from tests.conftest import EMBEDDER, offline_llm, settings_of
from tests.support.openai_server import Rule, ScriptedOpenAIServer
from tests.test_graphs import TEXT, write_graph
from tests.test_llm import gateway

LONG_TEXT = " ".join(f"Sentence number {index} says little." for index in range(40))


class Verdict(BaseModel):
    answer: str
    confidence: float


JUDGE_PROMPT = "You judge the calm of the sea."


@node("testing.judge", state=TextState, reads={"text"}, writes={"notes"})
async def judge(state: TextState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """Ask the model for a verdict on the text (temperature 0, so the cache may answer)."""
    messages = [{"role": "system", "content": JUDGE_PROMPT}, {"role": "user", "content": f"judge: {state.text}"}]
    verdict = await context.llm.structured(messages, Verdict, temperature=0)
    return {"notes": [verdict.answer]}


class ChattyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    calls: int = 2


@node("testing.chatty", state=TextState, reads={"rounds"}, writes={"rounds", "sentences"}, config=ChattyConfig)
async def chatty(state: TextState, config: ChattyConfig, context: RunContext) -> dict[str, Any]:
    """Make long model calls and write a large value: a step as heavy as a run's record will meet."""
    history = [{"role": "user" if index % 2 else "assistant", "content": f"turn {index} " + "word " * 600} for index in range(9)]
    for call in range(config.calls):
        prompt = [{"role": "system", "content": "chat " * 500}, *history, {"role": "user", "content": f"chat {call}"}]
        await context.llm.text(prompt)
    return {"rounds": state.rounds + 1, "sentences": [f"{state.rounds} " + "long sentence " * 100] * 30}


@pytest.fixture
def server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer() as running:
        yield running


async def run(
    store: GraphStore,
    settings: Settings,
    graph: str | Path,
    values: dict[str, Any] | None,
    namespace: str,
    llm: LLM,
    *,
    thread: str | None = None,
    run_id: str | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Run ``graph`` and return its result and its run record's properties (the record of a failed run too)."""
    async with open_checkpointer(settings) as checkpointer:
        runner = GraphRunner(
            load_graph(graph), store=store, embedder=EMBEDDER, llm=llm, settings=settings, checkpointer=checkpointer
        )
        async with runner:
            result = await runner.run(values, namespace=namespace, thread_id=thread, run_id=run_id)
    return result, await record_of(store, namespace, result.run_id)


async def record_of(store: GraphStore, namespace: str, run_id: str) -> dict[str, Any]:
    [record] = await store.get_nodes(namespace, [stable_id(namespace, "Run", run_id)])
    assert record is not None
    return record.properties


async def only_record(store: GraphStore, namespace: str) -> dict[str, Any]:
    [record] = await store.list_nodes(namespace, kind="Run")
    return record.properties


def judge_graph(folder: Path) -> Path:
    return write_graph(
        folder,
        "judge",
        "nodes:\n  judge: {use: testing.judge}\nedges:\n  - {from: START, to: judge}\n  - {from: judge, to: END}\n",
    )


def prompt_words(body: dict[str, Any]) -> int:
    """The prompt tokens the scripted server reports for a request it received: the words of its messages."""
    return sum(len(str(message.get("content") or "").split()) for message in body["messages"])


# -- previews ----------------------------------------------------------------------------------------------------------


def test_previews_mark_what_they_leave_out() -> None:
    class Probe(BaseModel):
        cue: str
        vector: list[float]

    value = {
        "vector": [0.25] * 384,
        "ids": list(range(31)),  # too short for a vector
        "long": "x" * 1200,
        "many": [str(index) for index in range(25)],
        "keys": {f"k{index}": index for index in range(45)},
        "probe": Probe(cue="who", vector=[0.5] * 64),
        "deep": [[[[[[["bottom"]]]]]]],
        "odd": (math.nan, math.inf, Path("/tmp/x"), frozenset({1})),
    }
    shown = preview(value)
    assert shown["vector"] == {"$vector": 384}
    assert shown["ids"] == [*range(20), {"$more": 11}]
    assert shown["long"] == {"$text": "x" * 500, "$chars": 1200}
    assert shown["many"][:20] == [str(index) for index in range(20)] and shown["many"][20:] == [{"$more": 5}]
    assert len(shown["keys"]) == 41 and shown["keys"]["k39"] == 39 and shown["keys"]["$more"] == 5
    assert shown["probe"] == {"cue": "who", "vector": {"$vector": 64}}
    assert shown["deep"] == [[[[[{"$deep": "list"}]]]]]  # six levels shown: the root mapping and five lists
    assert shown["odd"] == ["nan", "inf", "/tmp/x", [1]]
    json.dumps(shown, allow_nan=False)  # what the stores accept


def test_a_bounded_preview_shrinks_then_gives_up() -> None:
    value = {"text": "y" * 3000, "items": [f"item {index} " * 20 for index in range(50)]}
    assert preview_bounded(value, 100_000) == preview(value)
    shrunk = preview_bounded(value, 2000)
    assert json_chars(shrunk) <= 2000 and shrunk["text"]["$chars"] == 3000 and len(shrunk["text"]["$text"]) < 500
    assert shrunk["items"][-1]["$more"] > 30
    omitted = preview_bounded(value, 10)
    assert list(omitted) == ["$omitted"] and omitted["$omitted"] > 10


# -- what each step wrote ----------------------------------------------------------------------------------------------


async def test_each_step_records_the_fields_it_wrote_before_and_after(
    store: GraphStore, namespace: str, tmp_path: Path, request: pytest.FixtureRequest, server: ScriptedOpenAIServer
) -> None:
    settings = settings_of(store, tmp_path, request)
    result, record = await run(store, settings, "text-stats", {"text": TEXT}, namespace, gateway(server, tmp_path))
    events = record["events"]
    assert [event["node"] for event in events] == result.steps
    split = events[0]
    assert split["node"] == "split"
    assert split["writes"] == {"sentences": {"before": [], "after": result.state["sentences"]}}
    counts = [event for event in events if event["node"] == "count"]
    assert len(counts) == 4 and all(event["writes"]["word_counts"]["merged"] is True for event in counts)
    assert sorted(event["writes"]["word_counts"]["after"][0] for event in counts) == sorted(result.state["word_counts"])
    assert all(event["writes"]["word_counts"]["before"] == [] for event in counts)  # each branch starts from the split
    notes = [event for event in events if event["node"] == "note"]
    assert [event["writes"]["rounds"] for event in notes] == [
        {"before": 0, "after": 1},
        {"before": 1, "after": 2},
        {"before": 2, "after": 3},
    ]
    assert notes[1]["writes"]["notes"] == {"before": ["round 1: 23 words"], "after": ["round 2: 23 words"], "merged": True}
    assert "calls" not in split and "llm" not in split  # no model call, nothing said of one
    assert record["input"] == {"text": TEXT}
    assert record["outputs"] == {"total_words": 23, "rounds": 3, "notes": result.state["notes"]}


async def test_a_step_that_writes_what_the_field_held_is_marked_unchanged_and_long_values_are_folded(
    sqlite_store: GraphStore, namespace: str, tmp_path: Path, request: pytest.FixtureRequest, server: ScriptedOpenAIServer
) -> None:
    path = write_graph(
        tmp_path,
        "twice",
        "nodes:\n  first: {use: text.split_sentences}\n  second: {use: text.split_sentences}\n"
        "edges:\n  - {from: START, to: first}\n  - {from: first, to: second}\n  - {from: second, to: END}\n",
    )
    settings = settings_of(sqlite_store, tmp_path, request)
    _, record = await run(sqlite_store, settings, path, {"text": LONG_TEXT}, namespace, gateway(server, tmp_path))
    first, second = record["events"]
    assert first["writes"]["sentences"]["before"] == [] and "unchanged" not in first["writes"]["sentences"]
    written = second["writes"]["sentences"]
    assert written["unchanged"] is True and written["before"] == written["after"]
    assert len(written["after"]) == 21 and written["after"][-1] == {"$more": 20}
    assert record["input"] == {"text": {"$text": LONG_TEXT[:500], "$chars": len(LONG_TEXT)}}


# -- what each model call was ------------------------------------------------------------------------------------------


async def test_a_structured_call_is_recorded_with_its_prompt_reply_tokens_retries_and_cache_hit(
    store: GraphStore, namespace: str, tmp_path: Path, request: pytest.FixtureRequest, server: ScriptedOpenAIServer
) -> None:
    server.script(user="judge:", json={"answer": "calm", "confidence": 0.9})
    server.failures.append(500)  # the first request fails once: the gateway retries it
    settings = settings_of(store, tmp_path, request)
    graph = judge_graph(tmp_path)
    _, record = await run(store, settings, graph, {"text": "The sea was calm."}, namespace, gateway(server, tmp_path, cache=True))
    [event] = record["events"]
    [call] = event["calls"]
    body = server.requests[-1]["body"]
    assert call["kind"] == "structured" and call["name"] == "Verdict"
    assert call["messages"] == [
        {"role": "system", "content": JUDGE_PROMPT},
        {"role": "user", "content": "judge: The sea was calm."},
    ]
    assert call["messages_omitted"] == 0
    assert json.loads(call["reply"]) == {"answer": "calm", "confidence": 0.9}
    assert call["prompt_tokens"] == prompt_words(body) and call["completion_tokens"] == 4  # as the server reported
    assert (call["requests"], call["retries"], call["reasks"], call["cache_hit"]) == (2, 1, 0, False)
    assert call["seconds"] > 0 and "error" not in call
    assert event["llm"]["retries"] == 1 and event["llm"]["tokens"] == call["prompt_tokens"] + call["completion_tokens"]

    sent = server.request_count
    _, again = await run(store, settings, graph, {"text": "The sea was calm."}, namespace, gateway(server, tmp_path, cache=True))
    [cached] = again["events"][0]["calls"]
    assert server.request_count == sent  # answered from the cache
    assert cached["cache_hit"] is True and cached["requests"] == 0 and json.loads(cached["reply"])["answer"] == "calm"


async def test_a_reply_that_never_validates_leaves_an_error_record_on_the_failed_step(
    store: GraphStore, namespace: str, tmp_path: Path, request: pytest.FixtureRequest, server: ScriptedOpenAIServer
) -> None:
    server.script(user="judge:", text="It is calm, I think.")
    server.script(user="not valid", text="Still calm.")
    settings = settings_of(store, tmp_path, request)
    with pytest.raises(LLMOutputError):
        await run(store, settings, judge_graph(tmp_path), {"text": "The sea."}, namespace, gateway(server, tmp_path))
    record = await only_record(store, namespace)
    [event] = record["events"]
    assert record["status"] == "failed" and event["event"] == "error" and "writes" not in event
    [call] = event["calls"]
    assert call["error"].startswith("LLMOutputError: Verdict: the model's reply did not validate after a re-ask")
    assert call["reply"] == "Still calm." and (call["requests"], call["reasks"]) == (2, 1)
    assert "outputs" not in record and record["input"] == {"text": "The sea."}


async def test_calls_made_at_once_each_get_their_own_figures(server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    server.script(Rule(user="second", fault="500", times=1))
    server.script(user=None, json={"answer": "yes", "confidence": 1.0})
    llm = gateway(server, tmp_path)
    asks = ["first question", "second question here", "third question asked at once"]
    await asyncio.gather(*(llm.structured([{"role": "user", "content": ask}], Verdict) for ask in asks))
    by_prompt = {call.messages[0]["content"]: call for call in llm.calls}
    assert set(by_prompt) == set(asks)
    assert [(by_prompt[ask].requests, by_prompt[ask].retries) for ask in asks] == [(1, 0), (2, 1), (1, 0)]
    assert [by_prompt[ask].prompt_tokens for ask in asks] == [len(ask.split()) for ask in asks]
    assert llm.usage.calls == 3 and llm.usage.requests == 4 and llm.usage.retries == 1
    assert llm.usage.prompt_tokens == sum(call.prompt_tokens for call in llm.calls)
    assert llm.fork().calls == []


async def test_a_call_record_is_bounded_however_long_the_prompt() -> None:
    llm = offline_llm()
    history = [{"role": "user", "content": f"message {index} " + "z" * 3000} for index in range(9)]
    await llm.text(history)
    [call] = llm.calls
    assert [message["content"][:9] for message in call.messages] == ["message 0", *(f"message {index}" for index in range(4, 9))]
    assert call.messages_omitted == 3
    assert all(len(message["content"]) == 1500 and message["chars"] == 3010 for message in call.messages)
    for _ in range(MAX_CALL_RECORDS + 4):
        await llm.text([{"role": "user", "content": "hello"}])
    assert len(llm.calls) == MAX_CALL_RECORDS and llm.calls_omitted == 5 and llm.usage.calls == MAX_CALL_RECORDS + 5


async def test_a_long_run_keeps_a_bounded_record(
    sqlite_store: GraphStore, namespace: str, tmp_path: Path, request: pytest.FixtureRequest, server: ScriptedOpenAIServer
) -> None:
    server.script(user="chat", text="Noted.")
    path = write_graph(
        tmp_path,
        "long",
        "max_steps: 250\nnodes:\n  chat: {use: testing.chatty}\nedges:\n  - {from: START, to: chat}\nroutes:\n"
        "  - {from: chat, router: text.until_rounds, with: {max_rounds: 100}, outcomes: {again: chat, done: END}}\n",
    )
    settings = settings_of(sqlite_store, tmp_path, request)
    result, record = await run(sqlite_store, settings, path, {"text": "x"}, namespace, gateway(server, tmp_path))
    events = record["events"]
    assert len(events) == 100 and result.llm_calls == 200
    assert json_chars(record) < 400_000
    detailed = sum(len(event.get("calls", [])) for event in events)
    assert detailed <= MAX_TRACED_CALLS and detailed + sum(event.get("calls_omitted", 0) for event in events) == 200
    assert events[0]["calls"][0]["messages_omitted"] == 5 and len(events[0]["calls"][0]["messages"]) == 6
    assert events[-1]["calls_omitted"] == 2 and "calls" not in events[-1]
    assert json_chars(events[0]["writes"]) <= 8000 and events[0]["writes"]["rounds"] == {"before": 0, "after": 1}
    assert events[-1]["writes"] == {"$omitted": events[-1]["writes"]["$omitted"]}  # the run's budget of writes is spent


# -- the run: its id, its input --------------------------------------------------------------------------------------


async def test_a_caller_may_choose_the_run_id_and_a_bad_one_is_refused(
    sqlite_store: GraphStore, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    settings = settings_of(sqlite_store, tmp_path, request)
    result, record = await run(
        sqlite_store, settings, "text-stats", {"text": TEXT}, namespace, offline_llm(), run_id="chosen-run_1"
    )
    assert result.run_id == record["run_id"] == "chosen-run_1"
    for bad in ("", "has space", "x" * 65, "../up"):
        with pytest.raises(ConfigError, match="run id .* refused"):
            await run(sqlite_store, settings, "text-stats", {"text": TEXT}, namespace, offline_llm(), run_id=bad)
    assert len(await sqlite_store.list_nodes(namespace, kind="Run")) == 1


async def test_a_resumed_run_records_no_input(
    sqlite_store: GraphStore, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    path = write_graph(
        tmp_path,
        "flaky",
        "nodes:\n  split: {use: text.split_sentences}\n  flaky: {use: testing.flaky, with: {failures: 1}}\n"
        "edges:\n  - {from: START, to: split}\n  - {from: split, to: flaky}\n  - {from: flaky, to: END}\n",
    )
    settings = settings_of(sqlite_store, tmp_path, request)
    with pytest.raises(RuntimeError, match="flaky failure"):
        await run(
            sqlite_store, settings, path, {"text": TEXT}, namespace, offline_llm(), thread=f"flaky-{namespace}", run_id="first"
        )
    assert (await record_of(sqlite_store, namespace, "first"))["input"] == {"text": TEXT}
    result, record = await run(
        sqlite_store, settings, path, None, namespace, offline_llm(), thread=f"flaky-{namespace}", run_id="second"
    )
    assert result.resumed and record["input"] is None and record["outputs"]["notes"] == ["flaky succeeded"]


def test_input_problems_name_their_field() -> None:
    graph = load_graph("text-stats")
    assert input_problems(graph, {"text": "a."}) == []
    assert input_problems(graph, {"txt": "b", "rounds": "many"}) == [
        ("text", "required (an input of text-stats)"),
        ("txt", "not a field of text.TextState (did you mean 'text'?)"),
        ("rounds", "Input should be a valid integer, unable to parse string as an integer (got 'many')"),
    ]
    assert input_problems(graph, {"text": "a.", "notes": ["ok", 3]}) == [("notes", "at 1: Input should be a valid string (got 3)")]
