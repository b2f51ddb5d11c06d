"""An embedder that records what it was asked, for tests and benchmarks that count embedding calls."""

from __future__ import annotations

from collections.abc import Sequence

from mnemoflow.memory.embeddings import HashingEmbedder


class CountingEmbedder:
    """The hashing embedder (384 dimensions), remembering every call and every text it embedded."""

    def __init__(self) -> None:
        self.inner = HashingEmbedder(384)
        self.calls = 0
        self.texts: list[str] = []

    @property
    def model(self) -> str:
        return self.inner.model

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls += 1
        self.texts.extend(texts)
        return await self.inner.embed(texts)
