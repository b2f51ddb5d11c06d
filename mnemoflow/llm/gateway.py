"""The LLM gateway: structured outputs, the single owner of transport retries, limits, cache, accounting.

>>> llm = llm_from_settings(settings)
>>> answer = await llm.structured([{"role": "user", "content": "..."}], Answer)
>>> turn = await llm.call_tools(messages, [write_files, run_tests])   # one turn that may call tools
>>> args = await llm.forced_tool(messages, write_files)               # force a call; its validated arguments

Retries (tenacity) cover 429 (honouring ``Retry-After``), 5xx, timeouts and dropped connections, with
exponential backoff and jitter, a bounded number of attempts and a total deadline per call; a request the server
refuses as invalid (any other 4xx, or a 5xx whose body is a validation error) fails at once. The deadline counts
the model's time, not time queued for a slot. The concurrency cap (the server's slots where it tells them) and the
per-minute budgets are shared by every fork of a gateway.

What an endpoint takes is learned on first use and kept for the process (:class:`Capabilities`): the first
structured mode it accepts (JSON schema, JSON mode with the schema, JSON mode, the schema in the prompt only) and
whether it has function calling (without it, a forced tool's arguments are asked for as structured output). Every
call has a reply-length cap: the caller's, else its schema's ``REPLY_TOKENS``, else ``MNEMOFLOW_LLM_MAX_REPLY_TOKENS``.
``fork()`` gives a run its own :class:`~mnemoflow.llm.usage.Usage` over the same client, limits and cache.
Every call leaves a :class:`~mnemoflow.llm.calls.CallRecord` (its prompt, reply and figures, bounded) on ``calls``;
each call runs on a fork of its own, so calls made at once (``asyncio.gather``) each get their exact figures.
A ``request_slot`` (an async context manager factory) is entered around every request sent: the Prefect
flows pass one that holds a slot of a global concurrency or rate limit, shared by every worker.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from aiolimiter import AsyncLimiter
from pydantic import BaseModel, ValidationError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from mnemoflow.errors import (
    LLMOutputError,
    LLMRequestError,
    LLMTimeoutError,
    LLMUnavailableError,
    ToolArgumentError,
)
from mnemoflow.llm.backends import (
    Backend,
    ChatRequest,
    Completion,
    OfflineBackend,
    TransientError,
    grammar_friendly,
)
from mnemoflow.llm.cache import ResponseCache, cache_key
from mnemoflow.llm.calls import MAX_CALL_RECORDS, CallKind, CallRecord, turn_text
from mnemoflow.llm.endpoint import JSON_MODES, Capabilities, learned_capabilities
from mnemoflow.llm.parsing import extract_json, json_begun, reply_json
from mnemoflow.llm.tools import Tool, ToolTurn, tool_result
from mnemoflow.llm.tools import tool_choice as choose_tool
from mnemoflow.llm.usage import Usage
from mnemoflow.llm.wire import as_tool_calls, choice_schema, structured_request, with_system, without_tool_messages
from mnemoflow.redaction import redact_urls
from mnemoflow.settings import LLMSettings

__all__ = ["LLM", "Message", "RequestSlot"]

SchemaT = TypeVar("SchemaT", bound=BaseModel)
ResultT = TypeVar("ResultT")
ArgsT = TypeVar("ArgsT", bound=BaseModel)
Message = dict[str, Any]
RequestSlot = Callable[[], AbstractAsyncContextManager[Any]]
"""Entered around every request sent to the model (a shared budget across processes, for instance)."""
TRUNCATION_RETRIES = 2
"""Times a truncated reply (finish_reason ``length``) is asked for again, with twice the cap, before the re-ask."""
DEFAULT_CONCURRENCY = 8
"""Requests in flight when neither ``MNEMOFLOW_LLM_CONCURRENCY`` nor the server says how many slots it has."""
_FORMAT_WORDS = ("response_format", "json_schema", "json_object", "schema")
"""Words of a refusal that is about the structured format asked for."""
_TOOL_REFUSALS = ("'tools'", "tool_choice", "support tools", "tools are not supported", "tools not supported")
"""Words of a refusal that is about tools offered (not, say, a tool message in the history)."""
@dataclass
class _Shared:
    """What every fork of a gateway shares: the backend, limits, cache and what the endpoint was found to take."""

    backend: Backend
    settings: LLMSettings
    sleep: Callable[[float], Awaitable[None]]
    cache: ResponseCache | None
    semaphore: asyncio.Semaphore
    backoff: wait_random_exponential
    """Exponential backoff with full jitter: a random wait up to ``initial * 2**retry``, capped."""
    capabilities: Capabilities
    per_minute: list[tuple[AsyncLimiter, Callable[[ChatRequest], float]]] = field(default_factory=list)
    request_slot: RequestSlot | None = None


def _estimate_tokens(request: ChatRequest) -> float:
    offered = len(json.dumps(request.tools)) if request.tools else 0
    return (len(json.dumps(request.messages)) + offered) / 4 + (request.max_tokens or 256)


class LLM:
    """Async chat with a model; construct with :func:`llm_from_settings`."""

    def __init__(
        self,
        backend: Backend,
        settings: LLMSettings,
        *,
        cache: ResponseCache | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        request_slot: RequestSlot | None = None,
        slots: int | None = None,
        model: str | None = None,
    ) -> None:
        """``slots``: requests the server serves at once, when known (the concurrency cap unless the settings set
        one); ``model``: the model name to send when it is not the settings' (the local server's)."""
        backoff = wait_random_exponential(multiplier=settings.initial_backoff, max=settings.max_backoff)
        concurrency = settings.concurrency or slots or DEFAULT_CONCURRENCY
        capabilities = learned_capabilities(backend.endpoint)
        shared = _Shared(backend, settings, sleep, cache, asyncio.Semaphore(concurrency), backoff, capabilities)
        self._model = model or settings.model
        if settings.requests_per_minute:
            shared.per_minute.append((AsyncLimiter(settings.requests_per_minute, 60), lambda request: 1.0))
        if settings.tokens_per_minute:
            budget = settings.tokens_per_minute
            shared.per_minute.append((AsyncLimiter(budget, 60), lambda request: min(_estimate_tokens(request), budget)))
        shared.request_slot = request_slot
        self._shared = shared
        self.usage = Usage()
        self.calls: list[CallRecord] = []
        """One record per call made on this object (a fork starts with none), at most ``MAX_CALL_RECORDS``."""
        self.calls_omitted = 0
        """Calls made past ``MAX_CALL_RECORDS``: counted in ``usage``, not recorded."""

    @property
    def offline(self) -> bool:
        """Whether this is the offline stand-in rather than a model."""
        return isinstance(self._shared.backend, OfflineBackend)

    @property
    def model(self) -> str:
        return "offline" if self.offline else self._model

    @property
    def capabilities(self) -> Capabilities:
        """What the endpoint was found to take so far."""
        return self._shared.capabilities

    def fork(self) -> LLM:
        """The same client, limits and cache, with usage and call records kept apart (one per run, one per node)."""
        child = LLM.__new__(LLM)
        child._shared = self._shared
        child._model = self._model
        child.usage = Usage()
        child.calls = []
        child.calls_omitted = 0
        return child

    async def aclose(self) -> None:
        await self._shared.backend.close()
        if self._shared.cache is not None:
            self._shared.cache.close()

    # -- calls ------------------------------------------------------------------------------------------

    async def text(
        self, messages: list[Message], *, temperature: float | None = None, seed: int | None = None, max_tokens: int | None = None
    ) -> str:
        """The model's reply as text."""
        return await self._recorded("text", None, messages, lambda own: own._text(messages, temperature, seed, max_tokens), str)

    async def _text(self, messages: list[Message], temperature: float | None, seed: int | None, max_tokens: int | None) -> str:
        request = self._request(messages, temperature, seed, max_tokens, None)
        self.usage.calls += 1
        cached = await self._cached(request)
        if cached is not None:
            return cached
        completion = await self._send(request)
        await self._remember(request, completion)
        return completion.text

    async def structured(
        self,
        messages: list[Message],
        schema: type[SchemaT],
        *,
        temperature: float | None = None,
        seed: int | None = None,
        max_tokens: int | None = None,
    ) -> SchemaT:
        """The reply validated into ``schema``.

        A reply wrapped in fences or prose is unwrapped; one cut off in the middle of its JSON is asked for again with
        twice the room (twice at most; up to ``max_reply_tokens`` when the cap was below it), and one still cut is
        closed where it stopped if that parses; one that still does not validate is re-asked once with the
        validation error; then :class:`LLMOutputError` carries the raw replies.
        """
        return await self._recorded(
            "structured",
            schema.__name__,
            messages,
            lambda own: own._structured(messages, schema, temperature, seed, max_tokens),
            lambda result: result.model_dump_json(),
        )

    async def _structured(
        self, messages: list[Message], schema: type[SchemaT], temperature: float | None, seed: int | None, max_tokens: int | None
    ) -> SchemaT:
        request = self._request(messages, temperature, seed, max_tokens, schema)
        self.usage.calls += 1
        cached = await self._cached(request)
        if cached is not None:
            try:
                return schema.model_validate(extract_json(cached))
            except (ValueError, ValidationError):
                pass  # a reply cached by an older schema: ask again
        replies: list[str] = []
        truncations = 0
        reasked = False
        current = request
        while True:
            completion = await self._send(current)
            replies.append(completion.text)
            if completion.finish_reason == "length" and truncations < TRUNCATION_RETRIES and json_begun(completion.text):
                truncations += 1
                self.usage.reasks += 1
                current = _with_more_room(current, self._shared.settings.max_reply_tokens)
                continue
            try:
                result = schema.model_validate(reply_json(completion.text, cut_off=completion.finish_reason == "length"))
            except (ValueError, ValidationError) as exc:
                problem = f"the reply was cut off ({exc})" if completion.finish_reason == "length" else str(exc)
                if reasked:
                    raise LLMOutputError(
                        f"{schema.__name__}: the model's reply did not validate after a re-ask: {problem}", replies
                    ) from exc
                self.usage.reasks += 1
                reasked = True
                current = self._request(
                    [
                        *request.messages,
                        {"role": "assistant", "content": completion.text},
                        {
                            "role": "user",
                            "content": f"That reply is not valid: {problem}. Reply again with only the JSON object.",
                        },
                    ],
                    temperature,
                    seed,
                    max_tokens,
                    schema,
                )
                continue
            await self._remember(
                request, Completion(result.model_dump_json(), "stop", completion.prompt_tokens, completion.completion_tokens)
            )
            return result

    async def call_tools(
        self,
        messages: list[Message],
        tools: Sequence[Tool[Any]],
        *,
        choice: str = "auto",
        temperature: float | None = None,
        seed: int | None = None,
        max_tokens: int | None = None,
    ) -> ToolTurn:
        """One model turn that may call ``tools``.

        ``choice`` is ``"auto"``, ``"required"``, ``"none"``, or a tool's name to force a call of that tool. The
        arguments are not validated here: :meth:`Tool.parse` them and give any error back to the model in a
        :func:`tool_result`. Retries, limits, the request slot and usage counting are those of every call; the turn
        is never cached (the response cache stores text only).

        Raises:
            ValueError: no tools, a tool offered twice, or ``choice`` names no tool offered.
        """
        tool_choice = choose_tool(tools, choice)
        return await self._recorded(
            "tools",
            ",".join(tool.name for tool in tools),
            messages,
            lambda own: own._call_tools(messages, tools, tool_choice, temperature, seed, max_tokens),
            lambda turn: turn_text(turn.content, [(call.name, call.arguments) for call in turn.tool_calls]),
        )

    async def _call_tools(
        self,
        messages: list[Message],
        tools: Sequence[Tool[Any]],
        tool_choice: str | dict[str, Any],
        temperature: float | None,
        seed: int | None,
        max_tokens: int | None,
    ) -> ToolTurn:
        self.usage.calls += 1
        request = self._request(messages, temperature, seed, max_tokens, None, tools, tool_choice)
        completion = await self._send(request)
        return ToolTurn(completion.text, completion.tool_calls, completion.finish_reason)

    async def forced_tool(
        self,
        messages: list[Message],
        tool: Tool[ArgsT],
        *,
        temperature: float | None = None,
        seed: int | None = None,
        max_tokens: int | None = None,
    ) -> ArgsT:
        """Force a call of ``tool`` and return its validated arguments (an instance of ``tool.parameters``).

        Like :meth:`structured`: a truncated reply is asked for again (twice at most); a reply that does not call
        ``tool``, or whose first call of it does not validate, is re-asked once (the assistant turn, a tool result
        for each call it made saying what was wrong, then a user message naming the error); then
        :class:`LLMOutputError` carries the raw replies (the call's arguments, or the text when there was no call).
        Never cached.
        """
        tool_choice = choose_tool([tool], tool.name)
        return await self._recorded(
            "forced_tool",
            tool.name,
            messages,
            lambda own: own._forced_tool(messages, tool, tool_choice, temperature, seed, max_tokens),
            lambda arguments: arguments.model_dump_json(),
        )

    async def _forced_tool(
        self,
        messages: list[Message],
        tool: Tool[ArgsT],
        tool_choice: str | dict[str, Any],
        temperature: float | None,
        seed: int | None,
        max_tokens: int | None,
    ) -> ArgsT:
        self.usage.calls += 1
        request = self._request(messages, temperature, seed, max_tokens, None, [tool], tool_choice)
        replies: list[str] = []
        truncations = 0
        reasked = False
        current = request
        while True:
            completion = await self._send(current)
            turn = ToolTurn(completion.text, completion.tool_calls, completion.finish_reason)
            call = next((call for call in turn.tool_calls if call.name == tool.name), None)
            replies.append(call.arguments if call is not None else turn.content)
            if turn.finish_reason == "length" and truncations < TRUNCATION_RETRIES:
                truncations += 1
                self.usage.reasks += 1
                current = _with_more_room(current, self._shared.settings.max_reply_tokens)
                continue
            error: ToolArgumentError | None = None
            if call is None:
                others = sorted({other.name for other in turn.tool_calls})
                problem = f"the reply did not call {tool.name}" + (f" (it called {others})" if others else "")
            else:
                try:
                    return tool.parse(call)
                except ToolArgumentError as exc:
                    error = exc
                    problem = f"the reply was cut off ({exc})" if turn.finish_reason == "length" else str(exc)
            if reasked:
                raise LLMOutputError(
                    f"{tool.name}: the model's call did not validate after a re-ask: {problem}", replies
                ) from error
            self.usage.reasks += 1
            reasked = True
            current = self._request(
                [
                    *request.messages,
                    turn.message(),
                    *(tool_result(made, f"Error: {problem}") for made in turn.tool_calls),
                    {
                        "role": "user",
                        "content": f"That call is not valid: {problem}. Call {tool.name} again with corrected arguments.",
                    },
                ],
                temperature,
                seed,
                max_tokens,
                None,
                [tool],
                tool_choice,
            )

    # -- plumbing ---------------------------------------------------------------------------------------

    async def _recorded(
        self,
        kind: CallKind,
        name: str | None,
        messages: list[Message],
        call: Callable[[LLM], Awaitable[ResultT]],
        reply_of: Callable[[ResultT], str],
    ) -> ResultT:
        """Make ``call`` on a fork of its own, then count its usage into this object's and keep its record: the fork
        gives the record exact figures even when calls on this object run at once (``asyncio.gather``)."""
        own = self.fork()
        started = time.perf_counter()
        reply: str | None = None
        error: str | None = None
        try:
            result = await call(own)
            reply = reply_of(result)
            return result
        except BaseException as exc:
            error = "cancelled" if isinstance(exc, asyncio.CancelledError) else redact_urls(f"{type(exc).__name__}: {exc}")
            if isinstance(exc, LLMOutputError) and exc.raw_replies:
                reply = exc.raw_replies[-1]  # what the model last said, for whoever reads why it failed
            raise
        finally:
            self.usage.add(own.usage)
            record = CallRecord.of(kind, name, messages, reply, own.usage, time.perf_counter() - started, error)
            if len(self.calls) < MAX_CALL_RECORDS:
                self.calls.append(record)
            else:
                self.calls_omitted += 1

    def _request(
        self,
        messages: list[Message],
        temperature: float | None,
        seed: int | None,
        max_tokens: int | None,
        schema: type[BaseModel] | None,
        tools: Sequence[Tool[Any]] = (),
        tool_choice: str | dict[str, Any] | None = None,
    ) -> ChatRequest:
        """The call as asked for; :meth:`_on_the_wire` fits it to what the endpoint takes when it is sent."""
        settings = self._shared.settings
        if max_tokens is None:
            declared = [getattr(model, "REPLY_TOKENS", None) for model in (schema, *(tool.parameters for tool in tools))]
            max_tokens = max((int(cap) for cap in declared if cap), default=settings.max_reply_tokens)
        return ChatRequest(
            model=self._model,
            messages=list(messages),
            temperature=settings.temperature if temperature is None else temperature,
            seed=seed,
            max_tokens=max_tokens,
            schema=schema,
            timeout=settings.request_timeout,
            tools=[tool.schema() for tool in tools] or None,
            tool_choice=tool_choice if tools else None,
        )

    def _json_mode(self) -> str:
        configured = self._shared.settings.structured_mode
        return self._shared.capabilities.json_mode if configured == "auto" else configured

    def _native_tools(self) -> bool:
        configured = self._shared.settings.tool_mode
        return self._shared.capabilities.native_tools if configured == "auto" else configured == "native"

    def _on_the_wire(self, request: ChatRequest) -> ChatRequest:
        """``request`` as sent to this endpoint: its structured mode, and tool calls as structured output where the
        endpoint has no function calling."""
        if self.offline:
            return request
        if request.schema is not None:
            return structured_request(request, request.schema.__name__, request.schema.model_json_schema(), self._json_mode())
        if not request.tools:
            return request
        functions = [tool["function"] for tool in request.tools]
        if self._native_tools():
            tools = [{"type": "function", "function": {**function, "parameters": grammar_friendly(function["parameters"])}} for function in functions]
            return replace(request, tools=tools)
        wire = replace(request, messages=without_tool_messages(request.messages), tools=None, tool_choice=None)
        if request.tool_choice == "none":
            return wire
        forced = request.tool_choice.get("function", {}).get("name") if isinstance(request.tool_choice, dict) else None
        if forced is not None:
            function = next(function for function in functions if function["name"] == forced)
            instruction = f"Call the tool {forced}: {function['description']}"
            return structured_request(with_system(wire, instruction), forced, function["parameters"], self._json_mode())
        instruction = "Call one of these tools by replying with its name and arguments:\n" + "\n".join(
            f"- {function['name']}: {function['description']}" for function in functions
        )
        if request.tool_choice == "auto":
            instruction += '\nOr reply without a tool as {"tool": "none", "reply": "..."}.'
        choice = choice_schema(functions, free=request.tool_choice == "auto")
        return structured_request(with_system(wire, instruction), "tool_choice", choice, self._json_mode())

    def _learn_from(self, wire: ChatRequest, error: LLMRequestError) -> bool:
        """Whether the endpoint refused ``wire`` for a feature it lacks (then the next way is remembered)."""
        settings, capabilities = self._shared.settings, self._shared.capabilities
        message = str(error).lower()
        if wire.tools and settings.tool_mode == "auto" and any(words in message for words in _TOOL_REFUSALS):
            capabilities.native_tools = False
            return True
        mode = self._json_mode()
        if wire.response_format is None or settings.structured_mode != "auto" or mode == JSON_MODES[-1]:
            return False
        if not any(word in message for word in _FORMAT_WORDS):
            return False
        capabilities.json_mode = JSON_MODES[JSON_MODES.index(mode) + 1]
        return True

    def _key(self, request: ChatRequest) -> str | None:
        settings = self._shared.settings
        if self._shared.cache is None or not settings.cache or request.temperature != 0:
            return None
        return cache_key(
            model=self.model,
            messages=request.messages,
            schema=request.schema.model_json_schema() if request.schema else None,
            temperature=request.temperature,
            seed=request.seed,
            max_tokens=request.max_tokens,
        )

    async def _cached(self, request: ChatRequest) -> str | None:
        key = self._key(request)
        if key is None or self._shared.cache is None:
            return None
        hit = await self._shared.cache.get(key)
        if hit is None:
            return None
        self.usage.cache_hits += 1
        return hit[0]

    async def _remember(self, request: ChatRequest, completion: Completion) -> None:
        key = self._key(request)
        if key is not None and self._shared.cache is not None and completion.finish_reason != "length":
            await self._shared.cache.put(key, completion.text, completion.prompt_tokens, completion.completion_tokens)

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, TransientError) and error.retry_after is not None:
            return error.retry_after
        return float(self._shared.backoff(state))

    async def _send(self, request: ChatRequest) -> Completion:
        """One completion, with retries of transport faults, limits and a deadline on the model's time."""
        shared, usage = self._shared, self.usage
        started = time.monotonic()
        try:
            async with asyncio.timeout(shared.settings.deadline) as deadline:
                retrying = AsyncRetrying(
                    stop=stop_after_attempt(shared.settings.max_attempts),
                    wait=self._wait,
                    retry=retry_if_exception_type(TransientError),
                    sleep=shared.sleep,
                    reraise=True,
                )
                async for attempt in retrying:
                    with attempt:
                        if attempt.retry_state.attempt_number > 1:
                            usage.retries += 1
                        completion = await self._attempt(request, deadline)
            return completion
        except TransientError as exc:
            raise LLMUnavailableError(
                f"the model did not answer after {shared.settings.max_attempts} attempts (MNEMOFLOW_LLM_MAX_ATTEMPTS): "
                + redact_urls(str(exc))  # any backend's fault, the endpoint's URL in it
            ) from exc
        except TimeoutError as exc:
            raise LLMTimeoutError(
                f"the call took longer than its deadline of {shared.settings.deadline} s of the model's time, time "
                "queued for a slot not counted (MNEMOFLOW_LLM_DEADLINE)"
            ) from exc
        finally:
            usage.wait_s += time.monotonic() - started

    async def _attempt(self, request: ChatRequest, deadline: asyncio.Timeout) -> Completion:
        shared = self._shared
        for limiter, cost in shared.per_minute:
            await limiter.acquire(cost(request))
        when = deadline.when()
        deadline.reschedule(None)  # the deadline is on the model's time: paused while queued for a slot
        queued = time.monotonic()
        async with shared.semaphore, shared.request_slot() if shared.request_slot else nullcontext():
            waited = time.monotonic() - queued
            self.usage.slot_wait_s += waited
            deadline.reschedule(None if when is None else when + waited)
            while True:
                wire = self._on_the_wire(request)
                self.usage.requests += 1
                try:
                    completion = await shared.backend.complete(wire)
                except LLMRequestError as exc:
                    if not self._learn_from(wire, exc):
                        raise
                    continue
                break
        self.usage.prompt_tokens += completion.prompt_tokens
        self.usage.completion_tokens += completion.completion_tokens
        self.usage.server_s += completion.server_seconds or 0.0
        if wire.tools is None and request.tools and request.tool_choice != "none":  # tools asked for as structured output
            return as_tool_calls(completion, request)
        return completion


def _with_more_room(request: ChatRequest, ceiling: int) -> ChatRequest:
    """``request`` with twice its reply-length cap (after a reply cut off at it), but not past ``ceiling`` when the cap
    was below it."""
    cap = request.max_tokens or ceiling
    return replace(request, max_tokens=cap * 2 if cap >= ceiling else min(cap * 2, ceiling))
