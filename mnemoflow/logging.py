"""structlog, configured once per process.

Commands (``mnemoflow demo``, ``run``...) write warnings only, as readable lines, unless asked: ``-v`` adds info,
``-vv`` debug, ``MNEMOFLOW_LOG_LEVEL`` and ``MNEMOFLOW_LOG_FORMAT`` set both. The server and workers write info and
up, readable on a terminal and JSON lines otherwise. Context bound with :func:`bind_run_context` (namespace, run id,
node) appears on every line logged inside it, across ``await`` points, because it lives in context variables.

A host that keeps its own logs (Prefect, for the flow and task runs of a worker) takes the lines logged while it
has a logger to give, through :func:`route_logs_to`: each as one readable line, and none printed besides.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any, TextIO

import structlog

from mnemoflow.redaction import redact_urls
from mnemoflow.settings import LogSettings

__all__ = [
    "bind_run_context",
    "configure_logging",
    "get_logger",
    "log_level",
    "one_line",
    "pop_log_context",
    "push_log_context",
    "redact_url_credentials",
    "route_logs_to",
]

HostLogger = logging.Logger | logging.LoggerAdapter[Any]
"""A stdlib logger (or adapter, as Prefect's run loggers are) that a host renders and ships."""

_configured = False
_host_logger: Callable[[], HostLogger | None] | None = None
_NOT_IN_LINE = frozenset({"event", "timestamp", "level", "logger", "stack", "exception"})
"""Left out of a host's line: the host stamps the time and level itself; a stack and an exception follow the line."""
_fields = structlog.processors.LogfmtRenderer(bool_as_flag=False)


def log_level(settings: LogSettings, *, service: bool = True, verbosity: int = 0) -> str:
    """The level a process logs at: ``-v``/``-vv`` first, then ``MNEMOFLOW_LOG_LEVEL``, then info for a service
    (the server, a worker, a library user) and warning for a command."""
    if verbosity > 0:
        return "info" if verbosity == 1 else "debug"
    return settings.level or ("info" if service else "warning")


def configure_logging(
    settings: LogSettings | None = None,
    *,
    service: bool = True,
    verbosity: int = 0,
    stream: TextIO | None = None,
    force: bool = False,
    stdlib: bool = True,
) -> None:
    """Configure structlog and (unless ``stdlib`` is false: a host such as Prefect owns it) the stdlib root
    logger; later calls do nothing unless ``force`` is set. ``service`` false is a command: warnings only and
    readable lines unless the settings or ``verbosity`` say otherwise."""
    global _configured
    if _configured and not force:
        return
    settings = settings or LogSettings()
    terminal = (stream or sys.stderr).isatty()
    output: TextIO | _CurrentStderr = stream or _CurrentStderr()
    as_json = settings.format == "json" or (settings.format == "auto" and service and not terminal)
    renderer: Any = structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(colors=terminal)
    level = logging.getLevelNamesMapping()[log_level(settings, service=service, verbosity=verbosity).upper()]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            redact_url_credentials,  # before anything leaves: sees the exception and stack as text
            _to_host_logger,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=output),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    if stdlib:
        handler = logging.StreamHandler(output)
        handler.setFormatter(_RedactingFormatter(logging.BASIC_FORMAT))
        logging.basicConfig(level=max(level, logging.WARNING), handlers=[handler], force=True)
    _configured = True


class _CurrentStderr:
    """Whatever ``sys.stderr`` is when a line is written: a command's log lines follow a later redirection (a test
    runner's capture, closed after the test) instead of writing to the stream that was current at configuration."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def redact_url_credentials(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor: every value of ``event`` (its name, the fields, the bound context, the exception
    rendered as text) with the credentials of the URLs in it hidden, whoever logged it."""
    return {key: _redacted(value) for key, value in event.items()}


def route_logs_to(host_logger: Callable[[], HostLogger | None] | None) -> None:
    """Send each line to the logger ``host_logger()`` returns, when it returns one (Prefect's run logger while a flow or
    task runs), instead of printing it; ``None`` stops routing. The line is :func:`one_line`'s, at the event's level."""
    global _host_logger
    _host_logger = host_logger


def one_line(event: Mapping[str, Any]) -> str:
    """An event as a host's log message: its name, then its fields as ``key=value`` (quoted where needed), then its
    stack and exception, if any, on the lines after."""
    fields = _fields(None, "", {key: value for key, value in event.items() if key not in _NOT_IN_LINE})
    line = " ".join(part for part in (str(event.get("event", "")), fields) if part)
    return "\n".join([line, *(str(event[key]) for key in ("stack", "exception") if event.get(key))])


def _to_host_logger(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor: an event that a host's logger takes goes there, and is not printed."""
    target = _host_logger() if _host_logger is not None else None
    if target is None:
        return event
    level = logging.getLevelNamesMapping().get(str(event.get("level", method)).upper(), logging.INFO)
    target.log(level, one_line(event))
    raise structlog.DropEvent


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact_urls(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {key: _redacted(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_redacted(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_redacted(item) for item in value)
    # anything else (an exception, a URL object...) is rendered by its str or repr; it is replaced by its redacted
    # str only when one of them carries credentials, so that other values keep their own rendering
    text = str(value)
    if redact_urls(text) != text or redact_urls(repr(value)) != repr(value):
        return redact_urls(text)
    return value


class _RedactingFormatter(logging.Formatter):
    """The stdlib's lines, where libraries log (httpx names every URL it requests), without URL credentials."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_urls(super().format(record))


def get_logger(name: str | None = None) -> Any:
    """Return a structlog logger; ``name`` is added as the ``logger`` field."""
    return structlog.get_logger(name) if name is None else structlog.get_logger().bind(logger=name)


@contextmanager
def bind_run_context(*, namespace: str | None = None, run_id: str | None = None, node: str | None = None) -> Iterator[None]:
    """Bind the run's identifiers to every log line written inside the block."""
    values = {key: value for key, value in {"namespace": namespace, "run_id": run_id, "node": node}.items() if value}
    tokens = structlog.contextvars.bind_contextvars(**values)  # tokens restore outer values, cheaply
    try:
        yield
    finally:
        structlog.contextvars.reset_contextvars(**tokens)


def push_log_context(**values: str) -> Mapping[str, contextvars.Token[Any]]:
    """Bind values to every line logged from here on in this context; hand the result to ``pop_log_context``.

    The same as :func:`bind_run_context` without a ``with`` block, for hot paths (one call per graph step).
    """
    return structlog.contextvars.bind_contextvars(**values)


def pop_log_context(tokens: Mapping[str, contextvars.Token[Any]]) -> None:
    """Restore what ``push_log_context`` replaced."""
    structlog.contextvars.reset_contextvars(**tokens)

