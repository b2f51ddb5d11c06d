"""TME's model calls: decompose an utterance, classify its parts (TRIM), re-derive stale steps, answer.

Every structured reply is validated into the models below by the LLM gateway (a malformed one is asked for
again with the validation error, then fails the call). Rules are generic, never tied to one domain.
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from mnemoflow.llm import offline_handler
from mnemoflow.llm.gateway import Message

__all__ = [
    "ANSWER_SYSTEM",
    "OFFLINE_PHRASING",
    "Classification",
    "Decomposition",
    "Operation",
    "Rederivation",
    "answer_messages",
    "classify_messages",
    "decompose_messages",
    "rederive_messages",
]

Intent = Literal["new", "update", "revert", "remove", "depend", "check"]


class _Reply(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Decomposition(_Reply):
    """The task an utterance is about and the substeps it names."""
    REPLY_TOKENS: ClassVar[int] = 200

    task: str = Field(max_length=200, description="A short, value-free title of the task, e.g. 'plan a trip'.")
    substeps: list[str] = Field(default_factory=list, max_length=12, description="One per object or parameter the user sets.")


class Operation(_Reply):
    """One TRIM decision: what the utterance does to one task step."""

    intent: Intent
    slot: str = Field(min_length=1, max_length=200, description="The step's value-free title, e.g. 'destination'.")
    value: str | None = Field(None, max_length=500, description="The step's new value (new, update), or the value to revert to.")
    parent: str | None = Field(None, max_length=200, description="For new: the task (root) or step this step goes under.")
    depends_on: list[str] = Field(default_factory=list, max_length=12, description="Steps whose values this one needs.")
    task: str | None = Field(None, max_length=200, description="The task the step belongs to, when several tasks have a step of this name.")
    new_slot: str | None = Field(
        None, max_length=200, description="For update: the new title when the step itself is swapped for another (one item for another)."
    )


class Classification(_Reply):
    REPLY_TOKENS: ClassVar[int] = 800
    operations: list[Operation] = Field(default_factory=list, max_length=24)


class Rederived(_Reply):
    slot: str = Field(min_length=1, max_length=200)
    value: str | None = Field(None, max_length=500)
    task: str | None = Field(None, max_length=200, description="The step's task, when two steps to re-derive share a name.")


class Rederivation(_Reply):
    REPLY_TOKENS: ClassVar[int] = 400
    values: list[Rederived] = Field(default_factory=list, max_length=24)


DECOMPOSE_SYSTEM = """You split one user message of a multi-turn task into its task and substeps.
Reply with JSON {"task": "...", "substeps": ["...", ...]}.
- task: a short title of what the user is working on, without values ("plan a trip", "cook dinner").
- substeps: one per object or parameter the user sets or changes ("destination", "departure date"); several
  actions on one object are one substep. Titles never contain the values themselves.
- A question, a check or a correction of an earlier value: no substeps."""

CLASSIFY_SYSTEM = """You are TRIM, the intent classifier of a task memory. Given the task steps remembered so far
and a user message, reply with JSON {"operations": [...]}, one operation per step the message touches:
- new: a step not remembered yet; give slot, value, parent (the task it belongs to; for a new task, parent
  null and slot the task title) and depends_on (remembered steps whose values it needs). A step of the same
  title in another task is another step: add it under its own task.
- update: the user changes a remembered step's value ("actually", "change", "instead"); new_slot: the new
  title when the user swaps the step itself for another.
- revert: the user goes back to an earlier value of a step ("go back to", "as before"); value = that value if named.
- remove: the user drops a step or item.
- depend: the step now needs another remembered step (depends_on).
- check: the user asks what was said or decided ("did I say", "what is"); no change.
Use the remembered slot titles exactly; give task (the task's title) when several tasks have a step of that
title. Reply with an empty list when nothing applies."""

REDERIVE_SYSTEM = """Some task steps are stale because a step they depend on changed. For each, give its value
re-derived from the current values of what it needs. Reply with JSON {"values": [{"slot": "...", "value": "..."}]}
(add "task" when two of the steps share a title)."""

ANSWER_SYSTEM = """You are an assistant helping a user through a multi-step task. The task memory below holds the
current values: rely on them, never on earlier values the user has replaced. Steps marked stale depend on
something that changed: say they need another look. Answer the user's message briefly."""


def decompose_messages(utterance: str) -> list[Message]:
    """Call A: the utterance alone."""
    return [{"role": "system", "content": DECOMPOSE_SYSTEM}, {"role": "user", "content": f"Message: {utterance}"}]


def classify_messages(memory: str, decomposition: Decomposition, utterance: str) -> list[Message]:
    parts = ", ".join(decomposition.substeps) or "none"
    user = f"Remembered steps:\n{memory}\n\nTask: {decomposition.task}\nSubsteps: {parts}\n\nMessage: {utterance}"
    return [{"role": "system", "content": CLASSIFY_SYSTEM}, {"role": "user", "content": user}]


def rederive_messages(context: str, stale: list[str]) -> list[Message]:
    user = f"{context}\n\nStale steps to re-derive: {', '.join(stale)}"
    return [{"role": "system", "content": REDERIVE_SYSTEM}, {"role": "user", "content": user}]


def answer_messages(prompt: str) -> list[Message]:
    return [{"role": "system", "content": ANSWER_SYSTEM}, {"role": "user", "content": prompt}]


def _message(messages: list[Message]) -> str:
    text = str(messages[-1].get("content", ""))
    match = re.search(r"Message: (.*)\Z", text, re.DOTALL)
    return match.group(1).strip() if match else text


@offline_handler(Decomposition)
def _offline_decomposition(messages: list[Message]) -> Decomposition:
    """The offline stand-in keeps the whole message as the task."""
    return Decomposition(task=_message(messages)[:200], substeps=[])


OFFLINE_PHRASING: tuple[tuple[str, str], ...] = (
    ("destination: Lisbon", "adds the step 'destination' = Lisbon (changes it, once remembered)"),
    ("set destination to Porto", "changes a remembered step (adds it when new); 'change ... to ...' too"),
)
"""What the offline stand-in understands, as (example line, what it does); any other line changes nothing. The
rules are :func:`_offline_classification`'s; ``mnemoflow chat tme`` shows these lines when it talks to the stand-in."""


@offline_handler(Classification)
def _offline_classification(messages: list[Message]) -> Classification:
    """``set SLOT to VALUE`` / ``change SLOT to VALUE`` for a remembered slot updates it; ``SLOT: VALUE`` adds one;
    anything else changes nothing. Enough to try the chat without a model."""
    text = _message(messages)
    remembered = {line.split(":", 1)[0].strip("- ").strip().lower() for line in str(messages[-1].get("content", "")).splitlines() if line.startswith("- ")}
    match = re.match(r"(?:set|change)\s+(.+?)\s+to\s+(.+)", text, re.IGNORECASE) or re.match(r"([\w ]{1,40}):\s*(.+)", text)
    if match is None:
        return Classification(operations=[])
    slot, value = match.group(1).strip(), match.group(2).strip().rstrip(".")
    return Classification(operations=[Operation(intent="update" if slot.lower() in remembered else "new", slot=slot, value=value)])


@offline_handler(Rederivation)
def _offline_rederivation(messages: list[Message]) -> Rederivation:
    return Rederivation(values=[])
