"""Measuring and bounding text for prompts, shared by the mechanisms: an approximate token count (no tokenizer
download, the same count everywhere) and a clip that keeps a long text's head and tail."""

from __future__ import annotations

import re

__all__ = ["clip", "count_tokens"]

_TOKEN = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    """The approximate number of tokens of ``text`` (words and punctuation marks)."""
    return len(_TOKEN.findall(text))


def clip(text: str, limit: int) -> str:
    """``text`` cut to about ``limit`` characters, its head and tail kept around a marker saying how much went."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n... [{len(text) - limit} characters cut] ...\n{text[-half:]}"
