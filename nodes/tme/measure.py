"""What the evaluation measures: stale facts in a prompt, and the full-history prompt a linear agent would send.

A stale fact is a value the user has replaced (``Forest.superseded_values``) that appears in a prompt outside
the user's own current message (the user may well name an old value: "wasn't I flying from Boston?") and outside
the lines that show a checked step's earlier values as replaced (:data:`~mnemoflow.nodes.tme.prompt.EARLIER`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from mnemoflow.nodes.tme.agents import ANSWER_SYSTEM
from mnemoflow.nodes.tme.prompt import EARLIER
from mnemoflow.nodes.tokens import count_tokens

__all__ = ["count_tokens", "full_history_prompt", "stale_facts"]


def stale_facts(prompt: str, superseded: Iterable[str], utterance: str) -> list[str]:
    """The superseded values found in ``prompt`` once the current utterance and the lines of a checked step's
    earlier values are taken out (case-insensitive, whole words)."""
    text = "\n".join(line for line in prompt.replace(utterance, " ").splitlines() if not line.startswith(EARLIER))
    return sorted(value for value in set(superseded) if re.search(rf"(?<!\w){re.escape(value)}(?!\w)", text, re.IGNORECASE))


def full_history_prompt(turns: list[tuple[str, str]], utterance: str) -> str:
    """The baseline: every earlier turn verbatim (user message and reply), then the new message."""
    lines = [ANSWER_SYSTEM, ""]
    for said, replied in turns:
        lines += [f"User: {said}", f"Assistant: {replied}"]
    lines.append(f"User: {utterance}")
    return "\n".join(lines)
