"""On a real model: the gateway against the local server (llama-cpp-python, SmolLM2-135M), and every shipped graph.

The server is started by ``infra/with-model.sh`` (``make test``); without it these tests skip, and under
``MNEMOFLOW_REQUIRE_MODEL=1`` (CI) they fail. Nothing here asserts what the model answers, only that every reply was
used as the gateway documents (valid, re-asked, or a clear error) and that each graph ends as it defines: answer
quality is measured by the evaluation harness, not tested. ExpeRepair's graph runs on the real model in
``tests/test_eval.py`` (its evaluation runs the graph with and without memory to its end), not twice.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from mnemoflow.errors import LLMOutputError, LLMRequestError, NodeError
from mnemoflow.graphs import GraphRunner, load_graph
from mnemoflow.graphs.parts import open_run_parts
from mnemoflow.graphs.runner import RunResult
from mnemoflow.llm import LLM, OpenAIBackend, Tool, llm_from_settings
from mnemoflow.llm.endpoint import resolve_endpoint
from mnemoflow.settings import LLMSettings, LocalServerSettings, Settings, StoreSettings
from tests.conftest import RealModel
from tests.support.graph_variants import library_variant

pytestmark = [pytest.mark.model, pytest.mark.slow]


class Color(BaseModel):
    color: str = Field(description="One color name.")


class WriteFile(BaseModel):
    path: str
    content: str


WRITE = Tool("write_file", "Write one file of the project.", WriteFile)
ASK_COLOR = [{"role": "user", "content": "Name one color. Reply with JSON like {\"color\": \"...\"}."}]


def settings_on(model: RealModel, tmp_path: Path, **llm: Any) -> Settings:
    """Settings that find the test's local server as the embedded default, on a SQLite store in ``tmp_path``."""
    return Settings(
        store=StoreSettings(sqlite_path=tmp_path / "memory.db"),
        local_server=LocalServerSettings(home=model.home),
        llm=LLMSettings(cache=False, **llm),
    )


def gateway_on(model: RealModel, tmp_path: Path, **llm: Any) -> LLM:
    return llm_from_settings(settings_on(model, tmp_path, **llm))


# -- the gateway on a real server --------------------------------------------------------------------------------


async def test_the_local_server_is_the_default_endpoint_with_one_slot(real_model: RealModel, tmp_path: Path) -> None:
    endpoint = resolve_endpoint(settings_on(real_model, tmp_path))
    assert (endpoint.kind, endpoint.base_url, endpoint.slots) == ("local", real_model.base_url, 1)
    assert endpoint.model == "smollm2-135m-instruct"


def test_model_status_names_the_running_server(real_model: RealModel, tmp_path: Path) -> None:
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("MNEMOFLOW_", "OPENAI_"))}
    environment["MNEMOFLOW_LOCAL_SERVER_HOME"] = str(real_model.home)
    status = subprocess.run(
        [str(Path(sys.executable).with_name("mnemoflow")), "model", "status"],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    assert f"commands use: smollm2-135m-instruct on the local server at {real_model.base_url}" in status.stdout
    assert "answering" in status.stdout and "SmolLM2-135M-Instruct.Q4_1.gguf" in status.stdout


async def test_auto_learns_the_structured_mode_once_without_retrying_the_refusal(real_model: RealModel, tmp_path: Path) -> None:
    llm = gateway_on(real_model, tmp_path)
    try:
        reply = await llm.structured(ASK_COLOR, Color)
        assert isinstance(reply, Color) and reply.color
        # llama-cpp-python refuses the JSON-schema format with a 500 whose body is a validation error: one refusal,
        # no retry, then JSON mode with the schema, remembered for the next call of any gateway to this server
        assert (llm.usage.requests, llm.usage.retries) == (2, 0)
        assert llm.capabilities.json_mode == "json_object_schema"
        other = gateway_on(real_model, tmp_path)
        await other.structured(ASK_COLOR, Color)
        assert other.usage.requests == 1
        await other.aclose()
    finally:
        await llm.aclose()


@pytest.mark.parametrize("mode", ["json_object_schema", "json_object", "prompt"])
async def test_structured_output_in_each_mode_the_server_takes(real_model: RealModel, tmp_path: Path, mode: str) -> None:
    llm = gateway_on(real_model, tmp_path, structured_mode=mode)
    try:
        reply = await llm.structured(ASK_COLOR, Color, max_tokens=40)  # unconstrained, the model may run on
    except LLMOutputError as exc:  # the documented end of a reply that never validates: re-asked once, raw replies kept
        assert mode != "json_object_schema", "a grammar-constrained reply must validate"
        assert len(exc.raw_replies) >= 2 and llm.usage.reasks >= 1
    else:
        assert isinstance(reply, Color)
    finally:
        await llm.aclose()
    assert llm.usage.retries == 0 and llm.usage.requests >= 1


async def test_tool_calls_as_structured_output_forced_and_chosen(real_model: RealModel, tmp_path: Path) -> None:
    llm = gateway_on(real_model, tmp_path)  # the local server's tool calls go through the schema fallback
    messages = [{"role": "user", "content": "Write hello.py, a Python program that prints hello."}]
    try:
        assert not llm.capabilities.native_tools
        arguments = await llm.forced_tool(messages, WRITE)
        assert isinstance(arguments, WriteFile)  # grammar-constrained: valid at once
        turn = await llm.call_tools(messages, [WRITE], choice="auto")
        assert all(call.name == "write_file" for call in turn.tool_calls) and turn.finish_reason in {"tool_calls", "stop"}
        assert turn.tool_calls or turn.content  # a call, or an answer without one
    finally:
        await llm.aclose()
    assert llm.usage.retries == 0


async def test_a_native_forced_tool_call(real_model: RealModel, tmp_path: Path) -> None:
    llm = gateway_on(real_model, tmp_path, tool_mode="native")
    try:
        turn = await llm.call_tools([{"role": "user", "content": "Write hello.py printing hello."}], [WRITE], choice="write_file")
    finally:
        await llm.aclose()
    assert [call.name for call in turn.tool_calls] == ["write_file"] and turn.finish_reason == "tool_calls"
    assert isinstance(WRITE.parse(turn.tool_calls[0]), WriteFile)


async def test_a_refused_request_is_not_retried(real_model: RealModel, tmp_path: Path) -> None:
    llm = gateway_on(real_model, tmp_path, max_attempts=6)
    try:
        with pytest.raises(LLMRequestError, match="refused the request"):
            await llm.text([{"role": "wizard", "content": "hello"}])
    finally:
        await llm.aclose()
    assert (llm.usage.requests, llm.usage.retries) == (1, 0)


async def test_a_reply_is_cut_at_its_cap(real_model: RealModel, tmp_path: Path) -> None:
    llm = gateway_on(real_model, tmp_path, structured_mode="json_object_schema")  # no refusal to learn from first
    try:
        await llm.text([{"role": "user", "content": "Tell a long story about a lighthouse keeper."}], max_tokens=8)
        assert llm.usage.completion_tokens == 8
        caps: list[int | None] = []
        backend = llm._shared.backend
        assert isinstance(backend, OpenAIBackend)
        send = backend.complete

        async def recording(request: Any) -> Any:
            caps.append(request.max_tokens)
            return await send(request)

        backend.complete = recording  # type: ignore[method-assign]
        try:
            cut = await llm.structured([{"role": "user", "content": "Describe a lighthouse."}], WriteFile, max_tokens=4)
        except LLMOutputError as exc:  # still cut after the re-ask: the raw replies say so
            assert "cut off" in str(exc) and len(caps) == 4
        else:  # closed where it stopped at 16 tokens (an open string, the object), and valid
            assert isinstance(cut, WriteFile) and len(caps) == 3
        assert caps[:3] == [4, 8, 16]  # a reply cut in its JSON is asked for again with twice the room, twice
        assert llm.usage.reasks >= 2
    finally:
        await llm.aclose()


# -- every shipped graph on the real model ------------------------------------------------------------------------

STORY = (
    "The Lamp at Gull Point\n\n"
    "Mara Quill kept the lighthouse at Gull Point for twenty years. Her brother Tomas ran the ferry to the mainland.\n\n"
    "One winter the lamp failed during a storm. Tomas rowed out with a spare lens and the two of them mended it "
    "before the fishing boats came home.\n\n"
    "In spring the harbour council gave Mara a silver bell, which she hung beside the lamp."
)


async def run_on(settings: Settings, graph: Any, values: dict[str, Any], namespace: str, **options: Any) -> RunResult:
    async with open_run_parts(settings, checkpointer=False) as parts:
        assert parts.llm.model == "smollm2-135m-instruct"
        async with GraphRunner.from_parts(graph, parts, **options) as runner:
            return await runner.run(values, namespace=namespace)


async def count(settings: Settings, namespace: str) -> int:
    async with open_run_parts(settings, checkpointer=False) as parts:
        return await parts.store.count_nodes(namespace)


async def test_comorag_ingests_a_short_text_and_answers_on_the_real_model(real_model: RealModel, tmp_path: Path) -> None:
    settings = settings_on(real_model, tmp_path)
    indexed = await run_on(settings, load_graph("comorag-ingest"), {"book_id": "gull", "text": STORY}, "real")
    assert indexed.status == "completed" and indexed.state["chunk_ids"]
    qa = library_variant("comorag-qa", tmp_path, {"max_steps: 400": "max_steps: 120"})
    answered = await run_on(settings, qa, {"question": "Who kept the lighthouse?", "book_id": "gull", "max_cycles": 1}, "real")
    assert answered.status == "completed" and answered.state["status"] in {"answered", "unresolved"}
    assert answered.llm_calls > 0 and answered.llm_usage["retries"] == 0
    assert await count(settings, "real") > len(indexed.state["chunk_ids"])  # chunks, and the question's workspace


async def test_two_tme_turns_of_one_session_on_the_real_model(real_model: RealModel, tmp_path: Path) -> None:
    """A turn, then one that updates it on what the first saved (longer conversations on the real model run in
    ``tests/test_eval.py``'s TME evaluation)."""
    settings = settings_on(real_model, tmp_path)
    for number, utterance in enumerate(["Plan a trip to Lisbon for two people.", "Make it three people."]):
        result = await run_on(settings, load_graph("tme-turn"), {"session": "trip", "utterance": utterance}, "real")
        assert result.status == "completed" and isinstance(result.state.get("response"), str)
        assert result.state["turn"] == number  # the second loaded the session as the first saved it
    assert await count(settings, "real") > 0


async def test_gmemory_task_on_the_real_model(real_model: RealModel, tmp_path: Path) -> None:
    settings = settings_on(real_model, tmp_path)
    values = {"task": "Compute 17 + 25 and give only the number.", "task_key": "sum", "expected": "42", "max_rounds": 1}
    result = await run_on(settings, load_graph("gmemory-task"), values, "real")
    assert result.status == "completed" and result.llm_calls > 0
    assert await count(settings, "real") > 0


async def test_l2mac_on_a_one_instruction_task_on_the_real_model(real_model: RealModel, tmp_path: Path) -> None:
    settings = settings_on(real_model, tmp_path)
    graph = library_variant("l2mac", tmp_path, {"max_turns: 40": "max_turns: 4", "max_restarts: 30": "max_restarts: 1"})
    values = {"task": "Write hello.py that prints hello.", "instructions": ["Write hello.py that prints hello."]}
    try:
        result = await run_on(settings, graph, values, "real")
    except NodeError as exc:  # the graph's own failure: the instruction was not completed within its turns
        assert "max_turns" in str(exc) or "max_restarts" in str(exc), exc
    else:
        assert result.status == "completed" and result.state["status"] == "done" and result.llm_calls > 0
    assert await count(settings, "real") > 0  # the project and the run's record
