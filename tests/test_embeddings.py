"""Embedders: the hashing default, an OpenAI-compatible server over real HTTP, and the local model."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from mnemoflow.errors import ConfigError, EmbeddingError
from mnemoflow.memory import Embedder, HashingEmbedder, LocalEmbedder, OpenAIEmbedder, embedder_from_settings
from mnemoflow.settings import EmbeddingSettings, OpenAISettings, Settings
from tests.support.openai_server import ScriptedOpenAIServer


async def test_hashing_embedder_is_deterministic_and_similarity_follows_words() -> None:
    embedder = HashingEmbedder(256)
    [whale, whale_again, whales_sea, inn] = await embedder.embed(
        ["the white whale", "the white whale", "a white whale at sea", "chowder at the inn"]
    )
    assert whale == whale_again and len(whale) == 256
    assert np.linalg.norm(whale) == pytest.approx(1.0)
    assert np.dot(whale, whales_sea) > np.dot(whale, inn)
    assert embedder.model == "hashing-v1-256" and isinstance(embedder, Embedder)
    with pytest.raises(ConfigError):
        HashingEmbedder(4)


async def test_openai_embedder_batches_over_http() -> None:
    with ScriptedOpenAIServer(dimension=64) as server:
        embedder = OpenAIEmbedder(model="test-embed", dimension=64, base_url=server.base_url, batch_size=3)
        vectors = await embedder.embed([f"text {index}" for index in range(7)])
        await embedder.close()
    assert vectors == [HashingEmbedder(64).embed_one(f"text {index}") for index in range(7)]
    assert [len(request["body"]["input"]) for request in server.requests] == [3, 3, 1]


async def test_openai_embedder_retries_transient_errors_then_succeeds() -> None:
    with ScriptedOpenAIServer(dimension=32) as server:
        server.failures.extend([503, 429])
        embedder = OpenAIEmbedder(model="m", dimension=32, base_url=server.base_url, max_retries=3)
        [vector] = await embedder.embed(["hello"])
        await embedder.close()
    assert len(vector) == 32 and len(server.requests) == 3


async def test_openai_embedder_errors_are_clear() -> None:
    with ScriptedOpenAIServer(dimension=32) as server:
        embedder = OpenAIEmbedder(model="m", dimension=32, base_url=server.base_url, max_retries=0)
        server.failures.append(400)
        with pytest.raises(EmbeddingError, match="'m'.*scripted failure 400"):
            await embedder.embed(["x"])
        server.wrong_dimension = True
        with pytest.raises(EmbeddingError, match="dimension 31, configured dimension is 32"):
            await embedder.embed(["x"])
        await embedder.close()


def test_embedder_from_settings() -> None:
    assert isinstance(embedder_from_settings(Settings(embedding=EmbeddingSettings(dimension=128))), HashingEmbedder)
    openai = embedder_from_settings(
        Settings(embedding=EmbeddingSettings(provider="openai"), openai=OpenAISettings(base_url="http://127.0.0.1:9/v1"))
    )
    assert isinstance(openai, OpenAIEmbedder) and openai.model == "text-embedding-3-small"


async def test_local_embedder_uses_the_bundled_model_or_says_how_to_install() -> None:
    if importlib.util.find_spec("sentence_transformers") is None:
        with pytest.raises(ConfigError, match=r"mnemoflow\[local\]"):
            LocalEmbedder()
        return
    embedder = LocalEmbedder()
    [cat, kitten, invoice] = await embedder.embed(["a cat sleeps", "a kitten naps", "quarterly invoice totals"])
    assert embedder.model == "all-MiniLM-L6-v2" and embedder.dimension == 384 and len(cat) == 384
    assert np.dot(cat, kitten) > np.dot(cat, invoice)
