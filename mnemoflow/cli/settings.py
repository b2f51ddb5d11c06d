"""``mnemoflow settings``: the effective configuration."""

from __future__ import annotations

import typer

from mnemoflow.cli.common import load_settings
from mnemoflow.redaction import redact_urls

__all__ = ["show_settings"]


def show_settings() -> None:
    """Print the effective settings (secrets hidden, URLs without their credentials)."""
    # the URL fields hide their credentials as JSON already; this covers a URL in any other value
    typer.echo(redact_urls(load_settings().model_dump_json(indent=2)))
