"""An approximate token count shared by the mechanisms: no tokenizer download, the same count everywhere."""

from __future__ import annotations

import re

__all__ = ["count_tokens"]

_TOKEN = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    """The approximate number of tokens of ``text`` (words and punctuation marks)."""
    return len(_TOKEN.findall(text))
