"""Finding the JSON in a model's reply: bare, fenced in ```json, or with prose around it."""

from __future__ import annotations

import json
import re
from typing import Any

from mnemoflow.errors import ReplyFormatError

__all__ = ["extract_json"]

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
            return json.loads(candidate)
        except json.JSONDecodeError:
            continue
    if not stripped:
        raise ReplyFormatError("the reply is empty")
    raise ReplyFormatError(f"no JSON value in the reply (it starts {stripped[:80]!r})")
