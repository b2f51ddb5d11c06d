"""The server's own time on each request, as the gateway keeps it, and ComoRAG's embeddings kept off the model's path.

The orchestration benchmark (``bench/orchestration.py``) divides wall time by the model server's busy time, which it
takes from the ``openai-processing-ms`` header of each reply: these tests pin that the header reaches
``Completion.server_seconds`` and the run's usage, and that ComoRAG embeds each text once (the semantic layer reads
the chunks' vectors back from the store instead of embedding them a second time).
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from openai import AsyncOpenAI

from mnemoflow.graphs import load_graph, run_graph
from mnemoflow.llm import LLM, ChatRequest, OpenAIBackend
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.settings import LLMSettings, Settings, StoreSettings
from tests.conftest import offline_llm
from tests.support.embedders import CountingEmbedder

BOOK = Path(__file__).parents[1] / "nodes" / "comorag" / "data" / "the-salt-road.txt"


def backend_answering(headers: dict[str, str]) -> OpenAIBackend:
    """A backend whose server replies "hi" with ``headers``, through an in-process transport."""

    def reply(request: httpx.Request) -> httpx.Response:
        body = {
            "id": "c1", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        }  # fmt: skip
        return httpx.Response(200, content=json.dumps(body), headers={"content-type": "application/json", **headers})

    backend = OpenAIBackend(base_url="http://model.test/v1", api_key="test", timeout=5.0)
    backend.client = AsyncOpenAI(
        base_url="http://model.test/v1", api_key="test", max_retries=0, http_client=httpx.AsyncClient(transport=httpx.MockTransport(reply))
    )
    return backend


@pytest.mark.parametrize(("header", "seconds"), [({"openai-processing-ms": "250"}, 0.25), ({}, None), ({"openai-processing-ms": "soon"}, None)])
async def test_the_server_s_own_time_reaches_the_completion(header: dict[str, str], seconds: float | None) -> None:
    backend = backend_answering(header)
    completion = await backend.complete(ChatRequest(model="m", messages=[{"role": "user", "content": "hello"}], temperature=0))
    assert completion.text == "hi" and completion.server_seconds == seconds
    await backend.close()


async def test_the_run_s_usage_sums_the_server_s_time_over_its_requests() -> None:
    llm = LLM(backend_answering({"openai-processing-ms": "250"}), LLMSettings(cache=False))
    for _ in range(2):
        assert await llm.text([{"role": "user", "content": "hello"}]) == "hi"
    assert llm.usage.requests == 2 and llm.usage.server_s == pytest.approx(0.5)
    assert llm.usage.as_dict()["server_s"] == 0.5
    await llm.aclose()


async def test_ingest_embeds_each_chunk_once(sqlite_store: GraphStore, namespace: str, tmp_path: Path) -> None:
    embedder = CountingEmbedder()
    text = BOOK.read_text(encoding="utf-8")[:6000]
    result = await run_graph(
        load_graph("comorag-ingest"),
        {"book_id": "salt", "title": "The Salt Road", "text": text, "chunk_tokens": 256, "kg": False},
        store=sqlite_store,
        embedder=embedder,
        llm=offline_llm(),
        settings=Settings(store=StoreSettings(sqlite_path=tmp_path / "memory.db")),
        checkpointer=None,
        namespace=namespace,
    )
    chunks = result.state["chunks"]
    assert len(chunks) > 2 and result.state["semantic_levels"]
    # chunk_book embedded the chunks; the semantic layer read their vectors back (a 1-chunk episode window is a copy)
    assert all(embedder.texts.count(chunk) <= 2 for chunk in chunks)
    assert sum(embedder.texts.count(chunk) for chunk in chunks) < 2 * len(chunks)
