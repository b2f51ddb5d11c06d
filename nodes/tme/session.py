"""Turns of one conversation run one at a time: a lock per (namespace, session) in this process.

Across processes the turn's save is the guard: it refuses a turn when another turn of the session was saved after
this one loaded, so no update is ever lost silently, and the refused turn starts over from its load on the
session's new state (``tme.after_persist``, bounded by ``tme.persist``'s ``max_attempts``). The lock spares a
process's own turns that second round of model calls.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from mnemoflow.nodes.locks import keyed_lock

__all__ = ["one_turn_at_a_time"]

T = TypeVar("T")


async def one_turn_at_a_time(namespace: str, session: str, turn: Callable[[], Awaitable[T]]) -> T:
    """Run ``turn`` once every earlier turn of the session started in this process has finished."""
    async with keyed_lock("tme-session", namespace, session):
        return await turn()
