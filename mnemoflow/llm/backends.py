"""Where chat completions come from: any OpenAI-compatible server, or the deterministic offline model.

Backends send one request and say what happened; retries, limits, caching and parsing belong to the
gateway (:mod:`mnemoflow.llm.gateway`). A transport fault is raised as :class:`TransientError`. A request may offer
tools (``tools``, ``tool_choice``); the calls the model made come back in :attr:`Completion.tool_calls`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel

from mnemoflow.errors import LLMError, LLMRequestError, TransientError
from mnemoflow.llm.tools import ToolCall, ToolTurn

__all__ = [
    "ChatRequest",
    "Completion",
    "OfflineBackend",
    "OpenAIBackend",
    "TransientError",
    "offline_handler",
    "offline_tool_handler",
]

Message = dict[str, Any]


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: list[Message]
    temperature: float
    seed: int | None = None
    max_tokens: int | None = None
    response_format: dict[str, Any] | None = None
    schema: type[BaseModel] | None = None
    timeout: float = 120.0
    tools: list[dict[str, Any]] | None = None
    """Tools offered, in OpenAI's format (``Tool.schema()``)."""
    tool_choice: str | dict[str, Any] | None = None
    """``"auto"``, ``"required"``, ``"none"`` or ``{"type": "function", "function": {"name": ...}}``."""


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    tool_calls: tuple[ToolCall, ...] = ()
    """The function calls the model made, arguments kept as the raw JSON text it sent."""


class Backend(Protocol):
    name: str

    async def complete(self, request: ChatRequest) -> Completion: ...

    async def close(self) -> None: ...


def _retry_after(headers: Any) -> float | None:
    value = headers.get("retry-after") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class OpenAIBackend:
    """OpenAI, vLLM, Ollama, LM Studio and the test server, through the official client (its retries off)."""

    name = "openai-compatible"

    def __init__(self, *, base_url: str | None, api_key: str | None, timeout: float) -> None:
        from openai import AsyncOpenAI

        self.client = AsyncOpenAI(base_url=base_url, api_key=api_key or "not-needed", max_retries=0, timeout=timeout)

    async def complete(self, request: ChatRequest) -> Completion:
        import openai

        options: dict[str, Any] = {}
        if request.seed is not None:
            options["seed"] = request.seed
        if request.max_tokens is not None:
            options["max_tokens"] = request.max_tokens
        if request.response_format is not None:
            options["response_format"] = request.response_format
        if request.tools is not None:
            options["tools"] = request.tools
        if request.tool_choice is not None:
            options["tool_choice"] = request.tool_choice
        try:
            response = await self.client.chat.completions.create(
                model=request.model,
                messages=request.messages,  # type: ignore[arg-type]
                temperature=request.temperature,
                timeout=request.timeout,
                **options,
            )
        except openai.RateLimitError as exc:
            raise TransientError(f"429 from {self.client.base_url}: {exc.message}", _retry_after(exc.response.headers)) from exc
        except openai.InternalServerError as exc:
            raise TransientError(f"{exc.status_code} from {self.client.base_url}: {exc.message}") from exc
        except (openai.APITimeoutError, openai.APIConnectionError) as exc:
            raise TransientError(f"{type(exc).__name__} talking to {self.client.base_url}: {exc}") from exc
        except openai.APIStatusError as exc:
            raise LLMRequestError(f"{self.client.base_url} refused the request ({exc.status_code}): {exc.message}") from exc
        if not response.choices:
            raise TransientError(f"{self.client.base_url} answered with no choices")
        choice = response.choices[0]
        usage = response.usage
        calls = tuple(
            ToolCall(call.id, call.function.name, call.function.arguments or "")
            for call in choice.message.tool_calls or []
            if call.type == "function"
        )
        return Completion(
            text=choice.message.content or "",
            finish_reason=str(choice.finish_reason),
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            tool_calls=calls,
        )

    async def close(self) -> None:
        await self.client.close()


OfflineHandler = Callable[[list[Message]], BaseModel]
OfflineToolHandler = Callable[[list[Message], list[str]], ToolTurn]
"""Answers a tool-calling request offline: (messages, names of the tools offered) -> the assistant turn."""


@dataclass
class OfflineRegistry:
    handlers: dict[type[BaseModel], OfflineHandler] = field(default_factory=dict)
    tool_handlers: dict[str, OfflineToolHandler] = field(default_factory=dict)


OFFLINE = OfflineRegistry()


def offline_handler(schema: type[BaseModel]) -> Callable[[OfflineHandler], OfflineHandler]:
    """Register how the offline model answers a structured call for ``schema`` (mechanisms do this)."""

    def register(handler: OfflineHandler) -> OfflineHandler:
        OFFLINE.handlers[schema] = handler
        return handler

    return register


def offline_tool_handler(tool_name: str) -> Callable[[OfflineToolHandler], OfflineToolHandler]:
    """Register how the offline model answers a request offering the tool ``tool_name`` (mechanisms do this).

    The handler gets the messages and the names of the tools offered, and returns the :class:`ToolTurn`.
    """

    def register(handler: OfflineToolHandler) -> OfflineToolHandler:
        OFFLINE.tool_handlers[tool_name] = handler
        return handler

    return register


def _words(messages: list[Message]) -> int:
    """Words of every message's content and of the arguments of the tool calls it carries."""
    total = 0
    for message in messages:
        total += len(str(message.get("content") or "").split())
        for call in message.get("tool_calls") or []:
            total += len(str(call.get("function", {}).get("arguments", "")).split())
    return total


class OfflineBackend:
    """A deterministic stand-in with no network, so a pipeline can be seen working without a model.

    Plain text calls answer with the first sentence of the last user message, marked as offline;
    structured calls use the handler registered for their schema; tool calls use the handler registered for the
    forced tool, else for the first tool offered that has one. It is not a model.
    """

    name = "offline"

    async def complete(self, request: ChatRequest) -> Completion:
        if request.tools and request.tool_choice != "none":
            return self._call_tools(request)
        if request.schema is not None:
            handler = OFFLINE.handlers.get(request.schema)
            if handler is None:
                raise LLMError(
                    f"the offline model has no answer for {request.schema.__name__}; "
                    "set OPENAI_BASE_URL (and OPENAI_API_KEY) to use a real model"
                )
            text = handler(request.messages).model_dump_json()
        else:
            last = next((m for m in reversed(request.messages) if m.get("role") == "user"), {"content": ""})
            first_sentence = re.split(r"(?<=[.!?])\s", str(last.get("content", "")).strip(), maxsplit=1)[0]
            text = f"[offline model] {first_sentence}"
        return Completion(text, "stop", _words(request.messages), len(text.split()))

    def _call_tools(self, request: ChatRequest) -> Completion:
        offered = [str(tool.get("function", {}).get("name", "")) for tool in request.tools or []]
        forced = request.tool_choice.get("function", {}).get("name") if isinstance(request.tool_choice, dict) else None
        candidates = [forced] if forced else offered
        name = next((name for name in candidates if name in OFFLINE.tool_handlers), None)
        if name is None:
            raise LLMError(
                f"the offline model cannot call tools {candidates}; set OPENAI_BASE_URL (and OPENAI_API_KEY) to use a real model"
            )
        turn = OFFLINE.tool_handlers[name](request.messages, offered)
        completion_tokens = len(turn.content.split()) + sum(len(call.arguments.split()) for call in turn.tool_calls)
        return Completion(
            turn.content,
            "tool_calls" if turn.tool_calls else "stop",
            _words(request.messages) + len(json.dumps(request.tools).split()),
            completion_tokens,
            tool_calls=turn.tool_calls,
        )

    async def close(self) -> None:
        return None


def schema_format(schema: type[BaseModel]) -> dict[str, Any]:
    """The JSON-schema response format for ``schema`` (not strict, so any server that supports it can)."""
    return {
        "type": "json_schema",
        "json_schema": {"name": schema.__name__, "schema": schema.model_json_schema(), "strict": False},
    }


def schema_instruction(schema: type[BaseModel]) -> str:
    return "Reply with only a JSON object that matches this JSON Schema:\n" + json.dumps(schema.model_json_schema())
