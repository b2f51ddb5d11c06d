"""``mnemoflow model``: the local model server (start, stop, status) and which model commands use."""

from __future__ import annotations

import typer

from mnemoflow.cli.common import fail, load_settings
from mnemoflow.errors import MnemoflowError

__all__ = ["app"]

app = typer.Typer(help="The local model server, and which model commands use.", epilog="Example: mnemoflow model status", no_args_is_help=True)


@app.command("start", epilog="Example: mnemoflow model start --port 8081")
def start(port: int = typer.Option(0, help="Loopback port; 0 picks a free one.")) -> None:
    """Start the local model server in the background (or find it running) and print its address."""
    from mnemoflow.llm.local_server import start_local_server

    settings = load_settings()
    shown = False

    def waiting(seconds: float) -> None:
        nonlocal shown
        if not shown:
            typer.echo("starting the local model server (a few seconds) ...", err=True)
            shown = True

    try:
        server = start_local_server(settings.local_server, port=port, on_wait=waiting)
    except MnemoflowError as exc:
        fail(str(exc))
    typer.echo(f"{server.model} at {server.base_url} (log: {server.log})")


@app.command("stop", epilog="Example: mnemoflow model stop")
def stop() -> None:
    """Stop the local model server."""
    from mnemoflow.llm.local_server import stop_local_server

    settings = load_settings()
    stopped = stop_local_server(settings.local_server.home)
    typer.echo("stopped the local model server" if stopped else "no local model server was running")


@app.command("status", epilog="Example: mnemoflow model status")
def status() -> None:
    """Say which model commands use now, and whether the local server runs and answers."""
    from mnemoflow.llm.endpoint import resolve_endpoint
    from mnemoflow.llm.local_server import local_model_file, running_local_server, server_answers

    settings = load_settings()
    try:
        endpoint = resolve_endpoint(settings)
    except MnemoflowError as exc:
        fail(str(exc))
    typer.echo(f"commands use: {endpoint.describe()}")
    server = running_local_server(settings.local_server.home.resolve())
    if server is None:
        try:
            file = local_model_file(settings.local_server)
            typer.echo(f"local server: not running (model file {file}); start it with `mnemoflow model start`")
        except MnemoflowError as exc:
            typer.echo(f"local server: not running; {exc}")
        raise typer.Exit(code=3)
    answers = "answering" if server_answers(server.base_url) else "NOT answering (see its log)"
    typer.echo(f"local server: {server.model} at {server.base_url}, process {server.pid}, {answers}")
    typer.echo(f"  model file: {server.file}\n  log: {server.log}")
