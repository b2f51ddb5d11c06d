"""What the commands share: the option types, settings, errors as exit codes, opening a run's parts, progress.

Nothing heavy is imported here at module level: ``mnemoflow --help`` loads no driver, LangGraph or Prefect.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from mnemoflow.errors import MnemoflowError
from mnemoflow.redaction import redact_urls
from mnemoflow.settings import Settings

if TYPE_CHECKING:
    from mnemoflow.graphs.loader import LoadedGraph
    from mnemoflow.graphs.parts import RunParts
    from mnemoflow.llm.endpoint import Endpoint
    from mnemoflow.nodes.context import ProgressListener

__all__ = [
    "Backend",
    "NamespaceOption",
    "StoreOption",
    "fail",
    "load_graph_or_fail",
    "load_settings",
    "model_for",
    "progress_bar",
    "register_nodes",
    "run_async",
    "with_parts",
]

T = TypeVar("T")


class Backend(StrEnum):
    """The memory backends a command can use."""

    sqlite = "sqlite"
    neo4j = "neo4j"


NamespaceOption = Annotated[str | None, typer.Option(help="Namespace to use; defaults to MNEMOFLOW_NAMESPACE.")]
StoreOption = Annotated[Backend | None, typer.Option("--store", help="Memory backend; defaults to MNEMOFLOW_STORE_BACKEND.")]


def fail(message: str) -> NoReturn:
    """Print ``error: message`` (URLs in it without their credentials) on stderr and exit with code 2."""
    typer.secho(f"error: {redact_urls(message)}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def load_settings(store: Backend | None = None, namespace: str | None = None) -> Settings:
    """The settings, with the command's ``--store`` and ``--namespace`` on top; a bad value exits with its name."""
    try:
        return Settings.load(store=None if store is None else store.value, namespace=namespace)
    except MnemoflowError as exc:
        fail(str(exc))


def run_async(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` to the end; mnemoflow's errors exit with code 2 and their message, without a traceback."""
    try:
        return asyncio.run(work)
    except MnemoflowError as exc:
        fail(str(exc))


def with_parts(settings: Settings, work: Callable[[RunParts], Awaitable[T]], *, checkpointer: bool = False) -> T:
    """Open the run's parts from ``settings`` (store, embedder, model, and the checkpointer when asked), run
    ``work`` with them, close them."""

    async def main() -> T:
        from mnemoflow.graphs.parts import open_run_parts

        async with open_run_parts(settings, checkpointer=checkpointer) as parts:
            return await work(parts)

    return run_async(main())


def register_nodes(settings: Settings) -> None:
    """Register the built-in nodes and the project's own (``MNEMOFLOW_NODE_MODULES``)."""
    from mnemoflow.nodes import import_node_modules, load_builtin_nodes

    load_builtin_nodes()
    try:
        import_node_modules(settings.node_module_names)
    except MnemoflowError as exc:
        fail(str(exc))


def load_graph_or_fail(reference: str, settings: Settings) -> LoadedGraph:
    """The checked graph ``reference`` names (a file or a library name), or exit listing what is wrong with it."""
    from mnemoflow.graphs import load_graph

    register_nodes(settings)
    try:
        return load_graph(reference)
    except FileNotFoundError as exc:
        fail(str(exc))
    except MnemoflowError as exc:
        fail(f"{reference} is not a valid graph:\n{exc}")


@contextmanager
def progress_bar() -> Iterator[ProgressListener]:
    """One progress bar on a terminal's stderr for long work, fed ``(step, done, total)``; nothing elsewhere."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as progress:
        task = progress.add_task("working", total=None)

        def report(step: str, done: int, total: int) -> None:
            progress.update(task, description=step, completed=done, total=total)

        yield report


@contextmanager
def model_for(settings: Settings, purpose: str, *, hint: str = "") -> Iterator[Endpoint]:
    """The endpoint ``purpose`` (``the demo``) uses: the configured one, else the local server, started for it and
    stopped afterwards when it was not running. ``hint`` is added to the error when there is no model."""
    from mnemoflow.llm.endpoint import resolve_endpoint
    from mnemoflow.llm.local_server import start_local_server, stop_local_server

    try:
        endpoint = resolve_endpoint(settings)
        start = endpoint.kind == "offline" and not settings.llm.offline
        if start:
            typer.echo(f"Starting the local model server for {purpose} (a few seconds) ...", err=True)
            start_local_server(settings.local_server)
            endpoint = resolve_endpoint(settings)
    except MnemoflowError as exc:
        fail(f"{exc}\n({hint})" if hint else str(exc))
    try:
        yield endpoint
    finally:
        if start:
            stop_local_server(settings.local_server.home)
