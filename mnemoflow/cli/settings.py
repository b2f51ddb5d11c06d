"""``mnemoflow settings``: the effective configuration."""

from __future__ import annotations

import typer

from mnemoflow.cli.common import load_settings

__all__ = ["show_settings"]


def show_settings() -> None:
    """Print the effective settings (secrets hidden)."""
    typer.echo(load_settings().model_dump_json(indent=2))
