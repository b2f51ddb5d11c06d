"""Where the model is, and what its server was found to take.

:func:`resolve_endpoint` picks the model the settings call for: the offline stand-in when asked, else the server
``OPENAI_BASE_URL``/``OPENAI_API_KEY`` name, else the local model server when it runs, else the stand-in.
:class:`Capabilities` is what the gateway learned an endpoint takes, kept for the process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mnemoflow.errors import ConfigError
from mnemoflow.llm.local_server import INSTALL_HINT, running_local_server
from mnemoflow.redaction import redact_url, redact_urls
from mnemoflow.settings import Settings

__all__ = ["JSON_MODES", "Capabilities", "Endpoint", "forget_capabilities", "learned_capabilities", "resolve_endpoint"]

JSON_MODES = ("json_schema", "json_object_schema", "json_object", "prompt")
"""Structured modes, most constrained first: ``auto`` uses the first one the endpoint accepts."""


@dataclass
class Capabilities:
    """What an endpoint was found to take; learned on first use and shared by every gateway of the process."""

    json_mode: str = JSON_MODES[0]
    native_tools: bool = True


_LEARNED: dict[str, Capabilities] = {}


def forget_capabilities() -> None:
    """Forget what every endpoint was found to take (tests start each server fresh)."""
    _LEARNED.clear()


def learned_capabilities(endpoint: str) -> Capabilities:
    """What ``endpoint`` was found to take so far in this process (shared by every gateway to it)."""
    return _LEARNED.setdefault(endpoint, Capabilities())


@dataclass(frozen=True)
class Endpoint:
    """Where the model is: an OpenAI-compatible server the settings name, the local server, or the offline stand-in."""

    kind: Literal["openai", "local", "offline"]
    model: str
    base_url: str | None = None
    api_key: str | None = None
    slots: int | None = None
    """Requests the server serves at once, when it says."""
    native_tools: bool | None = None
    """Whether its function calling can be used (None: learn it)."""

    def __repr__(self) -> str:
        """Without the API key, and the URL without its credentials: an endpoint may end up in a log or a traceback."""
        return (
            f"Endpoint(kind={self.kind!r}, model={self.model!r}, base_url={redact_url(self.base_url)!r}, "
            f"slots={self.slots!r}, native_tools={self.native_tools!r})"
        )

    def describe(self) -> str:
        if self.kind == "offline":
            return "the offline stand-in (not a model)"
        where = "the local server" if self.kind == "local" else "OpenAI" if self.base_url is None else "an OpenAI-compatible server"
        return f"{self.model} on {where}" + (f" at {redact_urls(self.base_url)}" if self.base_url else "")


def resolve_endpoint(settings: Settings) -> Endpoint:
    """The model the settings call for: ``MNEMOFLOW_LLM_OFFLINE=1``, else ``OPENAI_BASE_URL``/``OPENAI_API_KEY``, else
    the local server running in ``MNEMOFLOW_LOCAL_SERVER_HOME``, else the offline stand-in (refused when
    ``MNEMOFLOW_LLM_OFFLINE=0``)."""
    config, endpoint = settings.llm, settings.openai
    if config.offline:
        return Endpoint("offline", "offline")
    if endpoint.base_url or endpoint.api_key:
        api_key = endpoint.api_key.get_secret_value() if endpoint.api_key else None
        return Endpoint("openai", config.model, endpoint.base_url, api_key)
    local = running_local_server(settings.local_server.home.resolve())
    if local is not None:
        model = config.model if "model" in config.model_fields_set else local.model
        return Endpoint("local", model, local.base_url, None, local.slots, local.native_tools)
    if config.offline is False:
        raise ConfigError(
            "no model: MNEMOFLOW_LLM_OFFLINE=0, OPENAI_BASE_URL and OPENAI_API_KEY are unset and no local model server "
            "runs (start one with `mnemoflow model start`); " + INSTALL_HINT
        )
    return Endpoint("offline", "offline")
