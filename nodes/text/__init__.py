"""Small generic text nodes: enough to build and test graphs before the memory mechanisms arrive."""

from __future__ import annotations

import asyncio
import operator
import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from mnemoflow.memory.records import NodeRecord, RelationshipRecord, stable_id
from mnemoflow.nodes.context import RunContext
from mnemoflow.nodes.registry import NoConfig, node, router, state_model

__all__ = ["TextState"]


@state_model("text.TextState")
class TextState(BaseModel):
    """State of the example text graphs."""

    text: str
    """The input text."""
    sentences: list[str] = Field(default_factory=list)
    sentence: str = ""
    """The item a fanned-out node works on."""
    word_counts: Annotated[list[int], operator.add] = Field(default_factory=list)
    """One count per sentence, merged in sentence order."""
    total_words: int = 0
    rounds: int = 0
    notes: Annotated[list[str], operator.add] = Field(default_factory=list)
    stored: list[str] = Field(default_factory=list)
    """Ids of the memory records written."""


class SplitConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min_length: int = Field(1, ge=1, description="Sentences shorter than this many characters are dropped.")


@node("text.split_sentences", state=TextState, reads={"text"}, writes={"sentences"}, config=SplitConfig)
async def split_sentences(state: TextState, config: SplitConfig, context: RunContext) -> dict[str, Any]:
    """Split the text into sentences at '.', '!' and '?'."""
    sentences = [part.strip() for part in re.split(r"(?<=[.!?])\s+", state.text) if len(part.strip()) >= config.min_length]
    return {"sentences": sentences}


@node("text.count_words", state=TextState, reads={"sentence"}, writes={"word_counts"})
async def count_words(state: TextState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """Count the words of one sentence (run once per sentence by a fan-out)."""
    return {"word_counts": [len(state.sentence.split())]}


@node("text.total", state=TextState, reads={"word_counts"}, writes={"total_words"})
async def total(state: TextState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """Add up the word counts."""
    return {"total_words": sum(state.word_counts)}


class NoteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prefix: str = Field("round", description="Text each note starts with.")


@node("text.note_round", state=TextState, reads={"rounds", "total_words"}, writes={"rounds", "notes"}, config=NoteConfig)
async def note_round(state: TextState, config: NoteConfig, context: RunContext) -> dict[str, Any]:
    """Count one more round and append a note about it."""
    rounds = state.rounds + 1
    return {"rounds": rounds, "notes": [f"{config.prefix} {rounds}: {state.total_words} words"]}


class RoundsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_rounds: int = Field(3, ge=1, le=100, description="Rounds before the loop exits.")


@router("text.until_rounds", state=TextState, reads={"rounds"}, outcomes={"again", "done"}, config=RoundsConfig)
def until_rounds(state: TextState, config: RoundsConfig) -> str:
    """'again' until ``max_rounds`` rounds are done, then 'done'."""
    return "again" if state.rounds < config.max_rounds else "done"


@router("text.has_sentences", state=TextState, reads={"sentences"}, outcomes={"found", "empty"})
def has_sentences(state: TextState, config: NoConfig) -> str:
    """'found' when the text has at least one sentence, else 'empty'."""
    return "found" if state.sentences else "empty"


@node("text.remember_sentences", state=TextState, reads={"sentences"}, writes={"stored"})
async def remember_sentences(state: TextState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """Store each sentence as an embedded Chunk, linked in reading order; ids make this idempotent."""
    ids = [stable_id(context.namespace, "Chunk", "sentence", sentence) for sentence in state.sentences]
    vectors = await context.embedder.embed(state.sentences)
    await context.store.upsert_nodes(
        [
            NodeRecord(id=node_id, namespace=context.namespace, kind="Chunk", text=sentence, embedding=vector)
            for node_id, sentence, vector in zip(ids, state.sentences, vectors, strict=True)
        ]
    )
    await context.store.upsert_relationships(
        [
            RelationshipRecord(namespace=context.namespace, type="NEXT", source_id=left, target_id=right)
            for left, right in zip(ids, ids[1:], strict=False)
        ]
    )
    return {"stored": ids}


class PauseConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float = Field(1.0, ge=0, le=3600, description="How long to wait.")


@node("text.pause", state=TextState, reads=set(), writes=set(), config=PauseConfig)
async def pause(state: TextState, config: PauseConfig, context: RunContext) -> dict[str, Any]:
    """Wait a while (stands in for a slow step, e.g. a model call)."""
    await asyncio.sleep(config.seconds)
    return {}
