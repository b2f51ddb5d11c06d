"""Finding the JSON in a model's reply: bare, fenced in ```json, or with prose around it."""

from __future__ import annotations

import json
import re
from typing import Any

from mnemoflow.errors import ReplyFormatError

__all__ = ["close_json", "extract_json"]

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)


def _balanced_spans(text: str) -> list[str]:
    """Every top-level ``{...}`` or ``[...]`` region, in order, honouring strings and escapes."""
    spans, depth, start, in_string, escaped = [], 0, -1, False, False
    closing = {"{": "}", "[": "]"}
    stack: list[str] = []
    for index, character in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif character == "\\":
                escaped = True
            elif character == '"':
                in_string = False
            continue
        if character == '"' and depth:
            in_string = True
        elif character in closing:
            if depth == 0:
                start = index
            stack.append(closing[character])
            depth += 1
        elif depth and character == stack[-1]:
            stack.pop()
            depth -= 1
            if depth == 0:
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
    stack: list[str] = []
    in_string = escaped = False
    last_comma = -1
    for index, character in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif character == "\\":
                escaped = True
            elif character == '"':
                in_string = False
        elif character == '"':
            in_string = True
        elif character in "{[":
            stack.append("}" if character == "{" else "]")
        elif character in "}]" and stack:
            stack.pop()
        elif character == ",":
            last_comma = index
    return "".join(reversed(stack)), in_string, last_comma
