"""``mnemoflow serve``: the webhook receiver and the web UI."""

from __future__ import annotations

from typing import Annotated

import typer

from mnemoflow.cli.common import fail, load_settings, register_nodes
from mnemoflow.errors import MnemoflowError

__all__ = ["serve"]


def serve(
    context: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on; anything but loopback needs MNEMOFLOW_UI_TOKEN.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8765,
) -> None:
    """Serve the webhook receiver (POST /hooks/NAME) and the web UI (graphs, runs, memory)."""
    import uvicorn
    from prefect.settings import PREFECT_API_URL

    from mnemoflow.flows.server.app import check_bind, create_app
    from mnemoflow.logging import configure_logging, log_level

    settings = load_settings()
    verbosity = int(context.obj or 0)
    level = log_level(settings.log, verbosity=verbosity)
    configure_logging(settings.log, verbosity=verbosity, force=True)  # a service: info and up, JSON unless on a terminal
    register_nodes(settings)
    try:
        check_bind(host, settings)
        server_app = create_app(settings, host=host)
    except MnemoflowError as exc:
        fail(str(exc))
    hooks = f"hooks from {settings.hooks.file}" if settings.hooks.file else "no hooks (MNEMOFLOW_HOOKS_FILE is unset)"
    typer.echo(f"mnemoflow serving http://{host}:{port}/ ({settings.store.backend} store, {hooks})")
    if settings.hooks.file and not PREFECT_API_URL.value():
        typer.secho("warning: PREFECT_API_URL is not set: hooks will answer 503 until it is", fg=typer.colors.YELLOW, err=True)
    # proxy headers are the app's to believe (MNEMOFLOW_UI_TRUSTED_PROXIES), never uvicorn's default list
    uvicorn.run(server_app, host=host, port=port, log_level=level, proxy_headers=False)
