"""An OpenAI-compatible HTTP server for tests and benchmarks, on a real loopback socket (stdlib only).

Routes: ``POST /v1/embeddings`` (vectors from the hashing embedder, so they are deterministic) and
``POST /v1/chat/completions`` (non-streaming; replies come from scripted :class:`Rule` objects).

A reply is text, JSON (a dict or list, dumped), or tool calls: ``Calls(("write_files", {"files": []}), content="")``
answers with ``message.tool_calls`` (ids ``call_<n>``, unique per server) and finish_reason ``"tool_calls"``; an
argument given as a string is sent raw, so a test can send broken JSON. ``Rule(respond=fn)`` computes each reply:
``fn(body)`` gets the parsed request body (called outside the server's lock, so it may call ``server.count``).

Usage: prompt tokens are the words of every message's content, plus the arguments of assistant tool calls, plus
the JSON of ``tools`` when offered (so prompt growth shows in ``usage``); completion tokens are the words of the
content and of the tool-call arguments.

Faults, by kind: ``"429"`` (with ``Retry-After``), ``"500"``, ``"503"``, ``"drop"`` (close without a response),
``"timeout"`` (sleep ``timeout_sleep`` seconds, then answer) change the transport; ``"malformed"``, ``"fenced"``,
``"prose"``, ``"truncated"`` change the chat reply's content (they are no-ops on embeddings). On a :class:`Calls`
reply, ``"truncated"`` cuts every call's arguments in half (finish_reason ``"length"``), ``"malformed"`` replaces
them with broken JSON, and ``"fenced"`` / ``"prose"`` change nothing. A fault comes from,
in order: ``server.failures`` (bare status codes), ``server.faults`` (kinds, one per request), the matched rule's
``fault``, then a seeded random draw with the rule's or the server's ``fault_rate`` / ``fault_kinds``. Status and
drop faults do not use up a rule's reply (unless the fault is the rule's own), so a retry gets the same answer.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from mnemoflow.llm import LLM, OpenAIBackend
from mnemoflow.memory.embeddings import HashingEmbedder
from mnemoflow.settings import LLMSettings

STATUS_FAULTS = {"429": 429, "500": 500, "503": 503}
TRANSPORT_FAULTS = frozenset({*STATUS_FAULTS, "drop", "timeout"})
CONTENT_FAULTS = frozenset({"malformed", "fenced", "prose", "truncated"})
FAULT_KINDS = TRANSPORT_FAULTS | CONTENT_FAULTS
CHAT_PATH = "/v1/chat/completions"
EMBEDDINGS_PATH = "/v1/embeddings"

Matcher = str | re.Pattern[str] | None


@dataclass(init=False)
class Calls:
    """A reply that calls tools: ``Calls(("name", {"arg": 1}), ("other", '{"broken": '), content="")``.

    Arguments given as a dict are JSON-dumped; a string is sent as is.
    """

    calls: tuple[tuple[str, str], ...]
    content: str

    def __init__(self, *calls: tuple[str, dict[str, Any] | str], content: str = "") -> None:
        self.calls = tuple((name, args if isinstance(args, str) else json.dumps(args)) for name, args in calls)
        self.content = content


Reply = str | dict[str, Any] | list[Any] | Calls


def _check_kinds(kinds: list[str] | tuple[str, ...]) -> None:
    unknown = [kind for kind in kinds if kind not in FAULT_KINDS]
    if unknown:
        raise ValueError(f"unknown fault kinds {unknown}; known: {sorted(FAULT_KINDS)}")


@dataclass
class Rule:
    """Match on the system text and the last user message (substring or compiled regex); reply with text, JSON or calls.

    ``text=`` / ``json=`` give one reply; ``replies=[...]`` give replies in order (text, JSON or :class:`Calls`), the
    last one repeating; ``respond=fn`` computes each reply from the request body. A rule is used at most ``times``
    times (forever when None). ``latency``, ``fault``, ``fault_rate`` and ``fault_kinds`` override the server's
    settings for requests this rule answers.
    """

    system: Matcher = None
    user: Matcher = None
    text: str | None = None
    json: dict[str, Any] | list[Any] | None = None
    replies: list[Reply] = field(default_factory=list)
    times: int | None = None
    latency: float | None = None
    fault: str | None = None
    fault_rate: float | None = None
    fault_kinds: list[str] | None = None
    respond: Callable[[dict[str, Any]], Reply] | None = None
    used: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        given: list[Reply] = [reply for reply in (self.text, self.json) if reply is not None]
        if len(given) + bool(self.replies) + (self.respond is not None) > 1:
            raise ValueError("give one of text=, json=, replies= or respond=")
        self.replies = given or list(self.replies)
        if not self.replies and self.respond is None and self.fault not in TRANSPORT_FAULTS:
            raise ValueError("a rule needs text=, json=, replies= or respond= (or a transport fault=)")
        _check_kinds([self.fault] if self.fault else [])
        _check_kinds(self.fault_kinds or [])

    def matches(self, system: str, user: str) -> bool:
        if self.times is not None and self.used >= self.times:
            return False
        return _matches(self.system, system) and _matches(self.user, user)

    def take(self) -> Reply | None:
        """Use the rule once; return its reply (None for a ``respond=`` rule, ``""`` for a fault-only rule)."""
        reply: Reply | None = self.replies[min(self.used, len(self.replies) - 1)] if self.replies else ""
        if self.respond is not None:
            reply = None
        self.used += 1
        return reply


def _matches(matcher: Matcher, text: str) -> bool:
    if matcher is None:
        return True
    return matcher in text if isinstance(matcher, str) else matcher.search(text) is not None


def _text(content: Any) -> str:
    """A message's content as text: a string, or the text parts of a list of content parts."""
    if isinstance(content, list):
        return "\n".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""


def _prompt(body: dict[str, Any]) -> tuple[str, str]:
    """The system (and developer) text, and the last user message."""
    messages = body.get("messages") or []
    system = "\n".join(_text(m.get("content")) for m in messages if m.get("role") in ("system", "developer"))
    users = [_text(m.get("content")) for m in messages if m.get("role") == "user"]
    return system, users[-1] if users else ""


def _content(reply: Reply) -> str | Calls:
    """A reply as the message content, or the calls."""
    return reply if isinstance(reply, str | Calls) else json.dumps(reply)


def _words(text: str | None) -> int:
    return len(text.split()) if text else 0


def _prompt_tokens(body: dict[str, Any]) -> int:
    """Words of every message's content and assistant tool-call arguments, plus of the tools' JSON."""
    total = 0
    for message in body.get("messages") or []:
        total += _words(_text(message.get("content")))
        for call in message.get("tool_calls") or []:
            total += _words(str((call.get("function") or {}).get("arguments") or ""))
    if body.get("tools"):
        total += _words(json.dumps(body["tools"]))
    return total


def _error(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _apply_content_fault(fault: str | None, content: str | Calls) -> tuple[str | Calls, str]:
    """The content (or calls) and finish_reason after a content fault."""
    if isinstance(content, Calls):
        finish = "tool_calls" if content.calls else "stop"
        if fault == "truncated":
            cut = Calls(*((name, args[: len(args) // 2]) for name, args in content.calls), content=content.content)
            return cut, "length"
        if fault == "malformed":
            return Calls(*((name, '{"answer": ') for name, _ in content.calls), content=content.content), finish
        return content, finish
    if fault == "malformed":
        return '{"answer": ', "stop"
    if fault == "fenced":
        return f"```json\n{content}\n```", "stop"
    if fault == "prose":
        return f"Sure! Here is the JSON you asked for:\n{content}\nLet me know if you need anything else.", "stop"
    if fault == "truncated":
        return content[: len(content) // 2], "length"
    return content, "stop"


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # the default 5 drops bursts of connections (the client then waits ~1 s to retry)


class ScriptedOpenAIServer:
    """Start with ``with ScriptedOpenAIServer() as server:``; point a client at ``server.base_url``."""

    def __init__(
        self,
        dimension: int = 384,
        *,
        seed: int = 0,
        latency: float = 0.0,
        fault_rate: float = 0.0,
        fault_kinds: list[str] | None = None,
        retry_after: str = "0",
        timeout_sleep: float = 5.0,
    ) -> None:
        self.embedder = HashingEmbedder(dimension)
        self.rules: list[Rule] = []
        self.failures: deque[int] = deque()
        self.faults: deque[str] = deque()
        self.wrong_dimension = False
        self.latency = latency
        self.fault_rate = fault_rate
        self.fault_kinds: list[str] = list(fault_kinds) if fault_kinds is not None else ["429", "500", "drop"]
        self.random = random.Random(seed)
        self.retry_after = retry_after
        self.timeout_sleep = timeout_sleep
        self.requests: list[dict[str, Any]] = []
        self.refuse: set[str] = set()
        """Features answered as a server without them would: ``json_schema`` (a 500 whose body is a validation error,
        as llama-cpp-python's server answers), ``json_object`` and ``tools`` (400)."""
        self.tool_call_ids = 0
        self.max_concurrent = 0
        self._active = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = _HTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    # -- lifecycle -------------------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def start(self) -> ScriptedOpenAIServer:
        if not self._thread.is_alive():
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; handlers asleep in latency or a "timeout" fault wake up at once (their threads are daemons)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> ScriptedOpenAIServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def gateway(self) -> LLM:
        """The LLM gateway pointed at this server: cache off, no waiting between retries."""
        config = LLMSettings(cache=False, initial_backoff=0.0, max_backoff=0.01)
        return LLM(OpenAIBackend(base_url=self.base_url, api_key="test", timeout=config.request_timeout), config)

    # -- scripting and counting ------------------------------------------------------------------------------------

    def script(self, *rules: Rule, **rule_fields: Any) -> Rule:
        """Append rules (tried in order); keyword arguments build one more ``Rule(**rule_fields)``. Returns the last."""
        added = [*rules, Rule(**rule_fields)] if rule_fields or not rules else list(rules)
        with self._lock:
            self.rules.extend(added)
        return added[-1]

    @property
    def request_count(self) -> int:
        return len(self.requests)

    def count(self, path: str | None = None, fault: str | None = None) -> int:
        """Requests received, optionally only those whose path ends with ``path`` / that got fault ``fault``."""
        with self._lock:
            return sum(
                1
                for request in self.requests
                if (path is None or request["path"].endswith(path)) and (fault is None or request["fault"] == fault)
            )

    # -- request handling ------------------------------------------------------------------------------------------

    def _choose_fault(self, rule: Rule | None) -> str | None:
        if self.faults:
            return self.faults.popleft()
        if rule is not None and rule.fault:
            return rule.fault
        rate = rule.fault_rate if rule is not None and rule.fault_rate is not None else self.fault_rate
        kinds = rule.fault_kinds if rule is not None and rule.fault_kinds is not None else self.fault_kinds
        if rate and kinds and self.random.random() < rate:
            return self.random.choice(kinds)
        return None

    def _respond(self, handler: _Handler, path: str, body: dict[str, Any], record: dict[str, Any]) -> None:
        if path not in (CHAT_PATH, EMBEDDINGS_PATH):
            handler.reply(404, _error(f"no route {path}", "not_found"))
            return
        if path == CHAT_PATH and body.get("stream"):
            handler.reply(400, _error("the scripted server does not stream", "invalid_request_error"))
            return
        refused = self._refused(body)
        if refused is not None:
            status, message = refused
            handler.reply(status, _error(message, "internal_server_error" if status == 500 else "invalid_request_error"))
            return
        system, user = _prompt(body)
        reply: Reply | None = None
        taken = False
        with self._lock:
            status = self.failures.popleft() if self.failures else None
            rule = next((r for r in self.rules if r.matches(system, user)), None) if path == CHAT_PATH else None
            fault = None if status is not None else self._choose_fault(rule)
            if path == EMBEDDINGS_PATH and fault in CONTENT_FAULTS:
                fault = None
            own_fault = rule is not None and fault is not None and fault == rule.fault
            if rule is not None and status is None and (own_fault or fault not in {*STATUS_FAULTS, "drop"}):
                reply, taken = rule.take(), True
            latency = rule.latency if rule is not None and rule.latency is not None else self.latency
            record["fault"] = fault
        if taken and rule is not None and rule.respond is not None:
            try:
                reply = rule.respond(body)
            except Exception as exc:  # a broken test script: say so at once (a 4xx is not retried)
                handler.reply(400, _error(f"respond= raised {type(exc).__name__}: {exc}", "invalid_request_error", "respond"))
                return
        content = None if reply is None else _content(reply)
        if latency:
            self._stopping.wait(latency)
        if status is not None:
            handler.reply(status, _error(f"scripted failure {status}", "server_error"))
        elif fault == "drop":
            handler.drop()
        elif fault in STATUS_FAULTS:
            headers = {"Retry-After": self.retry_after} if fault == "429" else {}
            kind = "rate_limit_error" if fault == "429" else "server_error"
            handler.reply(STATUS_FAULTS[fault], _error(f"scripted fault {fault}", kind), headers)
        else:
            if fault == "timeout":
                self._stopping.wait(self.timeout_sleep)
            if path == EMBEDDINGS_PATH:
                handler.reply(200, self._embeddings(body))
            elif content is None:
                message = f"no scripted rule matches the user message {user!r} (system: {system[:200]!r})"
                handler.reply(400, _error(message, "invalid_request_error", "unmatched"))
            else:
                handler.reply(200, self._completion(body, *_apply_content_fault(fault, content)))

    def _refused(self, body: dict[str, Any]) -> tuple[int, str] | None:
        kind = (body.get("response_format") or {}).get("type")
        if kind == "json_schema" and "json_schema" in self.refuse:
            return 500, (
                "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), "
                "'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema'}"
            )
        if kind == "json_object" and "json_object" in self.refuse:
            return 400, "response_format json_object is not supported by this model"
        if body.get("tools") and "tools" in self.refuse:
            return 400, "this model does not support tools"
        return None

    def _embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        vectors = [self.embedder.embed_one(text) for text in texts]
        if self.wrong_dimension:
            vectors = [vector[:-1] for vector in vectors]
        tokens = sum(len(str(text).split()) for text in texts)
        return {
            "object": "list",
            "model": body.get("model", "test"),
            "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    def _completion(self, body: dict[str, Any], content: str | Calls, finish_reason: str) -> dict[str, Any]:
        prompt_tokens = _prompt_tokens(body)
        message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
        if isinstance(content, Calls):
            with self._lock:
                first = self.tool_call_ids + 1
                self.tool_call_ids += len(content.calls)
            calls = [
                {"id": f"call_{first + index}", "type": "function", "function": {"name": name, "arguments": arguments}}
                for index, (name, arguments) in enumerate(content.calls)
            ]
            message = {"role": "assistant", "content": content.content or None, "refusal": None}
            if calls:
                message["tool_calls"] = calls
            completion_tokens = _words(content.content) + sum(_words(arguments) for _, arguments in content.calls)
        else:
            completion_tokens = _words(content)
        return {
            "id": f"chatcmpl-scripted-{self.request_count}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "test"),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def _handler(self) -> type[_Handler]:
        server = self

        class Handler(_Handler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    body = {"raw": raw.decode(errors="replace")}
                path = self.path.split("?", 1)[0]
                self.record = {"path": path, "body": body, "fault": None, "status": None}
                with server._lock:
                    server.requests.append(self.record)
                    server._active += 1
                    server.max_concurrent = max(server.max_concurrent, server._active)
                try:
                    server._respond(self, path, body, self.record)
                except OSError:
                    pass  # the client went away (e.g. it timed out first)
                finally:
                    with server._lock:
                        server._active -= 1

        return Handler


class _Handler(BaseHTTPRequestHandler):
    record: dict[str, Any]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def reply(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self.record["status"] = status
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def drop(self) -> None:
        """Close the connection without a response."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
