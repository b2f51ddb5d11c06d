"""The LLM gateway against the scripted OpenAI-compatible server, over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from mnemoflow.errors import LLMError, LLMOutputError, LLMRequestError, LLMTimeoutError, LLMUnavailableError
from mnemoflow.llm import LLM, OfflineBackend, OpenAIBackend, ResponseCache, extract_json, llm_from_settings, offline_handler
from mnemoflow.settings import LLMSettings, OpenAISettings, Settings
from tests.support.openai_server import Rule, ScriptedOpenAIServer


class Verdict(BaseModel):
    answer: str
    confidence: float


ASK = [{"role": "system", "content": "You judge."}, {"role": "user", "content": "Is the sea calm?"}]


@pytest.fixture
def server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer() as running:
        yield running


def gateway(server: ScriptedOpenAIServer, tmp_path: Path, sleeps: list[float] | None = None, **settings: object) -> LLM:
    options: dict[str, object] = {"cache": False, "initial_backoff": 0.0, "max_backoff": 0.01, "cache_path": tmp_path / "cache.db"}
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
        results = await asyncio.gather(*(llm.structured([*ASK, {"role": "user", "content": f"#{n}"}], Verdict) for n in range(200)))
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
    from graphs import GraphRunner, load_graph
    from memory import HashingEmbedder, SQLiteStore
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
            load_graph(graph), store=store, embedder=embedder, llm=llm, settings=Settings(store=StoreSettings(sqlite_path=tmp_path / "m.db")), checkpointer=None
        ) as runner:
            result = await runner.run({"text": "One two. Three four five. Six seven."}, namespace="ask")
    assert result.state["word_counts"] == [2, 3, 2] and result.state["total_words"] == 7
    assert result.llm_calls == 3 and result.tokens == result.llm_usage["tokens"] > 0
    assert llm.usage.calls == 0  # a run counts on its own fork of the gateway
    asked = [event for event in result.trace if event["node"] == "ask"]
    assert len(asked) == 3 and all(event["llm"]["calls"] == 1 for event in asked)
    assert "3 LLM calls, " in result.summary()
