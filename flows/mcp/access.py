"""Who may reach the MCP server over HTTP: the token it asks for and where it may listen.

Kept apart from the server (no SDK import), so that ``mnemoflow mcp --host`` refuses a bad bind at once.
"""

from __future__ import annotations

from typing import NamedTuple

from mnemoflow.errors import ConfigError
from mnemoflow.flows.server.hosts import is_loopback
from mnemoflow.settings import Settings

__all__ = ["McpToken", "check_bind", "mcp_token"]


class McpToken(NamedTuple):
    """The token clients must send, and the variable it was set by (for messages)."""

    value: str
    variable: str


def mcp_token(settings: Settings) -> McpToken | None:
    """``MNEMOFLOW_MCP_TOKEN``, else ``MNEMOFLOW_UI_TOKEN``, else none."""
    if settings.mcp.token is not None:
        return McpToken(settings.mcp.token.get_secret_value(), "MNEMOFLOW_MCP_TOKEN")
    if settings.ui.token is not None:
        return McpToken(settings.ui.token.get_secret_value(), "MNEMOFLOW_UI_TOKEN")
    return None


def check_bind(host: str, settings: Settings) -> None:
    """Refuse to serve beyond loopback without a token."""
    if not is_loopback(host) and mcp_token(settings) is None:
        raise ConfigError(
            f"--host {host} serves beyond this machine: set MNEMOFLOW_MCP_TOKEN (or MNEMOFLOW_UI_TOKEN) so that "
            "clients must send it as 'Authorization: Bearer <token>'"
        )
