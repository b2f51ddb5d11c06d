"""Tool (function) calling: the tools a model may call, the calls it makes, and the messages that carry them.

>>> write = Tool(name="write_files", description="Write files to disk.", parameters=WriteFiles)
>>> turn = await llm.call_tools(messages, [write])
>>> messages += [turn.message(), *(tool_result(call, run(write.parse(call))) for call in turn.tool_calls)]

A call's ``arguments`` are kept exactly as the model sent them (raw JSON text); :meth:`Tool.parse` validates them
and raises :class:`~mnemoflow.errors.ToolArgumentError` with a message meant to be shown to the model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic

from pydantic import BaseModel, ValidationError
from typing_extensions import TypeVar  # the default= of PEP 696 (pydantic depends on typing_extensions)

from mnemoflow.errors import RegistrationError, ToolArgumentError, UsageError

__all__ = ["TOOL_CHOICES", "Tool", "ToolArgumentError", "ToolCall", "ToolTurn", "tool_choice", "tool_result"]

ArgsT = TypeVar("ArgsT", bound=BaseModel, default=BaseModel)
"""The arguments' model of a :class:`Tool`; a bare ``Tool`` annotation means ``Tool[BaseModel]``."""
_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


@dataclass(frozen=True)
class ToolCall:
    """One call the model made: its id, the tool's name and the arguments as raw JSON text."""

    id: str
    """The id a tool result must quote (``tool_call_id``)."""
    name: str
    """The name of the tool called."""
    arguments: str
    """Raw JSON text, exactly as the model sent it (it may be broken or cut off)."""

    def message_part(self) -> dict[str, Any]:
        """The call as an entry of an assistant message's ``tool_calls``."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True)
class Tool(Generic[ArgsT]):
    """A function the model may call; ``parameters`` is the model of its arguments (its JSON schema is sent).

    Generic in the arguments' model, so :meth:`parse` and ``LLM.forced_tool`` return ``parameters``' type.
    """

    name: str
    """Letters, digits, ``_`` and ``-``; at most 64 characters (what OpenAI accepts)."""
    description: str
    """What the tool does and when to call it, for the model."""
    parameters: type[ArgsT]
    """The arguments' model: its JSON schema is offered, and :meth:`parse` validates calls into it."""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise RegistrationError(f"tool name {self.name!r} must match {_NAME.pattern} (letters, digits, _ and -, at most 64)")

    def schema(self) -> dict[str, Any]:
        """The tool as an entry of a request's ``tools``."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters.model_json_schema()},
        }

    def parse(self, call: ToolCall) -> ArgsT:
        """Validate ``call.arguments`` into :attr:`parameters`.

        Empty arguments count as ``{}`` (some servers send them for a call without arguments).

        Raises:
            ToolArgumentError: the arguments are not JSON (the reply may have been cut off), not a JSON object, or do
                not validate; the message names the tool and each problem as ``field.path: message``.
        """
        text = call.arguments if call.arguments.strip() else "{}"
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ToolArgumentError(
                f"{self.name}: the arguments are not valid JSON ({exc.msg} at character {exc.pos} of {len(text)}); "
                "the reply may have been cut off, so answer shorter"
            ) from exc
        if not isinstance(value, dict):
            raise ToolArgumentError(f"{self.name}: the arguments must be a JSON object, not {_json_type(value)}")
        try:
            return self.parameters.model_validate(value)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in error['loc']) or '(arguments)'}: {error['msg']}" for error in exc.errors()
            )
            raise ToolArgumentError(f"{self.name}: {problems}") from exc


@dataclass(frozen=True)
class ToolTurn:
    """One assistant turn of a tool-calling conversation: its text, the calls it made and why it stopped."""

    content: str
    """The assistant's text (``""`` when none)."""
    tool_calls: tuple[ToolCall, ...]
    """The function calls, in the order the model made them."""
    finish_reason: str
    """``"tool_calls"``, ``"stop"`` (also after a forced call), ``"length"`` (cut off) ..."""

    def message(self) -> dict[str, Any]:
        """The assistant message to append to the history.

        ``content`` is always a string (``""`` when the turn only called tools: OpenAI takes that as well as null,
        and llama-cpp-python's server refuses null), and ``"tool_calls"`` is left out when it called none.
        """
        if not self.tool_calls:
            return {"role": "assistant", "content": self.content}
        return {"role": "assistant", "content": self.content, "tool_calls": [call.message_part() for call in self.tool_calls]}


def tool_result(call: ToolCall, content: str) -> dict[str, Any]:
    """The tool message answering ``call`` (every call of an assistant turn needs one before the next request)."""
    return {"role": "tool", "tool_call_id": call.id, "content": content}


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "null" if value is None else type(value).__name__


TOOL_CHOICES = ("auto", "required", "none")


def tool_choice(tools: Sequence[Tool[Any]], choice: str) -> str | dict[str, Any]:
    """The request's ``tool_choice`` for ``choice``: a mode, or a tool's name to force that tool."""
    names = [tool.name for tool in tools]
    if not names:
        raise UsageError("offer at least one tool (use text() for a reply without tools)")
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise UsageError(f"tools offered twice: {twice}")
    if choice in TOOL_CHOICES:
        return choice
    if choice not in names:
        raise UsageError(f"tool choice {choice!r} is neither one of {list(TOOL_CHOICES)} nor a tool offered: {names}")
    return {"type": "function", "function": {"name": choice}}
