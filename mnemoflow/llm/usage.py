"""What a run spent on the model: calls, requests, retries, tokens, cache hits, time waiting."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Usage"]


@dataclass
class Usage:
    """Counters of one run (or one gateway); ``requests == calls - cache_hits + retries + reasks``."""

    calls: int = 0
    """Calls made by nodes (``text`` or ``structured``), cached or not."""
    requests: int = 0
    """HTTP requests sent to the model, retries included."""
    retries: int = 0
    """Requests repeated after a transport fault (429, 5xx, timeout, dropped connection)."""
    reasks: int = 0
    """Requests repeated because a reply was truncated or did not validate."""
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wait_s: float = 0.0
    """Seconds spent waiting on the model, backoff, rate limits and slots included."""
    slot_wait_s: float = 0.0
    """Of those, seconds queued for a free slot (the concurrency cap, a shared limit): not counted in deadlines."""
    server_s: float = 0.0
    """Seconds the server said it spent on the requests (``Completion.server_seconds``; 0 where it does not say)."""

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, Any]:
        seconds = {name: round(getattr(self, name), 6) for name in ("wait_s", "slot_wait_s", "server_s")}
        return {**asdict(self), **seconds, "tokens": self.tokens}

    def add(self, other: Usage) -> None:
        """Count ``other`` in too (a node's usage into its run's)."""
        for key, value in asdict(other).items():
            setattr(self, key, getattr(self, key) + value)
