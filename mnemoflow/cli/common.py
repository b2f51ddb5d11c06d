"""What the commands share: the option types, settings, errors as exit codes, opening a run's parts, progress.

Nothing heavy is imported here at module level: ``mnemoflow --help`` loads no driver, LangGraph or Prefect.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from enum import Enum, StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from mnemoflow.errors import MnemoflowError
from mnemoflow.redaction import redact_url, redact_urls
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
    "missing_store_file",
    "model_for",
    "note_new_store",
    "progress_bar",
    "register_nodes",
    "require_store",
    "run_async",
    "store_location",
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


class _NoOption(Enum):
    """The command has no such option (tells ``load_settings()`` from ``load_settings(None)``)."""

    absent = "absent"


def load_settings(
    store: Backend | None | _NoOption = _NoOption.absent, namespace: str | None | _NoOption = _NoOption.absent
) -> Settings:
    """The settings, with the command's ``--store`` and ``--namespace`` on top (pass them, None when not given, if
    the command has them); a bad value exits naming its environment variable and the flag, when the command has one."""
    flags = {"store.backend": "--store"} if store is not _NoOption.absent else {}
    if namespace is not _NoOption.absent:
        flags["namespace"] = "--namespace"
    try:
        return Settings.load(
            store=store.value if isinstance(store, Backend) else None,
            namespace=namespace if isinstance(namespace, str) else None,
            flags=flags,
        )
    except MnemoflowError as exc:
        fail(str(exc))


def store_location(settings: Settings) -> str:
    """Which store ``settings`` open, for a person: ``sqlite at /abs/memory.db``, or the Neo4j URI (without its
    credentials) and database."""
    if settings.store.backend == "neo4j":
        return f"neo4j at {redact_url(settings.neo4j.uri)}, database {settings.neo4j.database}"
    return f"sqlite at {_sqlite_file(settings)}"


def _sqlite_file(settings: Settings) -> Path | None:
    """The absolute path of the SQLite store ``settings`` open; None on another backend."""
    return settings.store.sqlite_path.resolve() if settings.store.backend == "sqlite" else None


def missing_store_file(settings: Settings) -> Path | None:
    """The absolute path of the SQLite store ``settings`` open when the file does not exist yet; None when it does,
    and on Neo4j. Take it before opening the store, for :func:`require_store` or :func:`note_new_store`."""
    path = _sqlite_file(settings)
    return path if path is not None and not path.exists() else None


def require_store(missing: Path | None) -> None:
    """Exit naming the file when :func:`missing_store_file` found it missing: a command that only reads memory
    does not create an empty store (and read nothing from it)."""
    if missing is not None:
        fail(
            f"no store at {missing} (MNEMOFLOW_STORE_SQLITE_PATH sets where; commands that write create it, "
            "e.g. mnemoflow store setup or mnemoflow demo)"
        )


def note_new_store(missing: Path | None) -> None:
    """Say on stderr that the command created the store :func:`missing_store_file` found missing, if it did; call it
    once, after opening the store."""
    if missing is not None and missing.exists():
        typer.echo(f"note: created a new, empty store at {missing}", err=True)


def run_async(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` to the end; mnemoflow's errors exit with code 2 and their message, without a traceback."""
    try:
        return asyncio.run(work)
    except MnemoflowError as exc:
        fail(str(exc))


def with_parts(
    settings: Settings, work: Callable[[RunParts], Awaitable[T]], *, checkpointer: bool = False, create_store: bool = True
) -> T:
    """Open the run's parts from ``settings`` (store, embedder, model, and the checkpointer when asked), run
    ``work`` with them, close them.

    A command that creates the SQLite store says so on stderr, once. One that only reads memory passes
    ``create_store=False``: where the file is missing it exits naming the path, instead of creating an empty store.
    """
    missing = missing_store_file(settings)
    if not create_store:
        require_store(missing)

    async def main() -> T:
        from mnemoflow.graphs.parts import open_run_parts

        async with open_run_parts(settings, checkpointer=checkpointer) as parts:
            note_new_store(missing)
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
