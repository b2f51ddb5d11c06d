"""Scoring answers against references, as reading-comprehension benchmarks do (NarrativeQA, SQuAD, ∞Bench).

Short answers are compared after the SQuAD normalisation (lower case, no punctuation, no articles ``a``/``an``/
``the``, single spaces): exact match, and F1 over the tokens; with several acceptable answers an answer gets the
best of its scores against each. A multiple-choice reply is read for the option letter it chose, however a model
wrote it (``[B]``, ``B.``, ``The answer is B``, the option's own text), and is right when that letter is the
answer. The functions know nothing of any mechanism, so every evaluation can score the same way.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping

__all__ = ["choice_letter", "exact_match", "normalize_answer", "token_f1"]

_ARTICLES = re.compile(r"\b(?:a|an|the)\b")


def normalize_answer(text: str) -> str:
    """``text`` in the form answers are compared in, SQuAD's: lower case, punctuation deleted (of any script, so
    ``Carrow’s`` is ``carrows`` like ``Carrow's``), the articles a/an/the removed, whitespace collapsed."""
    unpunctuated = "".join(char for char in text.lower() if not unicodedata.category(char).startswith("P"))
    return " ".join(_ARTICLES.sub(" ", unpunctuated).split())


def exact_match(prediction: str, references: Iterable[str]) -> float:
    """1.0 when the normalised prediction equals a normalised reference, else 0.0 (an empty prediction never matches)."""
    predicted = normalize_answer(prediction)
    return float(bool(predicted) and any(predicted == normalize_answer(reference) for reference in references))


def token_f1(prediction: str, references: Iterable[str]) -> float:
    """The best token F1 of the normalised prediction against each normalised reference (0.0 with no tokens)."""
    predicted = normalize_answer(prediction).split()
    best = 0.0
    for reference in references:
        expected = normalize_answer(reference).split()
        common = sum((Counter(predicted) & Counter(expected)).values())
        if common:
            precision, recall = common / len(predicted), common / len(expected)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


_BRACKETED = re.compile(r"[\[(]\s*([A-Z])\s*[\])]")
_LEADING = re.compile(r"^[\s*_`'\"]*([A-Z])(?:[\s*_`'\"]*$|[.):\]]|\s+[-–—:])")
_NAMED = re.compile(r"\b(?i:answer|option|choice)(?:\s+(?i:is))?\s*[:\-]?\s*\**([A-Z])\b(?![-'’])")


def choice_letter(reply: str, options: Mapping[str, str]) -> str | None:
    """The option letter ``reply`` chose, or None when it chose none of ``options`` (letter -> text).

    Tried in order: a bracketed letter (``[B]``, ``(B)``); a letter that opens the reply and stands alone (``B``,
    ``B.``, ``B) To pay...``, but not the article of ``A drover...``); ``answer is B`` / ``option B``; the text of
    exactly one option, whole, in the reply. Letters that are not options do not count.
    """
    for pattern in (_BRACKETED, _LEADING, _NAMED):
        for match in pattern.finditer(reply):
            if match.group(1) in options:
                return match.group(1)
    said = f" {normalize_answer(reply)} "
    quoted = [letter for letter, text in options.items() if normalize_answer(text) and f" {normalize_answer(text)} " in said]
    return quoted[0] if len(quoted) == 1 else None
