"""What every route of ``mnemoflow serve`` shares: the server's state, opened when the app starts.

Routers depend on this module, and the app on the routers, so no server module imports another in a loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request

from mnemoflow.flows.server.hooks.config import HookSpec
from mnemoflow.flows.server.hooks.deliveries import DeliveryLog
from mnemoflow.memory.protocol import Embedder, GraphStore
from mnemoflow.settings import Settings

__all__ = ["TOKEN_COOKIE", "ServerState", "server_state"]

TOKEN_COOKIE = "mnemoflow_token"
"""The cookie that carries ``MNEMOFLOW_UI_TOKEN`` for a browser that signed in at ``/login``."""


@dataclass
class ServerState:
    """What every route uses: the settings, the open store and embedder, the hooks and their deliveries."""

    settings: Settings
    store: GraphStore
    embedder: Embedder
    deliveries: DeliveryLog
    hooks: dict[str, HookSpec] = field(default_factory=dict)
    secrets: dict[str, bytes] = field(default_factory=dict)
    """Each hook's secret, read from its environment variable when the app starts."""


def server_state(request: Request) -> ServerState:
    """The state of the app serving ``request`` (a FastAPI dependency)."""
    state: ServerState = request.app.state.mnemoflow
    return state
