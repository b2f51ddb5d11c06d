"""A meter on the model's transport: every request an attempt sends, whoever sends it (graph nodes, a baseline's
own calls, re-asks after a bad reply), counted where the requests leave the process."""

from __future__ import annotations

from dataclasses import dataclass

from mnemoflow.llm.backends import Backend, ChatRequest, Completion

__all__ = ["MeteredBackend", "Reading"]


@dataclass(frozen=True)
class Reading:
    """What was sent so far: requests and the tokens the server counted."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __sub__(self, earlier: Reading) -> Reading:
        return Reading(
            self.calls - earlier.calls,
            self.prompt_tokens - earlier.prompt_tokens,
            self.completion_tokens - earlier.completion_tokens,
        )


class MeteredBackend:
    """Wraps a backend and counts the requests that reached the model and the tokens its replies report."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name = inner.name
        self.endpoint = inner.endpoint
        self.reading = Reading()

    async def complete(self, request: ChatRequest) -> Completion:
        completion = await self.inner.complete(request)
        before = self.reading
        self.reading = Reading(
            before.calls + 1, before.prompt_tokens + completion.prompt_tokens, before.completion_tokens + completion.completion_tokens
        )
        return completion

    async def close(self) -> None:
        await self.inner.close()
