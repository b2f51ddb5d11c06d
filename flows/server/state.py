"""What every route of ``mnemoflow serve`` shares: the server's state, opened when the app starts.

Routers depend on this module, and the app on the routers, so no server module imports another in a loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request

from mnemoflow.flows.server.auth import FailureThrottle, Sessions
from mnemoflow.flows.server.hooks.config import HookSpec
from mnemoflow.flows.server.hooks.deliveries import DeliveryLog
from mnemoflow.flows.server.hooks.trigger import PrefectTrigger
from mnemoflow.flows.server.launcher import RunLauncher
from mnemoflow.memory.protocol import Embedder, GraphStore
from mnemoflow.settings import Settings

__all__ = ["ServerState", "server_state"]


@dataclass
class ServerState:
    """What every route uses: the settings, the open store and embedder, the hooks and their deliveries, the trigger of
    their flow runs, sign-in, and the launcher of the runs started from the UI."""

    settings: Settings
    store: GraphStore
    embedder: Embedder
    deliveries: DeliveryLog
    hooks: dict[str, HookSpec] = field(default_factory=dict)
    secrets: dict[str, bytes] = field(default_factory=dict)
    """Each hook's secret, read from its environment variable when the app starts."""
    sessions: Sessions | None = None
    """Sign-in sessions for ``MNEMOFLOW_UI_TOKEN``; ``None`` when no token is set (loopback only)."""
    throttle: FailureThrottle = field(default_factory=FailureThrottle)
    """Wrong tokens per client, shared by ``/login`` and the token guard."""
    launcher: RunLauncher | None = None
    """Starts, resumes and forks runs; set when the app starts (``None`` only for a state built without runs)."""
    trigger: PrefectTrigger = field(init=False)
    """Creates the hooks' flow runs through one Prefect client, each within ``settings.hooks.prefect_wait_s``; the
    app closes it when it stops."""

    def __post_init__(self) -> None:
        self.trigger = PrefectTrigger(wait_s=self.settings.hooks.prefect_wait_s)


def server_state(request: Request) -> ServerState:
    """The state of the app serving ``request`` (a FastAPI dependency)."""
    state: ServerState = request.app.state.mnemoflow
    return state
