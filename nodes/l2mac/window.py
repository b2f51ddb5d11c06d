"""The context window: its size in tokens, trimming it for a summary, and spotting a model that goes round in circles."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from mnemoflow.llm import Tool
from mnemoflow.nodes.tokens import count_tokens

__all__ = ["MESSAGE_OVERHEAD", "context_size", "repeats", "tools_size", "trim_oldest"]

Message = dict[str, Any]
MESSAGE_OVERHEAD = 4
"""Tokens a message costs besides its text (role and separators)."""
LOOP_BLOCKS = (2, 3, 4)
"""Lengths of a block of messages that, repeated at the end of the context, count as a loop."""


def _message_size(message: Message) -> int:
    size = MESSAGE_OVERHEAD + count_tokens(str(message.get("content") or ""))
    for call in message.get("tool_calls") or []:
        size += count_tokens(call["function"]["name"]) + count_tokens(call["function"]["arguments"])
    return size


def tools_size(tools: Sequence[Tool]) -> int:
    return count_tokens(json.dumps([tool.schema() for tool in tools]))


def context_size(messages: Sequence[Message], tools: Sequence[Tool] = ()) -> int:
    """Tokens the messages and tool schemas take in the context window (as :func:`count_tokens` counts them)."""
    return sum(_message_size(message) for message in messages) + (tools_size(tools) if tools else 0)


def trim_oldest(messages: list[Message], *, keep: int, budget: int) -> list[Message]:
    """Drop the oldest messages after the first ``keep`` until the rest fit in ``budget`` tokens.

    An assistant message leaves with the tool results that answer it, so no result is left without its call (which
    an OpenAI server refuses).
    """
    head, rest = messages[:keep], list(messages[keep:])
    while rest and context_size(head + rest) > budget:
        rest.pop(0)
        while rest and rest[0].get("role") == "tool":
            rest.pop(0)
    return head + rest


def _signature(message: Message) -> str:
    calls = [(call["function"]["name"], call["function"]["arguments"]) for call in message.get("tool_calls") or []]
    return json.dumps([message.get("role"), message.get("content"), calls])


def repeats(messages: Sequence[Message]) -> bool:
    """Whether the context ends with the same block of 2, 3 or 4 messages twice in a row (tool call ids aside)."""
    signatures = [_signature(message) for message in messages]
    return any(len(signatures) >= 2 * size and signatures[-size:] == signatures[-2 * size : -size] for size in LOOP_BLOCKS)
