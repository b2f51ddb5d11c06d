"""``mnemoflow mcp`` in a child process, spoken to by the MCP SDK's own client, over stdio or streamable HTTP.

The model behind the server is a :class:`~tests.support.openai_server.ScriptedOpenAIServer` in the test process;
:func:`mechanism_reply` answers every call of the graphs the server's tools run (ComoRAG ingestion and questions,
a TME turn, G-Memory retrieval), so a test sees the prompts the tools sent in ``server.requests``.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from mcp import Client
from mcp.client import Transport
from mcp.client.session import IncomingMessage
from mcp_types import CallToolResult

from mnemoflow.memory.protocol import Embedder, GraphStore
from mnemoflow.memory.records import NodeRecord, RelationshipRecord
from mnemoflow.nodes.gmemory.model import INSIGHT, QUERY, insight_id, query_id
from tests.support.openai_server import Reply
from tests.support.web_server import free_port

__all__ = [
    "ANSWER",
    "BOOK_TEXT",
    "LESSON",
    "MNEMOFLOW",
    "PAST_TASK",
    "HeldClient",
    "HttpServer",
    "http_servers",
    "mechanism_reply",
    "seed_team_memory",
    "structured",
    "text_of",
]

MNEMOFLOW = str(Path(sys.executable).with_name("mnemoflow"))

BOOK_TEXT = (
    "Maren Holt kept the lighthouse at Skerry Point for thirty winters. "
    "Each night she climbed the iron stair and trimmed the great lamp, and each morning she wrote the weather "
    "in a green ledger. When the packet boat Heron ran aground in the autumn gale, Maren rowed out alone and "
    "brought its crew of four back to the rocks."
)
"""A short text: one chunk, so ingestion makes few model calls."""
ANSWER = "Maren Holt"
"""What the scripted careful reader answers about the book."""
PAST_TASK = "write a report on quarterly sales for the northern office"
LESSON = "Check the figures against the source before writing, because guesses fail review."


def mechanism_reply(body: dict[str, Any]) -> Reply:
    """The scripted model's reply to the calls of comorag-ingest, comorag-qa (answered at step 0), tme-turn and
    gmemory-retrieve, by the role its system prompt gives (``Rule(respond=mechanism_reply)``)."""
    messages = body["messages"]
    system, user = messages[0]["content"], messages[-1]["content"]
    replies: list[tuple[str, Reply]] = [
        ("named entities from the given paragraph", {"named_entities": ["Maren Holt", "Skerry Point", "Heron"]}),
        ("RDF", {"triples": [["Maren Holt", "kept the lighthouse at", "Skerry Point"]]}),
        ("summarizing assistant", "Maren Holt keeps the Skerry Point lighthouse and rescues the Heron's crew."),
        ("narrative timeline assistant", "Over thirty winters Maren Holt tends the lamp; in an autumn gale she rows out."),
        ("recognition memory", {"keep": [1]}),
        ("narrative analyst", {"findings": ["Maren Holt kept the lighthouse at Skerry Point."]}),
        ("careful reader", {"analysis": "### Key Facts\nMaren Holt kept the lighthouse.", "final_answer": ANSWER}),
        ("You split one user message", {"task": "plan a trip", "substeps": ["destination"]}),
        ("You are an assistant helping a user", "Noted: you are going to Lisbon."),
        ("You judge how useful past tasks are", {"ratings": [{"index": 1, "score": 9}]}),
    ]
    if "You are TRIM" in system:
        if "budget" in user:  # a step no turn created: the update cannot be applied
            return {"operations": [{"intent": "update", "slot": "budget", "value": "900 euros"}]}
        return {"operations": [{"intent": "new", "slot": "destination", "value": "Lisbon", "parent": "plan a trip"}]}
    reply = next((reply for marker, reply in replies if marker in system), None)
    if reply is None:  # a call these tests do not expect: the scripted server answers 400 naming it
        raise LookupError(f"no scripted reply for the system prompt {system[:80]!r}")
    return reply


async def seed_team_memory(store: GraphStore, embedder: Embedder, namespace: str) -> None:
    """One resolved past task and the lesson it supports, as G-Memory stores them."""
    query, insight = query_id(namespace, "task-past"), insight_id(namespace, LESSON)
    properties = {"task": PAST_TASK, "status": "resolved", "order": 1, "key_steps": ["collect the office figures"]}
    await store.upsert_nodes(
        [
            NodeRecord(
                id=query,
                namespace=namespace,
                kind=QUERY,
                text=PAST_TASK,
                embedding=(await embedder.embed([PAST_TASK]))[0],
                properties={**properties, "fail_reason": "", "trajectory": ""},
            ),
            NodeRecord(
                id=insight,
                namespace=namespace,
                kind=INSIGHT,
                text=LESSON,
                properties={"text": LESSON, "status": "active", "score": 3, "created_order": 1},
            ),
        ]
    )
    await store.upsert_relationships(
        [RelationshipRecord(namespace=namespace, type="SUPPORTED_BY", source_id=insight, target_id=query)]
    )


def structured(result: CallToolResult) -> dict[str, Any]:
    """A successful tool result's structured content, after checking the text block carries the same JSON."""
    assert not result.is_error, text_of(result)
    assert isinstance(result.structured_content, dict), result
    assert json.loads(text_of(result)) == result.structured_content
    return result.structured_content


def text_of(result: CallToolResult) -> str:
    """The text of a tool result's text blocks."""
    return "\n".join(getattr(block, "text", "") for block in result.content)


class HeldClient:
    """A :class:`mcp.Client` on ``transport``, kept connected across tests by a task of the session's event loop.

    The SDK's transports run in task groups that must be left by the task that entered them, while pytest sets a
    fixture up and tears it down in different tasks: so one task enters the client, waits, and leaves it on
    :meth:`close`; tests send requests from their own tasks. ``stream_faults`` collects what the client could not
    read as a protocol message (a stray line on a stdio server's stdout lands here). No response cache: every
    read reaches the server.
    """

    def __init__(self, transport: Transport) -> None:
        self.stream_faults: list[Exception] = []
        self.client = Client(transport, cache=None, message_handler=self._record_fault, read_timeout_seconds=120)
        self._ready = asyncio.Event()
        self._done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def open(self, timeout: float = 60.0) -> Client:
        """Connect (the handshake included); the connection's own error if it fails."""
        self._task = asyncio.create_task(self._hold())
        waiter = asyncio.create_task(self._ready.wait())
        await asyncio.wait({self._task, waiter}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if not self._ready.is_set():
            waiter.cancel()
            if self._task.done():
                self._task.result()
            raise TimeoutError(f"the MCP server did not answer within {timeout} s")
        return self.client

    async def close(self) -> None:
        self._done.set()
        if self._task is not None:
            await asyncio.wait_for(self._task, timeout=60)

    async def _hold(self) -> None:
        async with self.client:
            self._ready.set()
            await self._done.wait()

    async def _record_fault(self, message: IncomingMessage) -> None:
        if isinstance(message, Exception):
            self.stream_faults.append(message)


@dataclass
class HttpServer:
    """``mnemoflow mcp --transport http`` in a child process: its MCP endpoint (through 127.0.0.1) and its stderr."""

    url: str
    process: subprocess.Popen[bytes]
    stderr: Path

    @classmethod
    def start(cls, folder: Path, environment: dict[str, str], *, host: str = "127.0.0.1") -> HttpServer:
        """Start the server bound to ``host`` on a free port, in ``folder``; it is not serving yet."""
        port = free_port()
        stderr = folder / f"mcp-http-{port}.stderr"
        with stderr.open("wb") as errors:
            process = subprocess.Popen(
                [MNEMOFLOW, "mcp", "--transport", "http", "--host", host, "--port", str(port)],
                cwd=folder,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errors,
            )
        return cls(f"http://127.0.0.1:{port}/mcp", process, stderr)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1].removesuffix("/mcp"))

    def errors(self) -> str:
        return self.stderr.read_text(errors="replace")

    def wait_until_serving(self, timeout: float = 120.0) -> None:
        """Wait until the endpoint answers HTTP at all (405, 401, 406...); fail with its stderr if it exits first."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                httpx.get(self.url, timeout=5)
                return
            except httpx.TransportError:
                pass
            assert self.process.poll() is None, f"mnemoflow mcp exited with {self.process.returncode}:\n{self.errors()}"
            assert time.monotonic() < deadline, f"mnemoflow mcp did not serve within {timeout} s:\n{self.errors()}"
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM, as a service manager stops it; fails when it does not exit or left a traceback on stderr."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"mnemoflow mcp did not stop on SIGTERM:\n{self.errors()}") from None
        assert "Traceback" not in self.errors(), self.errors()


@contextmanager
def http_servers(folder: Path, servers: dict[str, tuple[dict[str, str], str]]) -> Iterator[dict[str, HttpServer]]:
    """Start one HTTP server per name (its environment and bind address), each in a folder of its own, all at once
    (their start-up is mostly imports, which then overlap); yield them once all serve; stop them all at the end."""
    started: dict[str, HttpServer] = {}
    try:
        for name, (environment, host) in servers.items():
            (folder / name).mkdir()
            started[name] = HttpServer.start(folder / name, environment, host=host)
        for server in started.values():
            server.wait_until_serving()
        yield started
    finally:
        problems = []
        for server in started.values():
            try:
                server.stop()
            except AssertionError as exc:
                problems.append(str(exc))
        assert not problems, "\n".join(problems)
