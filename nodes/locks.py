"""One asyncio lock per key (a namespace, a session, a role) and event loop: read-modify-writes of one key in
this process never interleave. Nothing here reaches another process: across processes the mechanisms rely on the
store instead, on records written as new (claims, :mod:`mnemoflow.nodes.leases` when the work has an owner that
may die), and on stable ids that make a repeated write harmless."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager

__all__ = ["keyed_lock"]

_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Hashable, asyncio.Lock]] = weakref.WeakKeyDictionary()


@asynccontextmanager
async def keyed_lock(*key: Hashable) -> AsyncIterator[None]:
    """Hold the lock of ``key`` (created on first use, per running event loop)."""
    locks = _locks.setdefault(asyncio.get_running_loop(), {})
    async with locks.setdefault(key, asyncio.Lock()):
        yield
