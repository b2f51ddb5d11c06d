"""The scripted OpenAI-compatible test server, driven by the real ``openai.AsyncOpenAI`` client over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator

import openai
import pytest
from openai import AsyncOpenAI

from tests.support.openai_server import Calls, Rule, ScriptedOpenAIServer

SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "answer",
        "strict": True,
        "schema": {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]},
    },
}


@pytest.fixture
async def server() -> AsyncIterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer() as running:
        yield running


@pytest.fixture
async def client(server: ScriptedOpenAIServer) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0, timeout=5) as running:
        yield running


async def ask(
    client: AsyncOpenAI, user: str, system: str = "You are terse.", **kwargs: object
) -> openai.types.chat.ChatCompletion:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    return await client.chat.completions.create(model="scripted", messages=messages, **kwargs)  # type: ignore[call-overload, no-any-return]


async def test_scripted_text_reply_is_a_valid_chat_completion(server: ScriptedOpenAIServer, client: AsyncOpenAI) -> None:
    server.script(user="whale", text="Call me Ishmael.")
    completion = await ask(client, "tell me about the whale")
    choice = completion.choices[0]
    assert completion.object == "chat.completion" and completion.model == "scripted" and completion.id
    assert choice.message.role == "assistant" and choice.message.content == "Call me Ishmael."
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.total_tokens) == (8, 3, 11)
    assert server.requests[0]["path"] == "/v1/chat/completions" and server.requests[0]["status"] == 200


async def test_json_reply_with_response_format(server: ScriptedOpenAIServer, client: AsyncOpenAI) -> None:
    server.script(system=re.compile(r"extract\b"), json={"answer": "42"})
    schema_reply = await ask(client, "question?", system="Please extract the answer.", response_format=SCHEMA)
    object_reply = await ask(client, "again?", system="extract it", response_format={"type": "json_object"})
    assert json.loads(schema_reply.choices[0].message.content or "") == {"answer": "42"}
    assert json.loads(object_reply.choices[0].message.content or "") == {"answer": "42"}
    assert [request["body"]["response_format"]["type"] for request in server.requests] == ["json_schema", "json_object"]


async def test_rules_in_order_with_times_and_reply_sequences(server: ScriptedOpenAIServer, client: AsyncOpenAI) -> None:
    sequence = server.script(Rule(user="plan", text="first plan", times=1), Rule(user="plan", replies=["second", {"n": 3}]))
    server.script(text="fallback")
    replies = [(await ask(client, text)).choices[0].message.content for text in ["plan", "plan", "plan", "plan", "other"]]
    assert replies == ["first plan", "second", '{"n": 3}', '{"n": 3}', "fallback"]
    assert sequence.replies == ["second", {"n": 3}] and sequence.used == 3
    with pytest.raises(ValueError, match="one of"):
        Rule(text="a", json={})
    with pytest.raises(ValueError, match="unknown fault"):
        Rule(text="a", fault="explode")


async def test_unmatched_message_is_a_400_naming_it(server: ScriptedOpenAIServer, client: AsyncOpenAI) -> None:
    server.script(user="only this", text="ok")
    with pytest.raises(openai.BadRequestError, match="no scripted rule matches the user message 'something else'") as caught:
        await ask(client, "something else")
    assert caught.value.status_code == 400 and caught.value.code == "unmatched"


async def test_429_carries_retry_after_and_does_not_use_up_the_rule(server: ScriptedOpenAIServer, client: AsyncOpenAI) -> None:
    server.retry_after = "2"
    server.script(text="once", times=1)
    server.faults.extend(["429", "503"])
    with pytest.raises(openai.RateLimitError) as caught:
        await ask(client, "hi")
    assert caught.value.response.headers["retry-after"] == "2"
    with pytest.raises(openai.InternalServerError):
        await ask(client, "hi")
    assert (await ask(client, "hi")).choices[0].message.content == "once"
    assert [request["fault"] for request in server.requests] == ["429", "503", None]
    assert server.count(fault="429") == 1


async def test_drop_raises_a_connection_error(server: ScriptedOpenAIServer, client: AsyncOpenAI) -> None:
    server.script(text="fine")
    server.faults.append("drop")
    with pytest.raises(openai.APIConnectionError):
        await ask(client, "hi")
    assert (await ask(client, "hi")).choices[0].message.content == "fine"
    assert server.requests[0]["status"] is None


async def test_content_faults_shape_the_reply(server: ScriptedOpenAIServer, client: AsyncOpenAI) -> None:
    server.script(json={"answer": "forty-two, of course"})
    server.faults.extend(["fenced", "prose", "truncated", "malformed"])
    fenced, prose, truncated, malformed = [(await ask(client, "q")).choices[0] for _ in range(4)]
    payload = '{"answer": "forty-two, of course"}'
    assert fenced.message.content == f"```json\n{payload}\n```" and fenced.finish_reason == "stop"
    assert prose.message.content and payload in prose.message.content and not prose.message.content.startswith("{")
    assert truncated.message.content == payload[: len(payload) // 2] and truncated.finish_reason == "length"
    with pytest.raises(json.JSONDecodeError):
        json.loads(malformed.message.content or "")


async def test_rule_fault_and_seeded_random_faults(client: AsyncOpenAI, server: ScriptedOpenAIServer) -> None:
    server.script(user="flaky", fault="500", times=1)
    server.script(text="steady")
    with pytest.raises(openai.InternalServerError):
        await ask(client, "flaky")
    assert (await ask(client, "flaky")).choices[0].message.content == "steady"

    async def fault_sequence(seed: int) -> list[str | None]:
        with ScriptedOpenAIServer(seed=seed, fault_rate=0.5, fault_kinds=["500", "fenced"]) as other:
            other.script(text="{}")
            async with AsyncOpenAI(base_url=other.base_url, api_key="test", max_retries=0) as other_client:
                for _ in range(12):
                    with contextlib.suppress(openai.InternalServerError):
                        await ask(other_client, "q")
            return [request["fault"] for request in other.requests]

    first, again = await fault_sequence(7), await fault_sequence(7)
    assert first == again and {"500", "fenced", None} <= set(first)


async def test_max_concurrent_and_counts(server: ScriptedOpenAIServer, client: AsyncOpenAI) -> None:
    server.latency = 0.2
    server.script(text="pong")
    started = time.perf_counter()
    replies = await asyncio.gather(*(ask(client, f"ping {index}") for index in range(10)))
    assert time.perf_counter() - started < 1.5
    assert {reply.choices[0].message.content for reply in replies} == {"pong"}
    assert 1 < server.max_concurrent <= 10
    await client.embeddings.create(model="embed", input=["a b", "c"])
    assert server.request_count == 11
    assert server.count(path="/v1/chat/completions") == 10 and server.count(path="/embeddings") == 1


async def test_timeout_fault_times_the_client_out_and_stop_is_quick() -> None:
    server = ScriptedOpenAIServer(timeout_sleep=5).start()
    server.script(text="late")
    server.faults.append("timeout")
    async with AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0, timeout=0.3) as client:
        with pytest.raises(openai.APITimeoutError):
            await ask(client, "hi")
    started = time.perf_counter()
    server.stop()
    assert time.perf_counter() - started < 1


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "write_files",
            "description": "Write files.",
            "parameters": {"type": "object", "properties": {"files": {"type": "array"}}, "required": ["files"]},
        },
    }
]


async def test_calls_reply_is_a_valid_tool_calling_completion(server: ScriptedOpenAIServer, client: AsyncOpenAI) -> None:
    server.script(
        user="files", replies=[Calls(("write_files", {"files": []}), ("write_files", '{"files": ['), content="Writing.")]
    )
    server.script(user="quiet", replies=[Calls(("write_files", {"files": ["a"]}))])
    completion = await ask(client, "write the files", tools=TOOLS)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Writing."
    calls = choice.message.tool_calls or []
    assert [(call.id, call.type) for call in calls] == [("call_1", "function"), ("call_2", "function")]
    assert [(call.function.name, call.function.arguments) for call in calls] == [  # type: ignore[union-attr]
        ("write_files", '{"files": []}'),
        ("write_files", '{"files": ['),
    ]
    tools_words = len(json.dumps(TOOLS).split())
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 3 + 3 + tools_words  # "You are terse." + "write the files" + the tools
    assert completion.usage.completion_tokens == 1 + 2 + 2  # "Writing." + the two arguments
    quiet = (await ask(client, "quiet please", tools=TOOLS)).choices[0]
    assert quiet.message.content is None and [call.id for call in quiet.message.tool_calls or []] == ["call_3"]
    assert server.requests[0]["body"]["tools"] == TOOLS


async def test_content_faults_on_calls(server: ScriptedOpenAIServer, client: AsyncOpenAI) -> None:
    arguments = '{"files": ["hello.py", "test_hello.py"]}'
    server.script(replies=[Calls(("write_files", arguments))])
    server.faults.extend(["truncated", "malformed", "fenced"])
    truncated, malformed, fenced = [(await ask(client, "q", tools=TOOLS)).choices[0] for _ in range(3)]
    assert truncated.finish_reason == "length"
    assert truncated.message.tool_calls[0].function.arguments == arguments[: len(arguments) // 2]  # type: ignore[index, union-attr]
    with pytest.raises(json.JSONDecodeError):
        json.loads(malformed.message.tool_calls[0].function.arguments)  # type: ignore[index, union-attr]
    assert fenced.finish_reason == "tool_calls" and fenced.message.tool_calls[0].function.arguments == arguments  # type: ignore[index, union-attr]


async def test_respond_rule_computes_replies_from_the_request(server: ScriptedOpenAIServer, client: AsyncOpenAI) -> None:
    def respond(body: dict[str, object]) -> str | Calls:
        messages = body["messages"]
        assert isinstance(messages, list)
        if body.get("tools"):
            return Calls(("write_files", {"files": [str(len(messages))]}))
        return f"{len(messages)} messages, {server.count()} requests"  # the server's lock is not held

    rule = server.script(user="dynamic", respond=respond, times=2)
    server.script(text="after")
    first = (await ask(client, "dynamic one", tools=TOOLS)).choices[0].message
    assert first.tool_calls and first.tool_calls[0].function.arguments == '{"files": ["2"]}'  # type: ignore[union-attr]
    history = [
        {"role": "user", "content": "dynamic two"},
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump() for call in first.tool_calls]},
        {"role": "tool", "tool_call_id": first.tool_calls[0].id, "content": "done"},
    ]
    second = await client.chat.completions.create(model="scripted", messages=history)  # type: ignore[arg-type]
    assert second.choices[0].message.content == "3 messages, 2 requests" and rule.used == 2
    assert second.usage is not None and second.usage.prompt_tokens == 2 + 2 + 1  # content words + the call's arguments
    assert (await ask(client, "dynamic three")).choices[0].message.content == "after"
    with pytest.raises(ValueError, match="one of"):
        Rule(text="a", respond=respond)


async def test_a_respond_rule_that_raises_is_a_400(server: ScriptedOpenAIServer, client: AsyncOpenAI) -> None:
    def broken(body: dict[str, object]) -> str:
        raise KeyError("nope")

    server.script(respond=broken)
    with pytest.raises(openai.BadRequestError, match="respond= raised KeyError") as caught:
        await ask(client, "hi")
    assert caught.value.code == "respond"
