"""Nodes and routers that misbehave on purpose, registered under ``testing.*`` for the engine's tests."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from mnemoflow.memory.names import REGISTRY as REGISTRY_KINDS
from mnemoflow.memory.records import NodeRecord
from mnemoflow.nodes import NoConfig, RunContext, node, router
from mnemoflow.nodes.text import TextState

FAILURES: dict[str, int] = {}
"""How many more times ``testing.flaky`` fails, by thread id."""


class FlakyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    failures: int = 2


@node("testing.flaky", state=TextState, reads=set(), writes={"notes"}, config=FlakyConfig)
async def flaky(state: TextState, config: FlakyConfig, context: RunContext) -> dict[str, Any]:
    """Fail the first ``failures`` attempts of each thread, then succeed."""
    left = FAILURES.setdefault(context.thread_id, config.failures)
    if left > 0:
        FAILURES[context.thread_id] = left - 1
        raise RuntimeError(f"flaky failure, {left - 1} left")
    return {"notes": ["flaky succeeded"]}


@node("testing.slow", state=TextState, reads=set(), writes=set())
async def slow(state: TextState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """Take ten seconds."""
    await asyncio.sleep(10)
    return {}


@node("testing.writes_undeclared", state=TextState, reads=set(), writes={"notes"})
async def writes_undeclared(state: TextState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """Write a field it did not declare."""
    return {"notes": ["ok"], "total_words": 99}


@router("testing.bad_router", state=TextState, reads=set(), outcomes={"left", "right"})
def bad_router(state: TextState, config: NoConfig) -> str:
    """Return an outcome it did not declare."""
    return "straight"


@node("testing.noop", state=TextState, reads=set(), writes=set())
async def noop(state: TextState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """Do nothing."""
    return {}


@router("testing.counter", state=TextState, reads={"rounds"}, outcomes={"again", "done"})
def counter(state: TextState, config: NoConfig) -> str:
    """'again' for the first two rounds."""
    return "again" if state.rounds < 2 else "done"


@node("testing.ask", state=TextState, reads={"sentence"}, writes={"word_counts"})
async def ask(state: TextState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """Ask the model how many words the sentence has (one call per fanned-out sentence)."""
    reply = await context.llm.text([{"role": "user", "content": f"count: {state.sentence}"}])
    return {"word_counts": [int(reply)]}


REGISTRY_KINDS.register_kind("TestMark", description="A record a testing node writes each time it runs.")


class MarkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str


@node("testing.mark", state=TextState, reads=set(), writes={"notes"}, config=MarkConfig)
async def mark(state: TextState, config: MarkConfig, context: RunContext) -> dict[str, Any]:
    """Write a new TestMark record each time it runs (so a node run twice leaves two)."""
    record = NodeRecord(
        id=uuid.uuid4().hex,
        namespace=context.namespace,
        kind="TestMark",
        text=config.label,
        properties={"label": config.label, "thread_id": context.thread_id, "pid": os.getpid()},
    )
    await context.store.upsert_nodes([record])
    return {"notes": [config.label]}


class WaitConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str


@node("testing.wait_for_file", state=TextState, reads=set(), writes=set(), config=WaitConfig)
async def wait_for_file(state: TextState, config: WaitConfig, context: RunContext) -> dict[str, Any]:
    """Touch ``path + '.started'``, then wait until ``path`` exists (a test holds a run here)."""
    Path(config.path + ".started").touch()
    while not Path(config.path).exists():
        await asyncio.sleep(0.2)
    return {}
