"""The MCP server's graph runs: one runner per shipped graph over the server's parts, and progress per request.

The runners are shared by every request, so a run's progress cannot go to one listener fixed at start: the tool
hands its run the request's :class:`ProgressRelay`, which hears the run's progress (what nodes report,
:meth:`~mnemoflow.nodes.context.RunContext.progress`) and each node that finishes, and sends them to the client as
MCP progress notifications, in order, before the tool answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

from mnemoflow.graphs import GraphRunner, load_graph
from mnemoflow.graphs.parts import RunParts
from mnemoflow.graphs.runner import LIVE_INTERVAL_S

__all__ = ["ProgressRelay", "Runners", "relaying"]

Report = Callable[[float, str], Awaitable[None]]
"""Sends one progress notification: the count so far (it only grows, as MCP asks) and a message."""

class ProgressRelay:
    """One request's progress: notes from the run, sent in order by :meth:`pump` through ``report``.

    The notes come from synchronous callbacks inside the run; they are queued, never sent from the callback.
    """

    def __init__(self, report: Report) -> None:
        self._report = report
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self.sent = 0

    def note(self, message: str) -> None:
        """Queue a notification (safe from any thread)."""
        self._loop.call_soon_threadsafe(self._queue.put_nowait, message)

    def node_finished(self, node: str) -> None:
        self.note(f"step {node} finished")

    def progress(self, step: str, done: int, total: int) -> None:
        """A :data:`~mnemoflow.nodes.context.ProgressListener`."""
        self.note(f"{step}: {done}/{total}")

    async def pump(self) -> None:
        """Send the queued notes until :meth:`close`; a note that cannot be sent is dropped, the run goes on."""
        while (message := await self._queue.get()) is not None:
            self.sent += 1
            try:
                await self._report(self.sent, message)
            except Exception:  # the client went away or refused it: progress is not worth failing the run for
                continue

    def close(self) -> None:
        """Let :meth:`pump` end once the notes queued so far are sent."""
        self._loop.call_soon_threadsafe(self._queue.put_nowait, None)


@asynccontextmanager
async def relaying(report: Report) -> AsyncIterator[ProgressRelay]:
    """A relay to ``report`` for the runs started inside; on success every note is sent before the block's caller
    goes on (the SDK drops notes when the client asked for none)."""
    relay = ProgressRelay(report)
    pump = asyncio.create_task(relay.pump())
    try:
        yield relay
    except BaseException:
        pump.cancel()  # the request failed or was cancelled: its progress no longer matters
        raise
    finally:
        relay.close()
    await pump  # every note is sent before the answer


@dataclass
class Runners:
    """The server's parts and one runner per graph, made on first use; their run records are written at the end
    of each run (``live_interval``: the UI follows them while they run) and flushed when the server stops."""

    parts: RunParts
    _runners: dict[str, GraphRunner] = field(default_factory=dict, init=False)
    _opened: AsyncExitStack = field(default_factory=AsyncExitStack, init=False)

    async def runner(self, graph: str) -> GraphRunner:
        """The runner of the shipped graph ``graph``."""
        if graph not in self._runners:  # no await between the check and the store: one runner per graph
            made = GraphRunner.from_parts(load_graph(graph), self.parts, live_interval=LIVE_INTERVAL_S)
            self._runners[graph] = made
            await self._opened.enter_async_context(made)
        return self._runners[graph]

    async def aclose(self) -> None:
        await self._opened.aclose()
