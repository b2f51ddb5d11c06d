"""structlog, configured once per process.

Commands (``mnemoflow demo``, ``run``...) write warnings only, as readable lines, unless asked: ``-v`` adds info,
``-vv`` debug, ``MNEMOFLOW_LOG_LEVEL`` and ``MNEMOFLOW_LOG_FORMAT`` set both. The server and workers write info and
up, readable on a terminal and JSON lines otherwise. Context bound with :func:`bind_run_context` (namespace, run id,
node) appears on every line logged inside it, across ``await`` points, because it lives in context variables.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Iterator, Mapping, MutableMapping
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
    "pop_log_context",
    "push_log_context",
    "redact_url_credentials",
]

_configured = False


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
    stream = stream or sys.stderr
    terminal = stream.isatty()
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
            redact_url_credentials,  # last before rendering: sees the exception and stack as text
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    if stdlib:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(_RedactingFormatter(logging.BASIC_FORMAT))
        logging.basicConfig(level=max(level, logging.WARNING), handlers=[handler], force=True)
    _configured = True


def redact_url_credentials(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor: every value of ``event`` (its name, the fields, the bound context, the exception
    rendered as text) with the credentials of the URLs in it hidden, whoever logged it."""
    return {key: _redacted(value) for key, value in event.items()}


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

