"""What one model call was, kept small enough to store in a run's record: the prompt, the reply and the figures.

Every public call of the gateway (``text``, ``structured``, ``call_tools``, ``forced_tool``) leaves one
:class:`CallRecord` on the gateway's ``calls``; the graph engine puts a node's records on its trace event, so a
run page can show each call's prompt, reply, tokens, latency, cache hit and retries.

A record is bounded whatever was sent: the first message and the last :data:`KEPT_LAST_MESSAGES` (the system
prompt and the turns that led to the reply), each content cut to :data:`MESSAGE_CHARS` characters, the reply to
:data:`REPLY_CHARS`. ``as_dict()`` is its JSON shape::

    {"kind": "structured", "name": "Verdict",
     "messages": [{"role": "system", "content": "..."}, {"role": "user", "content": "...", "chars": 5210}],
     "messages_omitted": 0, "reply": "{...}", "prompt_tokens": 41, "completion_tokens": 9, "seconds": 0.21,
     "cache_hit": false, "requests": 2, "retries": 1, "reasks": 0}

``chars`` on a message (``reply_chars`` beside the reply) is there only when the text was cut: it is the full
length. ``messages_omitted`` counts the messages left out between the first and the last ones kept. ``name`` is
there for a structured call (the schema) and a tool call (the tool forced, or the tools offered); ``error`` when
the call raised, and then ``reply`` is the last raw reply when there was one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from mnemoflow.llm.usage import Usage

__all__ = ["KEPT_LAST_MESSAGES", "MAX_CALL_RECORDS", "MESSAGE_CHARS", "REPLY_CHARS", "CallKind", "CallRecord", "turn_text"]

CallKind = Literal["text", "structured", "tools", "forced_tool"]
"""Which gateway method made the call: ``text``, ``structured``, ``call_tools`` or ``forced_tool``."""
MESSAGE_CHARS = 1500
"""A message's content is cut to this many characters."""
REPLY_CHARS = 2000
"""A reply is cut to this many characters."""
KEPT_LAST_MESSAGES = 5
"""Messages kept from the end of the prompt (besides its first message)."""
MAX_CALL_RECORDS = 200
"""Records one gateway (one node's fork) keeps; calls past that are only counted (``calls_omitted``)."""


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One model call, bounded for display (see the module docstring for its JSON shape)."""

    kind: CallKind
    name: str | None
    """The schema's name (structured), the tool's (forced_tool), the tools offered, comma-separated (tools)."""
    messages: list[dict[str, Any]]
    """``{"role", "content"}`` each, ``"chars"`` when the content was cut; the first and the last few only."""
    messages_omitted: int
    reply: str | None
    """The reply: the text, the validated JSON (structured, forced_tool), or the content and the calls (tools)."""
    reply_chars: int | None
    """The reply's full length when it was cut, else None."""
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    """Wall time of the whole call: retries, re-asks and waiting for a slot included."""
    cache_hit: bool
    """Whether the reply came from the response cache (no request sent)."""
    requests: int
    retries: int
    """Requests repeated after a transport fault (429, 5xx, timeout, dropped connection)."""
    reasks: int
    """Requests repeated because a reply was cut off or did not validate."""
    error: str | None = None

    @classmethod
    def of(
        cls,
        kind: CallKind,
        name: str | None,
        messages: Sequence[dict[str, Any]],
        reply: str | None,
        usage: Usage,
        seconds: float,
        error: str | None = None,
    ) -> CallRecord:
        """The record of a call that sent ``messages`` and got ``reply``, with the figures of its own ``usage``."""
        kept = list(messages[:1]) + list(messages[1:][-KEPT_LAST_MESSAGES:])
        shown_reply, reply_chars = _cut(reply, REPLY_CHARS) if reply is not None else (None, None)
        return cls(
            kind=kind,
            name=name,
            messages=[_message(message) for message in kept],
            messages_omitted=len(messages) - len(kept),
            reply=shown_reply,
            reply_chars=reply_chars,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            seconds=round(seconds, 6),
            cache_hit=bool(usage.cache_hits) and not usage.requests,
            requests=usage.requests,
            retries=usage.retries,
            reasks=usage.reasks,
            error=error,
        )

    def as_dict(self) -> dict[str, Any]:
        """The record as JSON values; ``name``, ``reply``, ``reply_chars`` and ``error`` only when set."""
        record: dict[str, Any] = {"kind": self.kind}
        if self.name is not None:
            record["name"] = self.name
        record["messages"] = self.messages
        record["messages_omitted"] = self.messages_omitted
        if self.reply is not None:
            record["reply"] = self.reply
        if self.reply_chars is not None:
            record["reply_chars"] = self.reply_chars
        record.update(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            seconds=self.seconds,
            cache_hit=self.cache_hit,
            requests=self.requests,
            retries=self.retries,
            reasks=self.reasks,
        )
        if self.error is not None:
            record["error"] = self.error
        return record


def _cut(text: str, limit: int) -> tuple[str, int | None]:
    """``text`` cut to ``limit`` characters, and its full length when it was cut."""
    return (text, None) if len(text) <= limit else (text[:limit], len(text))


def turn_text(content: str, calls: Sequence[tuple[str, str]]) -> str:
    """An assistant turn as text: its content, then one line ``name(arguments)`` per tool call."""
    return "\n".join([*([content] if content else []), *(f"{name}({arguments})" for name, arguments in calls)])


def _message(message: dict[str, Any]) -> dict[str, Any]:
    """A prompt message as ``{"role", "content"}``: text parts joined, an assistant's tool calls as lines, cut."""
    content = message.get("content")
    if isinstance(content, list):  # content parts: keep their text
        content = "\n".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    functions = [call.get("function") or {} for call in message.get("tool_calls") or [] if isinstance(call, dict)]
    calls = [(str(function.get("name")), str(function.get("arguments"))) for function in functions]
    text = turn_text(content if isinstance(content, str) else "", calls)
    shown, chars = _cut(text, MESSAGE_CHARS)
    kept: dict[str, Any] = {"role": str(message.get("role", "")), "content": shown}
    if chars is not None:
        kept["chars"] = chars
    return kept
