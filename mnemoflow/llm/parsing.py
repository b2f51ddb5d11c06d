"""Finding the JSON in a model's reply: bare, fenced in ```json, or with prose around it."""

from __future__ import annotations

import json
import re
from typing import Any

from mnemoflow.errors import ReplyFormatError

__all__ = ["close_json", "extract_json", "json_begun", "reply_json"]

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)


class _Scanner:
    """Walks JSON-like text a character at a time: the open arrays and objects, and whether it is inside a string
    (a quote opens one only inside brackets, so prose around the JSON does not count)."""

    def __init__(self) -> None:
        self.closers: list[str] = []
        self.in_string = False
        self._escaped = False

    def step(self, character: str) -> bool:
        """Take one character; True when it is outside strings."""
        if self.in_string:
            if self._escaped:
                self._escaped = False
            elif character == "\\":
                self._escaped = True
            elif character == '"':
                self.in_string = False
            return False
        if character == '"' and self.closers:
            self.in_string = True
            return False
        if character in "{[":
            self.closers.append("}" if character == "{" else "]")
        elif self.closers and character == self.closers[-1]:
            self.closers.pop()
        return True


def _balanced_spans(text: str) -> list[str]:
    """Every top-level ``{...}`` or ``[...]`` region, in order, honouring strings and escapes."""
    scanner, spans, start = _Scanner(), [], -1
    for index, character in enumerate(text):
        was_open = bool(scanner.closers)
        if not scanner.step(character):
            continue
        if character in "{[" and not was_open:
            start = index
        elif character in "}]" and was_open and not scanner.closers:
            spans.append(text[start : index + 1])
    return spans


def extract_json(text: str) -> Any:
    """The JSON value a reply carries; raises ``ValueError`` saying why none could be read."""
    stripped = text.strip()
    candidates = [stripped, *(match.strip() for match in _FENCE.findall(stripped)), *_balanced_spans(stripped)]
    for candidate in candidates:
        try:
            return json.loads(candidate, strict=False)  # raw newlines and tabs inside strings, as small models write
        except json.JSONDecodeError:
            continue
    if not stripped:
        raise ReplyFormatError("the reply is empty")
    raise ReplyFormatError(f"no JSON value in the reply (it starts {stripped[:80]!r})")


def close_json(text: str) -> Any:
    """The JSON value a reply cut off at its length cap was writing, closed where it stopped (an open string, then
    the open arrays and objects), or else after its last complete member; ``None`` when neither parses."""
    start = min((index for index in (text.find("{"), text.find("[")) if index >= 0), default=-1)
    if start < 0:
        return None
    body = text[start:]
    closers, in_string, last_comma = _open_parts(body)
    attempts = [body + ('"' if in_string else "") + closers]
    if last_comma > 0:
        attempts.append(body[:last_comma] + _open_parts(body[:last_comma])[0])
    for attempt in attempts:
        try:
            return json.loads(attempt, strict=False)
        except json.JSONDecodeError:
            continue
    return None


def _open_parts(text: str) -> tuple[str, bool, int]:
    """What closes ``text``'s open arrays and objects, whether it ends inside a string, and where its last comma
    outside strings is (-1: none)."""
    scanner, last_comma = _Scanner(), -1
    for index, character in enumerate(text):
        if scanner.step(character) and character == ",":
            last_comma = index
    return "".join(reversed(scanner.closers)), scanner.in_string, last_comma


def reply_json(text: str, *, cut_off: bool) -> Any:
    """The JSON a reply carries; a reply still cut at its cap (``cut_off``) after more room is closed where it stopped,
    if it can be (a small model under a grammar may never close a string)."""
    try:
        return extract_json(text)
    except ValueError:
        closed = close_json(text) if cut_off else None
        if closed is None:
            raise
        return closed


def json_begun(text: str) -> bool:
    """Whether a cut-off reply was writing JSON (more room may finish it), not prose running on (the re-ask may)."""
    return text.lstrip().startswith(("{", "[", "```"))
