"""``mnemoflow mcp``: serve mnemoflow's memory to MCP clients (assistants, agent frameworks) over stdio or HTTP."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from mnemoflow.cli.common import fail, load_settings, register_nodes
from mnemoflow.errors import MnemoflowError

__all__ = ["Transport", "mcp"]


class Transport(StrEnum):
    """How clients reach the server."""

    stdio = "stdio"
    http = "http"


def mcp(
    context: typer.Context,
    transport: Annotated[
        Transport, typer.Option(help="stdio: the client starts this command; http: streamable HTTP at /mcp.")
    ] = Transport.stdio,
    host: Annotated[
        str, typer.Option(help="HTTP: address to listen on; beyond loopback needs MNEMOFLOW_MCP_TOKEN or MNEMOFLOW_UI_TOKEN.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="HTTP: port to listen on.")] = 8766,
) -> None:
    """Serve memory over the Model Context Protocol: ComoRAG, TME and G-Memory tools, search and read.

    The store and model are the ones every command uses (MNEMOFLOW_* settings). Over stdio only protocol messages
    go to stdout; logs go to stderr. Over HTTP the endpoint is /mcp; a token, when set, is asked of every request.
    """
    import anyio

    from mnemoflow.flows.mcp.access import check_bind
    from mnemoflow.logging import configure_logging, log_level

    settings = load_settings()
    if transport is Transport.http:
        try:
            check_bind(host, settings)
        except MnemoflowError as exc:
            fail(str(exc))
    from mnemoflow.flows.mcp import create_server, http_app

    verbosity = int(context.obj or 0)
    # a service: logs on stderr only (stdout is the protocol's over stdio), JSON unless on a terminal
    configure_logging(settings.log, verbosity=verbosity, force=True)
    register_nodes(settings)
    server = create_server(settings)
    if transport is Transport.stdio:
        try:
            anyio.run(server.run_stdio_async)
        except BaseException as exc:  # the store or model could not be opened: say so, without a traceback
            error = _mnemoflow_error(exc)
            if error is None:
                raise
            fail(str(error))
        return
    import uvicorn

    app = http_app(server, settings, host=host)
    typer.echo(f"mnemoflow MCP server at http://{host}:{port}/mcp ({settings.store.backend} store)", err=True)
    # proxy headers are never believed: the throttle's client is the peer
    uvicorn.run(app, host=host, port=port, log_level=log_level(settings.log, verbosity=verbosity), proxy_headers=False)


def _mnemoflow_error(exc: BaseException) -> MnemoflowError | None:
    """The mnemoflow error ``exc`` is, or the first one inside it (the server's task groups wrap what they raise)."""
    if isinstance(exc, MnemoflowError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (found := _mnemoflow_error(inner)) is not None:
                return found
    return None
