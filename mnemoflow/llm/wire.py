"""A call as an endpoint takes it: the structured mode it understands, and tool calls as structured output for an
endpoint without function calling (with the history's calls and results as plain turns)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from mnemoflow.llm.backends import ChatRequest, Completion, schema_format, schema_instruction
from mnemoflow.llm.parsing import extract_json
from mnemoflow.llm.tools import ToolCall

__all__ = ["as_tool_calls", "choice_schema", "structured_request", "with_system", "without_tool_messages"]

Message = dict[str, Any]
NO_TOOL = "none"
"""The ``tool`` of a free choice's reply that answers without a tool."""


def structured_request(request: ChatRequest, name: str, schema: dict[str, Any], mode: str) -> ChatRequest:
    """``request`` asking for JSON matching ``schema`` in ``mode``; the schema is in the prompt but in OpenAI's mode."""
    if mode != "json_schema":
        request = with_system(request, schema_instruction(schema))
    return replace(request, response_format=schema_format(name, schema, mode))


def with_system(request: ChatRequest, text: str) -> ChatRequest:
    """``request`` with a system message first."""
    return replace(request, messages=[{"role": "system", "content": text}, *request.messages])


def without_tool_messages(messages: list[Message]) -> list[Message]:
    """The history for a server without function calling: calls and their results as plain turns."""
    plain: list[Message] = []
    for message in messages:
        if message.get("role") == "tool":
            plain.append({"role": "user", "content": f"Tool result: {message.get('content', '')}"})
        elif message.get("tool_calls"):
            calls = [_as_choice(call["function"]) for call in message["tool_calls"]]
            plain.append({"role": "assistant", "content": "\n".join(filter(None, [message.get("content"), *calls]))})
        else:
            plain.append(message)
    return plain


def _as_choice(function: dict[str, Any]) -> str:
    """A call as the reply that makes it without function calling: ``{"tool": name, "arguments": {...}}``."""
    try:
        arguments = json.loads(function["arguments"] or "{}")
    except json.JSONDecodeError:
        arguments = function["arguments"]
    return json.dumps({"tool": function["name"], "arguments": arguments})


def choice_schema(functions: list[dict[str, Any]], *, free: bool) -> dict[str, Any]:
    """The schema of a reply that calls one of ``functions`` (``{"tool": name, "arguments": {...}}``), or with
    ``free`` answers without one (``{"tool": "none", "reply": "..."}``)."""
    options: list[dict[str, Any]] = [
        {
            "type": "object",
            "properties": {"tool": {"const": function["name"]}, "arguments": function["parameters"]},
            "required": ["tool", "arguments"],
        }
        for function in functions
    ]
    if free:
        options.append(
            {"type": "object", "properties": {"tool": {"const": NO_TOOL}, "reply": {"type": "string"}}, "required": ["tool", "reply"]}
        )
    return {"anyOf": options}


def as_tool_calls(completion: Completion, request: ChatRequest) -> Completion:
    """A structured reply standing in for the call(s) ``request`` asked for: the forced tool's arguments, or the
    tool a free choice named; a reply that names no tool offered is the turn's text."""
    if isinstance(request.tool_choice, dict):
        name = request.tool_choice["function"]["name"]
        try:
            arguments = json.dumps(extract_json(completion.text))
        except ValueError:
            arguments = completion.text  # Tool.parse says what is wrong with it
        return replace(completion, text="", tool_calls=(ToolCall(f"call_{name}", name, arguments),))
    offered = {tool["function"]["name"] for tool in request.tools or []}
    try:
        chosen = extract_json(completion.text)
    except ValueError:
        return completion
    if not isinstance(chosen, dict) or chosen.get("tool") not in offered:
        reply = chosen.get("reply") if isinstance(chosen, dict) else None
        return replace(completion, text=str(reply) if reply is not None else completion.text)
    name, arguments = str(chosen["tool"]), chosen.get("arguments", {})
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return replace(completion, text="", tool_calls=(ToolCall(f"call_{name}", name, raw),), finish_reason="tool_calls")
