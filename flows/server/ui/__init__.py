"""The web UI of ``mnemoflow serve``: graphs, runs and memory, as server-rendered pages over JSON APIs."""

from mnemoflow.flows.server.ui.routes import mount_ui

__all__ = ["mount_ui"]
