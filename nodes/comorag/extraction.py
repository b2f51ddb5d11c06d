"""What ComoRAG asks the model at index time: prompts, output schemas and the offline model's answers.

Per chunk, named-entity recognition (``{"named_entities": [...]}``) then triple extraction conditioned on
those entities (``{"triples": [[s, p, o], ...]}``), as in HippoRAG 2; one summary per semantic cluster
(RAPTOR's prompt) and one per episodic window (chronological, key events and turning points).

The offline handlers make ingestion run with no model: NER takes capitalized word sequences that are not
sentence-initial stop words; triples are "X <verb phrase> Y" between two entities of one sentence.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field, field_validator

from mnemoflow.llm import offline_handler

__all__ = [
    "EPISODIC_SYSTEM",
    "NER_SYSTEM",
    "SEMANTIC_SYSTEM",
    "TRIPLES_SYSTEM",
    "NamedEntities",
    "Triples",
    "capitalized_names",
    "episodic_messages",
    "ner_messages",
    "semantic_messages",
    "triples_messages",
]

Message = dict[str, Any]

NER_SYSTEM = (
    "Your task is to extract named entities from the given paragraph. "
    'Respond with a JSON object: {"named_entities": ["First entity", "Second entity"]}.'
)
TRIPLES_SYSTEM = (
    "Your task is to construct an RDF (Resource Description Framework) graph from the given paragraph and its "
    "named entities. Respond with a JSON object of triples: "
    '{"triples": [["subject", "predicate", "object"]]}. Each triple should contain at least one, preferably two, '
    "of the named entities in the list, and pronouns should be resolved to their specific names."
)
SEMANTIC_SYSTEM = "You are a summarizing assistant. Write a summary of the following, including as many key details as possible."
EPISODIC_SYSTEM = (
    "You are a narrative timeline assistant. Summarize these consecutive passages of a story in chronological "
    "order, keeping the key events, the characters involved and the turning points."
)
_PARAGRAPH = "Paragraph:\n"
_ENTITIES = "Named entities: "


class NamedEntities(BaseModel):
    """The named entities of one chunk."""

    named_entities: list[str] = Field(default_factory=list)

    @field_validator("named_entities", mode="before")
    @classmethod
    def _keep_names(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        names = [str(item).strip() for item in value if isinstance(item, str | int | float) and str(item).strip()]
        return list(dict.fromkeys(names))


class Triples(BaseModel):
    """The (subject, predicate, object) triples of one chunk; malformed triples are dropped, not fatal."""

    triples: list[list[str]] = Field(default_factory=list)

    @field_validator("triples", mode="before")
    @classmethod
    def _drop_malformed(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        kept: list[list[str]] = []
        for triple in value:
            if not isinstance(triple, list | tuple) or len(triple) != 3:
                continue
            if not all(isinstance(part, str | int | float) and str(part).strip() for part in triple):
                continue
            kept.append([str(part).strip() for part in triple])
        return kept


def ner_messages(passage: str) -> list[Message]:
    return [{"role": "system", "content": NER_SYSTEM}, {"role": "user", "content": _PARAGRAPH + passage}]


def triples_messages(passage: str, entities: Sequence[str]) -> list[Message]:
    user = f"{_ENTITIES}{json.dumps(list(entities), ensure_ascii=False)}\n\n{_PARAGRAPH}{passage}"
    return [{"role": "system", "content": TRIPLES_SYSTEM}, {"role": "user", "content": user}]


def semantic_messages(texts: Sequence[str]) -> list[Message]:
    """The cluster's members, most central first."""
    return [{"role": "system", "content": SEMANTIC_SYSTEM}, {"role": "user", "content": "\n\n".join(texts)}]


def episodic_messages(passages: Sequence[str]) -> list[Message]:
    """A window's passages in reading order."""
    numbered = "\n\n".join(f"Passage {index}:\n{text}" for index, text in enumerate(passages, 1))
    return [{"role": "system", "content": EPISODIC_SYSTEM}, {"role": "user", "content": numbered}]


# -- the offline model -------------------------------------------------------------------------------------

_STOP_WORDS = (
    "a an and as at but by for from he her his i if in it its my no not of on or our she so that the their them then "
    "there these they this those to we what when where which while who why with you your after afterwards before "
    "until once yes how all one two three every each some"
)
_STOP = frozenset(_STOP_WORDS.split())
_CANDIDATE = re.compile(r"[A-Z][\w'’-]*(?:\s+(?:of\s+|the\s+)*[A-Z][\w'’-]*)*")
_SENTENCE = re.compile(r"(?<=[.!?])[\"'”’]*\s+")


def _user_text(messages: list[Message]) -> str:
    return next((str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"), "")


def _passage(messages: list[Message]) -> str:
    return _user_text(messages).split(_PARAGRAPH, 1)[-1]


def _clean(candidate: str) -> str:
    words = re.sub(r"['’]s$", "", candidate).split()
    while words and words[0].lower() in _STOP:
        words.pop(0)
    while words and words[-1].lower() in _STOP:
        words.pop()
    return " ".join(words)


def capitalized_names(text: str) -> list[str]:
    """Capitalized word sequences, leading and trailing stop words removed, in order of first appearance."""
    names = [_clean(match.group(0)) for match in _CANDIDATE.finditer(text)]
    return list(dict.fromkeys(name for name in names if name and len(name) > 1))


@offline_handler(NamedEntities)
def _offline_ner(messages: list[Message]) -> NamedEntities:
    return NamedEntities(named_entities=capitalized_names(_passage(messages)))


@offline_handler(Triples)
def _offline_triples(messages: list[Message]) -> Triples:
    user = _user_text(messages)
    header = user.split("\n", 1)[0]
    entities: list[str] = json.loads(header[len(_ENTITIES) :]) if header.startswith(_ENTITIES) else []
    triples: list[list[str]] = []
    for sentence in _SENTENCE.split(_passage(messages)):
        found = sorted((sentence.find(name), name) for name in entities if name in sentence)
        for (start, left), (end, right) in zip(found, found[1:], strict=False):
            between = sentence[start + len(left) : end].strip(" ,;:")
            words = between.split()
            if 1 <= len(words) <= 4 and words[0].islower() and left != right:
                triples.append([left, " ".join(words), right])
    return Triples(triples=triples)
