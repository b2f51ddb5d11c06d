"""The LLM gateway against the scripted OpenAI-compatible server, over real HTTP."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import BaseModel

from mnemoflow.errors import (
    ConfigError,
    LLMError,
    LLMOutputError,
    LLMRequestError,
    LLMTimeoutError,
    LLMUnavailableError,
)
from mnemoflow.llm import (
    LLM,
    OfflineBackend,
    OpenAIBackend,
    ResponseCache,
    Tool,
    ToolArgumentError,
    ToolCall,
    ToolTurn,
    extract_json,
    llm_from_settings,
    offline_handler,
    offline_tool_handler,
    tool_result,
)
from mnemoflow.llm.endpoint import resolve_endpoint
from mnemoflow.llm.parsing import close_json
from mnemoflow.settings import LLMSettings, LocalServerSettings, OpenAISettings, Settings
from tests.support.openai_server import Calls, Rule, ScriptedOpenAIServer


class Verdict(BaseModel):
    answer: str
    confidence: float


ASK = [{"role": "system", "content": "You judge."}, {"role": "user", "content": "Is the sea calm?"}]


@pytest.fixture
def server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer() as running:
        yield running


def gateway(server: ScriptedOpenAIServer, tmp_path: Path, sleeps: list[float] | None = None, **settings: object) -> LLM:
    options: dict[str, object] = {
        "cache": False,
        "initial_backoff": 0.0,
        "max_backoff": 0.01,
        "cache_path": tmp_path / "cache.db",
    }
    options.update(settings)
    config = LLMSettings(**options)  # type: ignore[arg-type]

    async def record_sleep(seconds: float) -> None:
        if sleeps is not None:
            sleeps.append(seconds)

    backend = OpenAIBackend(base_url=server.base_url, api_key="test", timeout=config.request_timeout)
    cache = ResponseCache(config.cache_path) if config.cache else None
    return LLM(backend, config, cache=cache, sleep=record_sleep)


@pytest.mark.parametrize(
    "reply",
    [
        '{"answer": "yes", "confidence": 0.9}',
        '```json\n{"answer": "yes", "confidence": 0.9}\n```',
        'Sure! Here it is: {"answer": "yes", "confidence": 0.9} Hope that helps.',
    ],
    ids=["plain", "fenced", "prose"],
)
async def test_structured_reply_shapes(server: ScriptedOpenAIServer, tmp_path: Path, reply: str) -> None:
    server.script(user="sea", text=reply)
    llm = gateway(server, tmp_path)
    assert await llm.structured(ASK, Verdict) == Verdict(answer="yes", confidence=0.9)
    assert server.count("/chat/completions") == 1
    sent = server.requests[0]["body"]
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["schema"]["properties"].keys() == {"answer", "confidence"}
    assert llm.usage.calls == 1 and llm.usage.requests == 1 and llm.usage.prompt_tokens > 0


async def test_truncated_twice_then_whole(server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    server.faults.extend(["truncated", "truncated"])
    server.script(json={"answer": "no", "confidence": 0.4})
    llm = gateway(server, tmp_path)
    assert (await llm.structured(ASK, Verdict)).answer == "no"
    assert server.count("/chat/completions") == 3 and llm.usage.reasks == 2


async def test_invalid_reply_is_reasked_once_with_the_error(server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    server.script(Rule(replies=['{"answer": "maybe"}', '{"answer": "yes", "confidence": 1}']))
    llm = gateway(server, tmp_path)
    assert await llm.structured(ASK, Verdict) == Verdict(answer="yes", confidence=1.0)
    second = server.requests[1]["body"]["messages"]
    assert second[-2] == {"role": "assistant", "content": '{"answer": "maybe"}'}
    assert "confidence" in second[-1]["content"] and "Field required" in second[-1]["content"]


async def test_reply_that_never_validates_carries_the_raw_text(server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    server.script(text="I would rather not say.")
    llm = gateway(server, tmp_path)
    with pytest.raises(LLMOutputError, match="Verdict: the model's reply did not validate") as caught:
        await llm.structured(ASK, Verdict)
    assert caught.value.raw_replies == ["I would rather not say.", "I would rather not say."]
    assert server.count("/chat/completions") == 2


async def test_fault_storm(tmp_path: Path) -> None:
    with ScriptedOpenAIServer(fault_rate=0.3, fault_kinds=["429", "500", "drop"], seed=7) as server:
        server.script(json={"answer": "ok", "confidence": 0.5})
        llm = gateway(server, tmp_path, max_attempts=12, concurrency=16)
        results = await asyncio.gather(
            *(llm.structured([*ASK, {"role": "user", "content": f"#{n}"}], Verdict) for n in range(200))
        )
        await llm.aclose()
    assert len(results) == 200 and all(result.answer == "ok" for result in results)
    faulted = sum(1 for request in server.requests if request["fault"])
    assert faulted > 30
    assert server.count("/chat/completions") == 200 + llm.usage.retries
    assert llm.usage.requests == server.count("/chat/completions") and llm.usage.calls == 200
    assert llm.usage.retries == faulted


async def test_retry_after_is_honoured(tmp_path: Path) -> None:
    sleeps: list[float] = []
    with ScriptedOpenAIServer(retry_after="7") as server:
        server.faults.extend(["429", "500"])
        server.script(text="fine")
        llm = gateway(server, tmp_path, sleeps)
        assert await llm.text(ASK) == "fine"
    assert sleeps[0] == 7.0 and sleeps[1] < 7.0 and llm.usage.retries == 2


async def test_client_error_fails_at_once(server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    llm = gateway(server, tmp_path)  # nothing scripted: the server answers 400 naming the message
    with pytest.raises(LLMRequestError, match=r"\(400\).*Is the sea calm"):
        await llm.text(ASK)
    assert server.count("/chat/completions") == 1 and llm.usage.retries == 0


async def test_attempts_run_out(tmp_path: Path) -> None:
    with ScriptedOpenAIServer(fault_rate=1.0, fault_kinds=["503"]) as server:
        server.script(text="never")
        llm = gateway(server, tmp_path, max_attempts=3)
        with pytest.raises(LLMUnavailableError, match="after 3 attempts"):
            await llm.text(ASK)
    assert server.count("/chat/completions") == 3


async def test_total_deadline(tmp_path: Path) -> None:
    with ScriptedOpenAIServer(timeout_sleep=5.0) as server:
        server.faults.append("timeout")
        server.script(text="late")
        llm = gateway(server, tmp_path, deadline=0.3)
        with pytest.raises(LLMTimeoutError, match="deadline of 0.3 s"):
            await llm.text(ASK)


async def test_cache(server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    server.script(json={"answer": "cached", "confidence": 1})
    llm = gateway(server, tmp_path, cache=True)
    first = await llm.structured(ASK, Verdict)
    assert await llm.structured(ASK, Verdict) == first
    assert server.count("/chat/completions") == 1 and llm.usage.cache_hits == 1

    class Other(BaseModel):
        answer: str

    await llm.structured(ASK, Other)  # another schema misses
    await llm.structured(ASK, Verdict, temperature=0.7)  # so does another temperature (and is not cached)
    await llm.structured(ASK, Verdict, temperature=0.7)
    assert server.count("/chat/completions") == 4
    reopened = gateway(server, tmp_path, cache=True)  # the cache is a file: it outlives the process
    await reopened.structured(ASK, Verdict)
    assert server.count("/chat/completions") == 4 and reopened.usage.cache_hits == 1


async def test_concurrency_cap(tmp_path: Path) -> None:
    with ScriptedOpenAIServer(latency=0.05) as server:
        server.script(text="ok")
        llm = gateway(server, tmp_path, concurrency=3)
        await asyncio.gather(*(llm.text([{"role": "user", "content": f"q{n}"}]) for n in range(20)))
    assert server.max_concurrent == 3


async def test_forks_count_apart_and_share_limits(server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    server.script(text="ok")
    llm = gateway(server, tmp_path)
    run_a, run_b = llm.fork(), llm.fork()
    await run_a.text(ASK)
    await run_b.text(ASK)
    await run_b.text(ASK)
    assert (run_a.usage.calls, run_b.usage.calls, llm.usage.calls) == (1, 2, 0)


def test_json_extraction() -> None:
    assert extract_json('noise {"a": [1, {"b": "}"}]} more') == {"a": [1, {"b": "}"}]}
    assert extract_json("```\n[1, 2]\n```") == [1, 2]
    with pytest.raises(ValueError, match="no JSON"):
        extract_json('{"a": ')
    assert extract_json('{"a": "two\nlines"}') == {"a": "two\nlines"}  # a raw newline inside a string, as small models write


@pytest.mark.parametrize(
    ("cut", "closed"),
    [
        ('{"approve": true, "feedback": "38 }\nThe answer is', {"approve": True, "feedback": "38 }\nThe answer is"}),
        ('Sure: {"a": [1, 2, 3', {"a": [1, 2, 3]}),
        ('{"a": 1, "b', {"a": 1}),  # a key without its value: back to the last complete member
        ('{"a": ["x", "y\\"', {"a": ["x", 'y"']}),  # an escaped quote does not end the string
        ("no JSON at all", None),
    ],
)
def test_a_cut_reply_is_closed_where_it_stopped(cut: str, closed: object) -> None:
    assert close_json(cut) == closed


async def test_a_reply_still_cut_after_more_room_is_closed_and_used(server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    server.faults.extend(["truncated"] * 3)
    server.script(json={"confidence": 1, "answer": "the sea is calm and the wind is light"})  # cut inside the answer
    llm = gateway(server, tmp_path)
    verdict = await llm.structured(ASK, Verdict, max_tokens=50)
    assert verdict.answer and "the sea is calm and the wind is light".startswith(verdict.answer)
    assert server.count("/chat/completions") == 3 and llm.usage.reasks == 2  # two with more room, no re-ask


async def test_offline_model_is_deterministic_and_labelled(tmp_path: Path) -> None:
    class Summary(BaseModel):
        first_words: str

    @offline_handler(Summary)
    def summarize(messages: list[dict[str, object]]) -> Summary:
        return Summary(first_words=" ".join(str(messages[-1]["content"]).split()[:2]))

    llm = llm_from_settings(Settings(openai=OpenAISettings(), llm=LLMSettings(cache=False)))
    assert llm.offline and llm.model == "offline"
    assert await llm.text(ASK) == "[offline model] Is the sea calm?"
    assert await llm.structured(ASK, Summary) == Summary(first_words="Is the")
    with pytest.raises(LLMError, match="no answer for Verdict.*OPENAI_BASE_URL"):
        await llm.structured(ASK, Verdict)
    online = llm_from_settings(Settings(openai=OpenAISettings(base_url="http://127.0.0.1:9/v1"), llm=LLMSettings(cache=False)))
    assert not online.offline and isinstance(OfflineBackend(), OfflineBackend)


async def test_request_and_token_budgets_hold_calls_back(server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    server.script(text="ok")
    per_request = gateway(server, tmp_path, requests_per_minute=1)
    await per_request.text(ASK)
    with pytest.raises(TimeoutError):  # the second request of the minute waits for the budget
        await asyncio.wait_for(per_request.text(ASK), 0.3)
    per_token = gateway(server, tmp_path, tokens_per_minute=100)
    await per_token.text(ASK, max_tokens=500)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(per_token.text(ASK, max_tokens=500), 0.3)
    assert server.count("/chat/completions") == 2


async def test_run_result_and_trace_carry_llm_usage(server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    import re

    import tests.support.testing_nodes  # noqa: F401  (registers testing.ask)
    from mnemoflow.graphs import GraphRunner, load_graph
    from mnemoflow.memory import HashingEmbedder, SQLiteStore
    from mnemoflow.settings import StoreSettings

    server.script(user=re.compile(r"count: \S+ \S+\.$"), text="2")
    server.script(user="count:", text="3")
    graph = tmp_path / "ask.yaml"
    graph.write_text(
        "name: ask\nstate: text.TextState\ninput: [text]\nnodes:\n  split: {use: text.split_sentences}\n"
        "  ask: {use: testing.ask}\n  total: {use: text.total}\nedges:\n  - {from: START, to: split}\n"
        "  - {from: ask, to: total}\n  - {from: total, to: END}\n"
        "fanouts:\n  - {from: split, over: sentences, item: sentence, to: ask}\n"
    )
    embedder = HashingEmbedder(384)
    async with SQLiteStore(tmp_path / "m.db", embedding_model=embedder.model, embedding_dimension=384) as store:
        llm = gateway(server, tmp_path)
        async with GraphRunner(
            load_graph(graph),
            store=store,
            embedder=embedder,
            llm=llm,
            settings=Settings(store=StoreSettings(sqlite_path=tmp_path / "m.db")),
            checkpointer=None,
        ) as runner:
            result = await runner.run({"text": "One two. Three four five. Six seven."}, namespace="ask")
    assert result.state["word_counts"] == [2, 3, 2] and result.state["total_words"] == 7
    assert result.llm_calls == 3 and result.tokens == result.llm_usage["tokens"] > 0
    assert llm.usage.calls == 0  # a run counts on its own fork of the gateway
    asked = [event for event in result.trace if event["node"] == "ask"]
    assert len(asked) == 3 and all(event["llm"]["calls"] == 1 for event in asked)
    assert "3 LLM calls, " in result.summary()


# -- tool calling ----------------------------------------------------------------------------------------------------


class FileSpec(BaseModel):
    path: str
    content: str


class WriteFiles(BaseModel):
    files: list[FileSpec]


class RunTests(BaseModel):
    pattern: str = ""


WRITE = Tool(name="write_files", description="Write files to disk.", parameters=WriteFiles)
RUN = Tool(name="run_tests", description="Run the tests.", parameters=RunTests)
CODE = [{"role": "system", "content": "You write code."}, {"role": "user", "content": "Write hello.py and test it."}]
HELLO = {"files": [{"path": "hello.py", "content": "print('hello')"}]}


async def test_call_tools_returns_every_call_with_its_raw_arguments(server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    server.script(user="hello.py", replies=[Calls(("write_files", HELLO), ("run_tests", {"pattern": "hello"}), content="On it.")])
    llm = gateway(server, tmp_path)
    turn = await llm.call_tools(CODE, [WRITE, RUN])
    assert turn.content == "On it." and turn.finish_reason == "tool_calls"
    assert [(call.id, call.name) for call in turn.tool_calls] == [("call_1", "write_files"), ("call_2", "run_tests")]
    assert turn.tool_calls[0].arguments == json.dumps(HELLO)
    assert WRITE.parse(turn.tool_calls[0]) == WriteFiles.model_validate(HELLO)
    assert RUN.parse(turn.tool_calls[1]) == RunTests(pattern="hello")
    sent = server.requests[0]["body"]
    assert sent["tools"] == [WRITE.schema(), RUN.schema()] and sent["tool_choice"] == "auto"
    assert sent["tools"][0]["function"]["parameters"] == WriteFiles.model_json_schema()
    assert "response_format" not in sent
    assert llm.usage.calls == 1 and llm.usage.requests == 1 and llm.usage.prompt_tokens > 0 and llm.usage.completion_tokens > 0


async def test_tool_results_round_trip_to_the_server(server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    server.script(Rule(replies=[Calls(("write_files", HELLO), ("run_tests", {})), "Done: hello.py passes."]))
    llm = gateway(server, tmp_path)
    turn = await llm.call_tools(CODE, [WRITE, RUN])
    first_prompt = llm.usage.prompt_tokens
    assert turn.message() == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "write_files", "arguments": json.dumps(HELLO)}},
            {"id": "call_2", "type": "function", "function": {"name": "run_tests", "arguments": "{}"}},
        ],
    }
    history = [
        *CODE,
        turn.message(),
        tool_result(turn.tool_calls[0], "wrote hello.py"),
        tool_result(turn.tool_calls[1], "1 passed"),
    ]
    final = await llm.call_tools(history, [WRITE, RUN])
    assert final == ToolTurn("Done: hello.py passes.", (), "stop")
    assert final.message() == {"role": "assistant", "content": "Done: hello.py passes."}
    received = server.requests[1]["body"]["messages"]
    assert received[2]["role"] == "assistant" and [call["id"] for call in received[2]["tool_calls"]] == ["call_1", "call_2"]
    assert received[3:] == [
        {"role": "tool", "tool_call_id": "call_1", "content": "wrote hello.py"},
        {"role": "tool", "tool_call_id": "call_2", "content": "1 passed"},
    ]
    assert llm.usage.prompt_tokens - first_prompt > first_prompt  # the history, call arguments included, grew
    assert llm.usage.calls == 2


async def test_forced_tool_sends_the_choice_and_returns_validated_arguments(server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    server.script(Rule(replies=[Calls(("write_files", HELLO))]))
    llm = gateway(server, tmp_path)
    files = await llm.forced_tool(CODE, WRITE)
    assert isinstance(files, WriteFiles) and files.files[0].path == "hello.py"
    sent = server.requests[0]["body"]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "write_files"}}
    assert sent["tools"] == [WRITE.schema()]
    await llm.call_tools(CODE, [WRITE, RUN], choice="run_tests")
    assert server.requests[1]["body"]["tool_choice"] == {"type": "function", "function": {"name": "run_tests"}}
    await llm.call_tools(CODE, [WRITE, RUN], choice="required")
    assert server.requests[2]["body"]["tool_choice"] == "required"
    with pytest.raises(ValueError, match="'deploy' is neither one of .* nor a tool offered"):
        await llm.call_tools(CODE, [WRITE, RUN], choice="deploy")
    with pytest.raises(ValueError, match="offered twice"):
        await llm.call_tools(CODE, [WRITE, WRITE])
    assert server.count("/chat/completions") == 3 and llm.usage.calls == 3 and llm.usage.reasks == 0


@pytest.mark.parametrize(
    ("first", "problem"),
    [
        (Calls(("write_files", {"files": [{"content": "x"}]})), "write_files: files.0.path: Field required"),
        (Calls(content="I will write it now."), "the reply did not call write_files"),
    ],
    ids=["invalid-arguments", "no-call"],
)
async def test_forced_tool_is_reasked_once_with_the_error(
    server: ScriptedOpenAIServer, tmp_path: Path, first: Calls, problem: str
) -> None:
    server.script(Rule(replies=[first, Calls(("write_files", HELLO))]))
    llm = gateway(server, tmp_path)
    assert await llm.forced_tool(CODE, WRITE) == WriteFiles.model_validate(HELLO)
    assert server.count("/chat/completions") == 2 and llm.usage.reasks == 1 and llm.usage.calls == 1
    reasked = server.requests[1]["body"]["messages"]
    assert reasked[:2] == CODE
    if first.calls:
        assistant, result, user = reasked[2:]
        assert assistant["role"] == "assistant" and assistant["tool_calls"][0]["id"] == "call_1"
        assert result["role"] == "tool" and result["tool_call_id"] == "call_1" and problem in result["content"]
    else:
        assistant, user = reasked[2:]
        assert assistant == {"role": "assistant", "content": "I will write it now."}
    assert user["role"] == "user" and problem in user["content"] and "Call write_files again" in user["content"]


async def test_forced_tool_that_never_validates_carries_the_raw_arguments(server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    server.script(Rule(replies=[Calls(("write_files", '{"files": ['))]))
    llm = gateway(server, tmp_path)
    with pytest.raises(LLMOutputError, match="write_files: the model's call did not validate after a re-ask.*cut off") as caught:
        await llm.forced_tool(CODE, WRITE)
    assert caught.value.raw_replies == ['{"files": [', '{"files": [']
    assert server.count("/chat/completions") == 2 and llm.usage.reasks == 1


async def test_forced_tool_asks_again_after_a_truncated_call(server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    server.faults.append("truncated")
    server.script(Rule(replies=[Calls(("write_files", HELLO))]))
    llm = gateway(server, tmp_path)
    assert await llm.forced_tool(CODE, WRITE) == WriteFiles.model_validate(HELLO)
    assert server.count("/chat/completions") == 2 and llm.usage.reasks == 1
    assert server.requests[1]["body"]["messages"] == CODE  # the same request again, not a re-ask with an error


def test_tool_parse_errors_are_clear() -> None:
    def parse(arguments: str) -> str:
        with pytest.raises(ToolArgumentError) as caught:
            WRITE.parse(ToolCall("call_9", "write_files", arguments))
        assert isinstance(caught.value, ValueError) and isinstance(caught.value, LLMError)
        return str(caught.value)

    assert "write_files: the arguments are not valid JSON" in parse('{"files": [') and "cut off" in parse('{"files": [')
    assert parse("[1, 2]") == "write_files: the arguments must be a JSON object, not an array"
    assert parse('{"files": [{"content": "x"}]}') == "write_files: files.0.path: Field required"
    assert parse('{"files": "hello.py"}') == "write_files: files: Input should be a valid list"
    assert RUN.parse(ToolCall("call_9", "run_tests", "")) == RunTests()  # empty arguments count as {}
    with pytest.raises(ValueError, match="tool name 'write files' must match"):
        Tool(name="write files", description="", parameters=WriteFiles)
    assert WRITE.schema() == {
        "type": "function",
        "function": {"name": "write_files", "description": "Write files to disk.", "parameters": WriteFiles.model_json_schema()},
    }


async def test_offline_model_calls_tools_through_registered_handlers() -> None:
    offered: list[list[str]] = []
    save = Tool(name="offline_test_save", description="Save notes.", parameters=WriteFiles)
    unknown = Tool(name="offline_test_unknown", description="Nobody answers this.", parameters=RunTests)

    @offline_tool_handler("offline_test_save")
    def save_notes(messages: list[dict[str, object]], names: list[str]) -> ToolTurn:
        offered.append(names)
        return ToolTurn("", (ToolCall("offline_1", "offline_test_save", json.dumps(HELLO)),), "tool_calls")

    llm = llm_from_settings(Settings(openai=OpenAISettings(), llm=LLMSettings(cache=False)))
    turn = await llm.call_tools(ASK, [unknown, save])
    assert turn.finish_reason == "tool_calls" and [call.name for call in turn.tool_calls] == ["offline_test_save"]
    assert offered == [["offline_test_unknown", "offline_test_save"]]
    assert await llm.forced_tool(ASK, save) == WriteFiles.model_validate(HELLO)
    assert llm.usage.prompt_tokens > 0 and llm.usage.completion_tokens > 0
    with pytest.raises(LLMError, match=r"cannot call tools \['offline_test_unknown'\].*OPENAI_BASE_URL"):
        await llm.call_tools(ASK, [unknown])
    with pytest.raises(LLMError, match=r"cannot call tools \['offline_test_unknown'\]"):
        await llm.forced_tool(ASK, unknown)
    assert (await llm.call_tools(ASK, [save], choice="none")).content == "[offline model] Is the sea calm?"


async def test_call_tools_retries_transport_faults(server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    server.failures.append(500)
    server.faults.append("drop")
    server.script(Rule(replies=[Calls(("run_tests", {"pattern": "x"}))]))
    llm = gateway(server, tmp_path)
    turn = await llm.call_tools(CODE, [RUN])
    assert [call.id for call in turn.tool_calls] == ["call_1"]  # the faults did not use up the reply
    assert server.count("/chat/completions") == 3 and llm.usage.retries == 2 and llm.usage.requests == 3
    assert llm.usage.calls == 1


# -- what an endpoint takes, learned once; caps; slots ----------------------------------------------------------


async def test_a_refused_json_schema_format_steps_down_once_per_endpoint_and_is_not_retried(
    server: ScriptedOpenAIServer, tmp_path: Path
) -> None:
    server.refuse = {"json_schema", "json_object"}  # a 500 validation error (llama-cpp-python), then a 400
    server.script(json={"answer": "calm", "confidence": 0.5})
    llm = gateway(server, tmp_path, max_attempts=6)
    assert await llm.structured(ASK, Verdict) == Verdict(answer="calm", confidence=0.5)
    sent = [request["body"] for request in server.requests]
    assert [body.get("response_format", {}).get("type") for body in sent] == ["json_schema", "json_object", "json_object", None]
    assert sent[1]["response_format"]["schema"] == Verdict.model_json_schema()  # JSON mode with the schema beside it
    assert "JSON Schema" in sent[3]["messages"][0]["content"] and sent[3]["messages"][1:] == ASK
    assert (llm.usage.requests, llm.usage.retries, llm.capabilities.json_mode) == (4, 0, "prompt")
    again = gateway(server, tmp_path)  # another gateway of the process starts where the first ended
    await again.structured(ASK, Verdict)
    assert again.usage.requests == 1 and "response_format" not in server.requests[-1]["body"]


async def test_a_fixed_structured_mode_is_never_changed(server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    server.refuse = {"json_schema"}
    llm = gateway(server, tmp_path, structured_mode="json_schema")
    with pytest.raises(LLMRequestError, match=r"(?s)\(500\).*Input should be 'text' or 'json_object'"):
        await llm.structured(ASK, Verdict)
    assert server.count("/chat/completions") == 1 and llm.capabilities.json_mode == "json_schema"


async def test_every_call_has_a_reply_cap_from_its_caller_schema_or_settings(server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    class Short(BaseModel):
        REPLY_TOKENS: ClassVar[int] = 40
        answer: str

    server.script(json={"answer": "yes", "confidence": 1})
    llm = gateway(server, tmp_path, max_reply_tokens=300)
    await llm.structured(ASK, Short)
    await llm.structured(ASK, Verdict)
    await llm.structured(ASK, Verdict, max_tokens=7)
    await llm.text(ASK)
    assert [request["body"]["max_tokens"] for request in server.requests] == [40, 300, 7, 300]


async def test_a_reply_cut_in_its_json_gets_twice_the_room_and_cut_prose_goes_to_the_reask(
    server: ScriptedOpenAIServer, tmp_path: Path
) -> None:
    server.faults.extend(["truncated", "truncated"])
    server.script(json={"answer": "whole", "confidence": 1})
    llm = gateway(server, tmp_path)
    await llm.structured(ASK, Verdict, max_tokens=50)
    assert [request["body"]["max_tokens"] for request in server.requests] == [50, 100, 200]
    server.faults.append("truncated")
    server.rules.clear()
    server.script(Rule(replies=["Well, the sea is calm today and the waves are", {"answer": "calm", "confidence": 1}]))
    prose = gateway(server, tmp_path)
    assert await prose.structured(ASK, Verdict, max_tokens=50) == Verdict(answer="calm", confidence=1)
    assert [request["body"]["max_tokens"] for request in server.requests[3:]] == [50, 50]  # no more room for prose
    assert "not valid" in server.requests[-1]["body"]["messages"][-1]["content"]


async def test_time_queued_for_a_slot_is_not_counted_in_the_deadline(tmp_path: Path) -> None:
    with ScriptedOpenAIServer(latency=0.2) as server:
        server.script(text="ok")
        llm = gateway(server, tmp_path, concurrency=1, deadline=1.0)
        replies = await asyncio.gather(*(llm.text([{"role": "user", "content": f"q{n}"}]) for n in range(8)))
    assert replies == ["ok"] * 8 and server.max_concurrent == 1  # the last waited 1.4 s for the slot, in time
    assert llm.usage.slot_wait_s >= 1.4


async def test_a_forced_tool_falls_back_to_structured_output_where_tools_are_refused(
    server: ScriptedOpenAIServer, tmp_path: Path
) -> None:
    server.refuse = {"tools"}
    server.script(json=HELLO)
    llm = gateway(server, tmp_path)
    assert await llm.forced_tool(CODE, WRITE) == WriteFiles.model_validate(HELLO)
    refused, fallback = (request["body"] for request in server.requests)
    assert refused["tools"] == [WRITE.schema()] and "tools" not in fallback and "tool_choice" not in fallback
    assert fallback["response_format"]["json_schema"]["schema"] == WriteFiles.model_json_schema()
    assert fallback["messages"][0]["content"].startswith("Call the tool write_files: Write files to disk.")
    assert llm.usage.retries == 0 and not llm.capabilities.native_tools


async def test_the_schema_fallback_carries_the_history_of_calls_as_plain_turns(server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    server.script(Rule(replies=[{"files": [{"content": "x"}]}, HELLO]))
    llm = gateway(server, tmp_path, tool_mode="schema")
    assert await llm.forced_tool(CODE, WRITE) == WriteFiles.model_validate(HELLO)
    reasked = server.requests[1]["body"]["messages"]
    assert [message["role"] for message in reasked] == ["system", "system", "user", "assistant", "user", "user"]
    assert json.loads(reasked[3]["content"]) == {"tool": "write_files", "arguments": {"files": [{"content": "x"}]}}
    assert reasked[4]["content"].startswith("Tool result: Error:")


async def test_a_free_choice_of_tools_is_structured_output_where_tools_are_refused(
    server: ScriptedOpenAIServer, tmp_path: Path
) -> None:
    server.refuse = {"tools"}
    server.script(Rule(replies=[{"tool": "run_tests", "arguments": {}}, {"tool": "none", "reply": "All done."}]))
    llm = gateway(server, tmp_path)
    called = await llm.call_tools(CODE, [WRITE, RUN])
    assert [(call.name, call.arguments) for call in called.tool_calls] == [("run_tests", "{}")]
    choice = server.requests[1]["body"]
    options = choice["response_format"]["json_schema"]["schema"]["anyOf"]
    assert [option["properties"]["tool"]["const"] for option in options] == ["write_files", "run_tests", "none"]
    answered = await llm.call_tools([*CODE, called.message(), tool_result(called.tool_calls[0], "2 passed")], [WRITE, RUN])
    assert answered.tool_calls == () and answered.content == "All done."
    history = server.requests[2]["body"]["messages"]
    assert [message["role"] for message in history[-2:]] == ["assistant", "user"] and "2 passed" in history[-1]["content"]


def test_the_endpoint_is_the_configured_one_else_the_local_server_else_offline(tmp_path: Path) -> None:
    local = LocalServerSettings(home=tmp_path / "model")
    assert resolve_endpoint(Settings(local_server=local)).kind == "offline"
    with pytest.raises(ConfigError, match="no model: MNEMOFLOW_LLM_OFFLINE=0"):
        resolve_endpoint(Settings(local_server=local, llm=LLMSettings(offline=False)))
    local.home.mkdir()
    record = {"base_url": "http://127.0.0.1:9/v1", "model": "tiny", "pid": os.getpid(), "file": "tiny.gguf", "log": "x.log"}
    (local.home / "server.json").write_text(json.dumps(record))
    found = resolve_endpoint(Settings(local_server=local))
    assert (found.kind, found.model, found.base_url, found.slots) == ("local", "tiny", "http://127.0.0.1:9/v1", 1)
    assert resolve_endpoint(Settings(local_server=local, llm=LLMSettings(model="named"))).model == "named"
    configured = resolve_endpoint(Settings(local_server=local, openai=OpenAISettings(base_url="http://127.0.0.1:8/v1")))
    assert (configured.kind, configured.base_url) == ("openai", "http://127.0.0.1:8/v1")
    assert resolve_endpoint(Settings(local_server=local, llm=LLMSettings(offline=True))).kind == "offline"
    record["pid"] = 2**22 + 7  # no such process: a server that died leaves its record behind
    (local.home / "server.json").write_text(json.dumps(record))
    assert resolve_endpoint(Settings(local_server=local)).kind == "offline"
    gateway_for_local = llm_from_settings(Settings(local_server=local, llm=LLMSettings(offline=True)))
    assert gateway_for_local.offline


async def test_an_unreachable_endpoints_error_and_log_lines_carry_no_credentials(tmp_path: Path) -> None:
    import io

    import structlog

    from mnemoflow.errors import MnemoflowError
    from mnemoflow.logging import configure_logging, get_logger
    from mnemoflow.settings import LogSettings

    secret = "hunter2secret"
    backend = OpenAIBackend(base_url=f"http://user:{secret}@127.0.0.1:1/v1", api_key="test", timeout=5.0)
    llm = LLM(backend, LLMSettings(cache=False, max_attempts=1, deadline=30.0, cache_path=tmp_path / "cache.db"))
    stream = io.StringIO()
    configure_logging(LogSettings(format="json"), stream=stream, force=True)
    try:
        with pytest.raises(LLMUnavailableError) as caught:
            await llm.text(ASK)
        get_logger("test").error("model.failed", error=str(caught.value), exc_info=caught.value)
    finally:
        structlog.reset_defaults()
        configure_logging(LogSettings(), force=True)
    chain: list[BaseException] = [caught.value]
    while isinstance(chain[-1].__cause__, MnemoflowError):
        chain.append(chain[-1].__cause__)
    assert len(chain) == 2 and all(secret not in str(error) for error in chain)
    assert "talking to http://***@127.0.0.1:1/v1" in str(caught.value)
    assert "model.failed" in stream.getvalue() and secret not in stream.getvalue()
