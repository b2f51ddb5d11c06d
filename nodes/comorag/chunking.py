"""Token-aware chunking of a book and the episodic window size.

Tokens are approximated without a tokenizer model: a token is a run of word characters or one punctuation
character (``\\w+|[^\\w\\s]``). For English prose this lands within a few per cent of the GPT tokenizers' count
and needs no download; ``tiktoken`` is not used because it fetches its vocabulary files at run time.
"""

from __future__ import annotations

import math
import re

from mnemoflow.errors import UsageError
from mnemoflow.nodes.tokens import count_tokens

__all__ = ["DEFAULT_CHUNK_TOKENS", "chunk_text", "count_tokens", "episode_window"]

DEFAULT_CHUNK_TOKENS = 512
"""Chunk size of the paper (its Table 6) and of the reference code's chunking script."""

_PARAGRAPH = re.compile(r"\n\s*\n")
_SENTENCE = re.compile(r"(?<=[.!?…])[\"'”’)]*\s+")


def _split_long(sentence: str, max_tokens: int) -> list[str]:
    """Cut a sentence longer than ``max_tokens`` at word boundaries."""
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for word in sentence.split():
        tokens = count_tokens(word)
        if current and size + tokens > max_tokens:
            pieces.append(" ".join(current))
            current, size = [], 0
        current.append(word)
        size += tokens
    if current:
        pieces.append(" ".join(current))
    return pieces


def _units(text: str, max_tokens: int) -> list[tuple[str, bool]]:
    """Sentences (or pieces of over-long sentences), each flagged when it starts a paragraph."""
    units: list[tuple[str, bool]] = []
    for paragraph in _PARAGRAPH.split(text):
        paragraph = " ".join(paragraph.split())
        if not paragraph:
            continue
        first = True
        for sentence in _SENTENCE.split(paragraph) if count_tokens(paragraph) > max_tokens else [paragraph]:
            for piece in _split_long(sentence, max_tokens) if count_tokens(sentence) > max_tokens else [sentence]:
                if piece.strip():
                    units.append((piece.strip(), first))
                    first = False
    return units


def chunk_text(text: str, max_tokens: int = DEFAULT_CHUNK_TOKENS) -> list[str]:
    """Split ``text`` into chunks of at most ``max_tokens`` tokens, in reading order.

    Whole paragraphs are packed while they fit; a paragraph that does not fit is split at sentence
    boundaries, and a sentence longer than a chunk at word boundaries. Paragraphs inside a chunk stay
    separated by a blank line.
    """
    if max_tokens < 1:
        raise UsageError(f"max_tokens must be at least 1, not {max_tokens}")
    chunks: list[str] = []
    current = ""
    size = 0
    for unit, starts_paragraph in _units(text, max_tokens):
        tokens = count_tokens(unit)
        if current and size + tokens > max_tokens:
            chunks.append(current)
            current, size = "", 0
        separator = "" if not current else ("\n\n" if starts_paragraph else " ")
        current += separator + unit
        size += tokens
    if current:
        chunks.append(current)
    return chunks


def episode_window(chunk_count: int) -> int:
    """Chunks per episodic window for a book of ``chunk_count`` chunks.

    2 for at most 5 chunks (as the reference code does), then 3, 5, 8 and 10 up to 20, 50, 100 and 200 chunks,
    and beyond that ``2 * log2(chunk_count)`` rounded down, kept between 10 and 20.
    """
    if chunk_count <= 5:
        return 2
    for limit, window in ((20, 3), (50, 5), (100, 8), (200, 10)):
        if chunk_count <= limit:
            return window
    return min(20, max(10, math.floor(2 * math.log2(chunk_count))))
