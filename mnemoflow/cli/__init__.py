"""The ``mnemoflow`` command, the top layer: one module per command group, assembled here.

Commands import the layers they use inside their bodies, so ``mnemoflow --help`` loads no database driver,
LangGraph, Prefect or scikit-learn. Results go to stdout; errors, warnings and (with ``-v``) logs to stderr.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from mnemoflow.cli import chat, comorag, graphs, ingest, l2mac, model, prefect, store
from mnemoflow.cli.common import fail
from mnemoflow.cli.demo import demo
from mnemoflow.cli.eval import evaluate_command
from mnemoflow.cli.mcp import mcp
from mnemoflow.cli.run import run
from mnemoflow.cli.serve import serve
from mnemoflow.cli.settings import show_settings
from mnemoflow.errors import MnemoflowError

__all__ = ["app", "main"]

app = typer.Typer(
    name="mnemoflow",
    help="Memory mechanisms for LLM agents, as declarative workflows.",
    epilog="Example: mnemoflow demo --offline",
    no_args_is_help=True,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"mnemoflow {version('mnemoflow')}")
        raise typer.Exit()


@app.callback()
def options(
    context: typer.Context,
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose", "-v", count=True, show_default=False, help="Log info (-v) or debug (-vv) lines to stderr; warnings only by default."
        ),
    ] = 0,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Memory mechanisms for LLM agents, as declarative workflows."""
    from mnemoflow.logging import configure_logging
    from mnemoflow.settings import LogSettings, load_group

    try:
        configure_logging(load_group(LogSettings), service=False, verbosity=verbose)
    except MnemoflowError as exc:
        fail(str(exc))
    context.obj = verbose  # for `serve`, which logs as a service


app.command(epilog="Example: mnemoflow demo --offline")(demo)
app.command(epilog="Example: mnemoflow run text-stats --input '{\"text\": \"One. Two three.\"}'")(run)
app.command(epilog="Example: mnemoflow serve --port 8765")(serve)
app.command(epilog="Example: mnemoflow mcp --transport http --port 8766")(mcp)
app.command("eval", epilog="Example: mnemoflow eval comorag --quick")(evaluate_command)
app.command("settings", epilog="Example: mnemoflow settings")(show_settings)
app.add_typer(graphs.app, name="graphs")
app.add_typer(store.app, name="store")
app.add_typer(ingest.app, name="ingest")
app.add_typer(comorag.app, name="comorag")
app.add_typer(l2mac.app, name="l2mac")
app.add_typer(chat.app, name="chat")
app.add_typer(prefect.app, name="prefect")
app.add_typer(model.app, name="model")


def main() -> None:  # pragma: no cover - console entry point
    app(sys.argv[1:])
