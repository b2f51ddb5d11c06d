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

from mnemoflow.errors import ConfigError, LLMError, LLMRequestError, TransientError
from mnemoflow.llm.tools import ToolCall, ToolTurn
from mnemoflow.redaction import redact_urls

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
    server_seconds: float | None = None
    """Seconds the server says it spent on the request (its ``openai-processing-ms`` header, which OpenAI and
    llama-cpp-python send), None when it does not say: the model's busy time, as the server measured it."""


class Backend(Protocol):
    name: str
    endpoint: str
    """Where requests go (what the gateway learns an endpoint's capabilities by)."""

    async def complete(self, request: ChatRequest) -> Completion: ...

    async def close(self) -> None: ...


def _header_number(headers: Any, name: str) -> float | None:
    """Header ``name`` as a number of at least 0 (None: no headers, no such header, or not a number)."""
    value = headers.get(name) if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _retry_after(headers: Any) -> float | None:
    return _header_number(headers, "retry-after")


def _processing_seconds(headers: Any) -> float | None:
    """The server's own time on a request, from its ``openai-processing-ms`` header."""
    milliseconds = _header_number(headers, "openai-processing-ms")
    return None if milliseconds is None else milliseconds / 1000


_VALIDATION_MARKS = ("validation error", "input should be", "field required", "extra inputs are not permitted", "invalid request")


def _is_validation_error(exc: Any) -> bool:
    """Whether a 5xx carries a request-validation error in its body: the request is wrong, repeating it won't help."""
    text = f"{exc.message} {json.dumps(exc.body, default=str) if exc.body is not None else ''}".lower()
    return any(mark in text for mark in _VALIDATION_MARKS)


def _refused_base_url(base_url: str, exc: Exception) -> str:
    """Why the client refused ``base_url``, without the credentials the URL may carry."""
    shown = redact_urls(base_url)
    if shown != base_url:  # the client's text may quote a piece of the password it took for a port
        return (
            f"OPENAI_BASE_URL {shown} is not a URL the OpenAI client takes ({type(exc).__name__}); percent-encode any "
            "'/', '?', '#' or '@' in its password"
        )
    return f"OPENAI_BASE_URL {base_url} is not a URL the OpenAI client takes: {exc}"


class OpenAIBackend:
    """OpenAI, vLLM, Ollama, LM Studio and the test server, through the official client (its retries off)."""

    name = "openai-compatible"

    def __init__(self, *, base_url: str | None, api_key: str | None, timeout: float) -> None:
        from openai import AsyncOpenAI

        try:
            self.client = AsyncOpenAI(base_url=base_url, api_key=api_key or "not-needed", max_retries=0, timeout=timeout)
        except Exception as exc:  # the URL errors of the client's HTTP library are no ValueErrors
            if base_url is None:
                raise
            raise ConfigError(_refused_base_url(base_url, exc)) from exc
        self.endpoint = str(self.client.base_url)

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
        # errors pass through redact_urls: the base URL may carry credentials, and the server's or client's text may quote it
        try:
            raw = await self.client.chat.completions.with_raw_response.create(
                model=request.model,
                messages=request.messages,  # type: ignore[arg-type]
                temperature=request.temperature,
                timeout=request.timeout,
                **options,
            )
            response = raw.parse()
        except openai.RateLimitError as exc:
            raise TransientError(
                redact_urls(f"429 from {self.client.base_url}: {exc.message}"), _retry_after(exc.response.headers)
            ) from exc
        except openai.InternalServerError as exc:
            if _is_validation_error(exc):  # llama-cpp-python answers 500 to a request it cannot parse
                raise LLMRequestError(
                    redact_urls(f"{self.client.base_url} refused the request ({exc.status_code}): {exc.message}")
                ) from exc
            raise TransientError(redact_urls(f"{exc.status_code} from {self.client.base_url}: {exc.message}")) from exc
        except (openai.APITimeoutError, openai.APIConnectionError) as exc:
            raise TransientError(redact_urls(f"{type(exc).__name__} talking to {self.client.base_url}: {exc}")) from exc
        except openai.APIStatusError as exc:
            raise LLMRequestError(
                redact_urls(f"{self.client.base_url} refused the request ({exc.status_code}): {exc.message}")
            ) from exc
        if not response.choices:
            raise TransientError(redact_urls(f"{self.client.base_url} answered with no choices"))
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
            server_seconds=_processing_seconds(raw.headers),
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
    endpoint = "offline"

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


def schema_format(name: str, schema: dict[str, Any], mode: str) -> dict[str, Any] | None:
    """The ``response_format`` asking for JSON that matches ``schema`` in a structured ``mode`` (None: ``prompt``).

    ``json_schema`` is OpenAI's (not strict, so any server that supports it can); ``json_object_schema`` is JSON mode
    with the schema beside it, as llama.cpp's servers constrain replies; ``json_object`` is plain JSON mode.
    """
    if mode == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": False}}
    if mode == "json_object_schema":
        return {"type": "json_object", "schema": grammar_friendly(schema)}
    if mode == "json_object":
        return {"type": "json_object"}
    return None


GRAMMAR_MAX_ITEMS = 32
"""The largest ``maxItems`` kept in a schema a server turns into a grammar."""
_UNROLLED = ("maxLength", "minLength", "pattern", "format")
_NAMED = ("properties", "$defs", "definitions")


def grammar_friendly(schema: Any) -> Any:
    """``schema`` without the bounds a grammar unrolls: llama.cpp writes ``maxLength: 2000`` as 2,000 nested rules,
    which its parser refuses ("exceeds sane defaults") or which slow every sampled token. String lengths and patterns
    go, ``maxItems`` above :data:`GRAMMAR_MAX_ITEMS` too; the reply is still validated against the whole schema."""
    if isinstance(schema, list):
        return [grammar_friendly(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    kept: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _NAMED and isinstance(value, dict):  # names of properties or definitions, not keywords
            kept[key] = {name: grammar_friendly(part) for name, part in value.items()}
        elif key not in _UNROLLED:
            kept[key] = grammar_friendly(value)
    for bound in ("maxItems", "minItems"):
        if isinstance(kept.get(bound), int) and kept[bound] > GRAMMAR_MAX_ITEMS:
            del kept[bound]
    return kept


def schema_instruction(schema: dict[str, Any]) -> str:
    return "Reply with only a JSON object that matches this JSON Schema:\n" + json.dumps(schema)
