"""What G-Memory says to the model and hears back: reply schemas, prompts and the offline stand-ins.

Retrieval asks the model to rate past tasks (all in one call, or one call per task with a plain-text score), to
condense a past interaction and to tailor insights to a role; evolution asks for a task's key steps, a failure's
likely mistake, the task's lesson (the paper's summarizer), operations on the insights (revision) and
consolidated insights (merge). The prompts are generic: no environment or benchmark wording. Offline, the
stand-ins keep everything as it is (every candidate rated alike, every utterance kept, no insight changed) and
learn one fixed lesson per outcome.
:func:`memory_text` is what each team member finally reads.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from mnemoflow.llm import offline_handler
from mnemoflow.llm.gateway import Message as ChatMessage
from mnemoflow.memory.records import NodeRecord
from mnemoflow.nodes.gmemory.state import Candidate, TaskState
from mnemoflow.nodes.team.agents import Message

__all__ = [
    "COMPARE_SYSTEM",
    "CRITIQUE_SYSTEM",
    "KEY_STEPS_SYSTEM",
    "LEARN_SYSTEM",
    "MERGE_SYSTEM",
    "MISTAKE_SYSTEM",
    "PREFER_CHANGES",
    "PROJECT_SYSTEM",
    "RATE_EACH_SYSTEM",
    "RATE_SYSTEM",
    "SPARSIFY_SYSTEM",
    "TEMPERATURE",
    "Consolidated",
    "Consolidation",
    "Kept",
    "KeySteps",
    "Lesson",
    "Mistake",
    "Operation",
    "Operations",
    "ProjectedInsights",
    "Rating",
    "Ratings",
    "compare_messages",
    "critique_messages",
    "key_steps_messages",
    "lesson_messages",
    "memory_text",
    "merge_messages",
    "mistake_messages",
    "project_messages",
    "rate_each_messages",
    "rate_messages",
    "read_score",
    "sparsify_messages",
    "transcript",
]


# -- retrieval: reply schemas -------------------------------------------------------------------------------------


class Rating(BaseModel):
    index: int
    """The candidate's number in the prompt (from 1)."""
    score: int = Field(ge=0, le=10)


class Ratings(BaseModel):
    REPLY_TOKENS: ClassVar[int] = 600
    ratings: list[Rating] = Field(default_factory=list, max_length=200)


class Kept(BaseModel):
    REPLY_TOKENS: ClassVar[int] = 300
    keep: list[int] = Field(default_factory=list, max_length=1000)
    """Numbers (from 1) of the utterances worth keeping."""


class ProjectedInsights(BaseModel):
    REPLY_TOKENS: ClassVar[int] = 600
    insights: list[str] = Field(default_factory=list, max_length=50)


# -- evolution: reply schemas -------------------------------------------------------------------------------------


class _Reply(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KeySteps(_Reply):
    REPLY_TOKENS: ClassVar[int] = 500
    steps: list[str] = Field(
        default_factory=list, max_length=20, description="The overall approach, then one line per essential step."
    )


class Mistake(_Reply):
    REPLY_TOKENS: ClassVar[int] = 200
    reason: str = Field(max_length=2000, description="The most likely cause of the failure, in one or two sentences.")


class Lesson(_Reply):
    REPLY_TOKENS: ClassVar[int] = 200
    text: str = Field(max_length=600, description="One general rule, in the form 'do X, because Y'.")


class Operation(_Reply):
    op: Literal["ADD", "EDIT", "REMOVE", "AGREE"]
    insight: int | None = Field(None, description="The listed insight's number (EDIT, REMOVE, AGREE); null for ADD.")
    text: str = Field("", max_length=600, description="The rule, general, in the form 'do X, because Y'.")


class Operations(_Reply):
    REPLY_TOKENS: ClassVar[int] = 800
    operations: list[Operation] = Field(default_factory=list, max_length=12)


class Consolidated(_Reply):
    text: str = Field(min_length=1, max_length=600)
    merges: list[int] = Field(min_length=1, max_length=10, description="The numbers of the listed insights it replaces.")


class Consolidation(_Reply):
    REPLY_TOKENS: ClassVar[int] = 1000
    insights: list[Consolidated] = Field(default_factory=list, max_length=10)


# -- retrieval: prompts -------------------------------------------------------------------------------------------

RATE_SYSTEM = (
    "You judge how useful past tasks are for solving a new task. For each numbered past task, rate from 1 (no help) "
    "to 10 (its approach can be reused directly) how much knowing how it was solved helps with the new task. "
    'Reply with JSON {"ratings": [{"index": 1, "score": 7}]}, one entry per past task.'
)
SPARSIFY_SYSTEM = (
    "You condense the record of a past team interaction to what matters for a new task. You get the new task, the "
    "past task with its outcome, and the numbered messages the team exchanged on it. Keep only the messages that "
    "would help or warn the team on the new task: decisions, key steps, mistakes and their corrections. "
    'Reply with JSON {"keep": [1, 3]}: the numbers of the messages to keep.'
)
RATE_EACH_SYSTEM = "You are an agent designed to score the relevance between two pieces of text."
RATE_EACH_INSTRUCTION = (
    "Rate from 1 to 10 how relevant and helpful the successful case below is for the ongoing task. Do not "
    "summarize the two; reply with the score."
)
PROJECT_SYSTEM = (
    "You adapt general lessons from earlier tasks to one member of a team. Given the member's role, the new task "
    "and numbered lessons, rewrite the lessons that matter for this role as short, concrete advice for it, most "
    'important first; leave out those that do not apply to it. Reply with JSON {"insights": ["..."]}.'
)


def _bullets(lines: Sequence[str], indent: str = "  ") -> str:
    return "\n".join(f"{indent}- {line}" for line in lines)


def rate_messages(task: str, candidates: Sequence[Candidate]) -> list[ChatMessage]:
    """Rate each numbered past task (with its key steps) for the new task."""
    past = "\n\n".join(
        f"[{number}] Task: {candidate.task}" + (f"\nKey steps:\n{_bullets(candidate.key_steps)}" if candidate.key_steps else "")
        for number, candidate in enumerate(candidates, start=1)
    )
    return [{"role": "system", "content": RATE_SYSTEM}, {"role": "user", "content": f"New task: {task}\n\nPast tasks:\n{past}"}]


def rate_each_messages(task: str, candidate: Candidate) -> list[ChatMessage]:
    """Score one past success (its task and key steps) 1-10 for the new task, as plain text (the reference's shape)."""
    steps = f"\nKey steps:\n{_bullets(candidate.key_steps)}" if candidate.key_steps else ""
    user = f"{RATE_EACH_INSTRUCTION}\n\nSuccess case:\nTask: {candidate.task}{steps}\n\nOngoing task:\n{task}\n\nScore:"
    return [{"role": "system", "content": RATE_EACH_SYSTEM}, {"role": "user", "content": user}]


_INTEGER = re.compile(r"\d+")


def read_score(reply: str) -> int | None:
    """The first integer of a plain-text rating, capped at 10; None when the reply holds none."""
    found = _INTEGER.search(reply)
    return min(int(found.group()), 10) if found else None


def sparsify_messages(task: str, candidate: Candidate, utterances: Sequence[str]) -> list[ChatMessage]:
    """Pick the numbered messages of a past interaction that matter for the new task."""
    lines = "\n".join(f"[{number}] {line}" for number, line in enumerate(utterances, start=1))
    user = f"New task: {task}\n\nPast task ({candidate.status}): {candidate.task}\n\nMessages:\n{lines}"
    return [{"role": "system", "content": SPARSIFY_SYSTEM}, {"role": "user", "content": user}]


def project_messages(task: str, role: str, insights: Sequence[str]) -> list[ChatMessage]:
    """Rewrite the numbered lessons as advice for one role."""
    lessons = "\n".join(f"{number}. {text}" for number, text in enumerate(insights, start=1))
    user = f"Role: {role}\nNew task: {task}\n\nLessons:\n{lessons}"
    return [{"role": "system", "content": PROJECT_SYSTEM}, {"role": "user", "content": user}]


def memory_text(state: TaskState, role: str) -> str:
    """What one role reads: its insights, the successes' key steps, the condensed interactions, the failures' reasons."""
    lessons = state.role_insights.get(role) or [insight.text for insight in state.insights]
    sections = []
    if lessons:
        sections.append("Lessons from earlier tasks:\n" + "\n".join(f"{n}. {text}" for n, text in enumerate(lessons, start=1)))
    if state.successes:
        body = "\n".join(f"- {c.task}" + (f"\n{_bullets(c.key_steps)}" if c.key_steps else "") for c in state.successes)
        sections.append(f"Similar tasks that succeeded, with their key steps:\n{body}")
    if state.trajectories:
        body = "\n".join(
            f"- {t.task} ({t.status}):\n" + "\n".join(f"  {line}" for line in t.utterances) for t in state.trajectories
        )
        sections.append(f"What the team said on them (condensed):\n{body}")
    if state.failures:
        body = "\n".join(f"- {c.task}" + (f": {c.fail_reason}" if c.fail_reason else "") for c in state.failures)
        sections.append(f"Similar tasks that failed, and why:\n{body}")
    return "\n\n".join(sections)


# -- evolution: prompts -------------------------------------------------------------------------------------------

TEMPERATURE = 0.1
"""The sampling temperature of every evolution call (key steps, mistake, revision, merge)."""

KEY_STEPS_SYSTEM = """You summarize how a team of agents worked on a task. From the task, the team's messages and
the outcome, reply with JSON {"steps": ["...", ...]}: first the overall approach in one line, then one short line
per essential step, in order. Leave out steps that changed nothing; add nothing that is not in the messages."""

MISTAKE_SYSTEM = """A team of agents failed a task. Compare what the team finally produced with what the task
required and name the most likely mistake. Reply with JSON {"reason": "..."}: one or two sentences, concrete about
what went wrong, without repeating the task."""

LEARN_SYSTEM = """You distil one lesson from a team's finished task, for later tasks like it. You get the task, its
outcome, its key steps and the team's messages (for a failure, also its likely mistake). Reply with JSON
{"text": "do X, because Y"}: one general rule, reusable across similar tasks, never naming this task's details.
After a success, say what made it work; after a failure, what to do differently to avoid the mistake."""

_OPS_RULES = """Reply with JSON {"operations": [{"op": "ADD|EDIT|REMOVE|AGREE", "insight": <number or null>, "text": "..."}]},
at most 4 operations, at most one per insight:
- ADD: a new rule not covered by the existing ones (insight null).
- EDIT: rewrite existing rule <number> to make it more accurate or general (text: the new rule).
- REMOVE: existing rule <number> is wrong, misleading or duplicated (text: why).
- AGREE: existing rule <number> is confirmed by these tasks (text: the rule).
Rules must be general and reusable across tasks, in the form "do X, because Y", never naming one task's details.
Reply with an empty list when nothing should change."""

COMPARE_SYSTEM = (
    "You improve a list of rules that help a team of agents solve tasks, by comparing a successful attempt with a failed one at similar tasks.\n"
    + _OPS_RULES
)
CRITIQUE_SYSTEM = (
    "You improve a list of rules that help a team of agents solve tasks, by studying several successful attempts at similar tasks.\n"
    + _OPS_RULES
)
PREFER_CHANGES = "\nThe list is full: prefer EDIT, REMOVE and AGREE over ADD."

MERGE_SYSTEM = """You consolidate rules that help a team of agents solve similar tasks. Merge rules that say the
same thing or that one general rule covers; keep distinct lessons apart. Reply with JSON
{"insights": [{"text": "do X, because Y", "merges": [numbers of the listed rules it replaces]}]}. Rules you leave
out of every "merges" list stay as they are."""


def _numbered(texts: Sequence[str]) -> str:
    return "\n".join(f"{number}. {text}" for number, text in enumerate(texts, 1)) or "(none yet)"


def transcript(messages: Iterable[Message]) -> str:
    """The team's messages as ``speaker -> addressee: text`` lines (stored on the query as its trajectory)."""
    return "\n".join(f"{m.speaker} -> {m.addressee}: {m.text}" for m in messages) or "(no messages)"


def key_steps_messages(task: str, transcript: str, outcome: str) -> list[ChatMessage]:
    """Summarize the team's work on the task as key steps."""
    user = f"Task: {task}\n\nOutcome: {outcome}\n\nMessages:\n{transcript}"
    return [{"role": "system", "content": KEY_STEPS_SYSTEM}, {"role": "user", "content": user}]


def mistake_messages(task: str, transcript: str, outcome: str) -> list[ChatMessage]:
    """Name the likely mistake of a failed task."""
    user = f"Task: {task}\n\nOutcome: {outcome}\n\nMessages:\n{transcript}"
    return [{"role": "system", "content": MISTAKE_SYSTEM}, {"role": "user", "content": user}]


def lesson_messages(task: str, outcome: str, key_steps: Sequence[str], fail_reason: str, transcript: str) -> list[ChatMessage]:
    """Distil the finished task's lesson (the paper's summarizer of the interaction and its outcome)."""
    lines = [f"Task: {task}", f"Outcome: {outcome}"]
    if key_steps:
        lines.append("Key steps:\n" + _bullets(key_steps, indent=""))
    if fail_reason:
        lines.append(f"Likely mistake: {fail_reason}")
    lines.append(f"Messages:\n{transcript}")
    return [{"role": "system", "content": LEARN_SYSTEM}, {"role": "user", "content": "\n\n".join(lines)}]


def _attempt(query: NodeRecord, *, with_trajectory: bool) -> str:
    p = query.properties
    lines = [f"Task: {p.get('task', '')}", f"Outcome: {p.get('status', '')}"]
    if p.get("key_steps"):
        lines.append("Key steps:\n" + "\n".join(f"- {step}" for step in p["key_steps"]))
    if with_trajectory and p.get("trajectory"):
        lines.append(f"Messages:\n{p['trajectory']}")
    if p.get("fail_reason"):
        lines.append(f"Likely mistake: {p['fail_reason']}")
    return "\n".join(lines)


def compare_messages(success: NodeRecord, failure: NodeRecord, rules: Sequence[str], full: bool) -> list[ChatMessage]:
    """Operations on the numbered rules from a success and a failure at similar tasks (``full``: discourage ADD)."""
    user = (
        f"Successful attempt:\n{_attempt(success, with_trajectory=True)}\n\nFailed attempt:\n"
        f"{_attempt(failure, with_trajectory=True)}\n\nExisting rules:\n{_numbered(rules)}"
    )
    return [{"role": "system", "content": COMPARE_SYSTEM + (PREFER_CHANGES if full else "")}, {"role": "user", "content": user}]


def critique_messages(successes: Sequence[NodeRecord], rules: Sequence[str], full: bool) -> list[ChatMessage]:
    """Operations on the numbered rules from several successes at similar tasks (``full``: discourage ADD)."""
    attempts = "\n\n".join(f"Attempt {i}:\n{_attempt(q, with_trajectory=False)}" for i, q in enumerate(successes, 1))
    user = f"Successful attempts:\n{attempts}\n\nExisting rules:\n{_numbered(rules)}"
    return [{"role": "system", "content": CRITIQUE_SYSTEM + (PREFER_CHANGES if full else "")}, {"role": "user", "content": user}]


def merge_messages(rules: Sequence[str]) -> list[ChatMessage]:
    """Consolidate the numbered rules of one cluster."""
    return [{"role": "system", "content": MERGE_SYSTEM}, {"role": "user", "content": f"Rules:\n{_numbered(rules)}"}]


# -- offline stand-ins ----------------------------------------------------------------------------------------------

_NUMBERED = re.compile(r"^\[(\d+)\]", re.MULTILINE)
_LESSON = re.compile(r"^\d+\. (.+)$", re.MULTILINE)


def _user(messages: list[ChatMessage]) -> str:
    return str(messages[-1].get("content", ""))


@offline_handler(Ratings)
def _offline_ratings(messages: list[ChatMessage]) -> Ratings:
    """Offline, every candidate is rated 5 (similarity decides)."""
    return Ratings(ratings=[Rating(index=int(number), score=5) for number in _NUMBERED.findall(_user(messages))])


@offline_handler(Kept)
def _offline_kept(messages: list[ChatMessage]) -> Kept:
    """Offline, every utterance is kept."""
    return Kept(keep=[int(number) for number in _NUMBERED.findall(_user(messages))])


@offline_handler(ProjectedInsights)
def _offline_projected(messages: list[ChatMessage]) -> ProjectedInsights:
    """Offline, the general lessons are kept as they are."""
    return ProjectedInsights(insights=_LESSON.findall(_user(messages).split("Lessons:", 1)[-1]))


@offline_handler(KeySteps)
def _offline_key_steps(messages: list[ChatMessage]) -> KeySteps:
    """Without a model: the solver's messages are the steps."""
    lines = _user(messages).splitlines()
    return KeySteps(steps=[line.split(": ", 1)[-1][:200] for line in lines if line.startswith("solver ->")][:5])


@offline_handler(Mistake)
def _offline_mistake(messages: list[ChatMessage]) -> Mistake:
    return Mistake(reason="The final solution did not meet the goal the task set.")


@offline_handler(Lesson)
def _offline_lesson(messages: list[ChatMessage]) -> Lesson:
    """Without a model: one fixed lesson per outcome."""
    if "Outcome: failed" in _user(messages):
        return Lesson(text="Check the result against what the task asks before answering, because a similar task failed.")
    return Lesson(text="Follow the key steps of a similar solved task in order, because they worked before.")


@offline_handler(Operations)
def _offline_operations(messages: list[ChatMessage]) -> Operations:
    """Without a model the insights stay as they are."""
    return Operations(operations=[])


@offline_handler(Consolidation)
def _offline_consolidation(messages: list[ChatMessage]) -> Consolidation:
    return Consolidation(insights=[])
