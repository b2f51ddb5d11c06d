"""The ``mnemoflow`` command. Heavy layers are imported inside commands so ``--help`` stays fast."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from mnemoflow.errors import MnemoflowError

if TYPE_CHECKING:
    from mnemoflow.settings import Settings
    from memory.protocol import Embedder, GraphStore

__all__ = ["app"]

T = TypeVar("T")

app = typer.Typer(name="mnemoflow", help="Memory mechanisms for LLM agents, as declarative workflows.", no_args_is_help=True)
store_app = typer.Typer(help="Set up and inspect the memory store.", no_args_is_help=True)
app.add_typer(store_app, name="store")

NamespaceOption = Annotated[str | None, typer.Option(help="Namespace to use; defaults to MNEMOFLOW_NAMESPACE.")]
BackendOption = Annotated[str | None, typer.Option(help="sqlite or neo4j; defaults to MNEMOFLOW_STORE_BACKEND.")]


def _settings(backend: str | None = None, namespace: str | None = None) -> Settings:
    from pydantic import ValidationError

    from mnemoflow.logging import configure_logging
    from mnemoflow.settings import Settings, StoreSettings

    try:
        settings = Settings()
        if backend is not None:
            settings = settings.model_copy(update={"store": StoreSettings(backend=backend)})
        if namespace is not None:
            settings = settings.model_copy(update={"namespace": namespace})
    except ValidationError as exc:
        _fail(f"invalid configuration:\n{exc}")
    configure_logging(settings.log)
    return settings


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _run(work: Callable[[GraphStore, Embedder], Awaitable[T]], settings: Settings) -> T:
    """Open the configured store, run ``work`` against it, close it; mnemoflow errors become exit code 2."""
    from memory import embedder_from_settings, store_from_settings

    async def main() -> T:
        embedder = embedder_from_settings(settings)
        store = store_from_settings(settings, embedder)
        try:
            await store.setup()
            return await work(store, embedder)
        finally:
            await store.close()

    try:
        return asyncio.run(main())
    except MnemoflowError as exc:
        raise _fail(str(exc)) from None


@app.command()
def demo(
    query: Annotated[str, typer.Option(help="What to search for.")] = "the storm and the ship near the reef",
    namespace: Annotated[str, typer.Option(help="Namespace the demo text is stored in.")] = "demo",
    backend: BackendOption = None,
) -> None:
    """Ingest a small bundled text into the store and print the top keyword and vector hits."""
    from mnemoflow.logging import bind_run_context, get_logger
    from memory.demo import run_demo

    settings = _settings(backend, namespace)
    log = get_logger("mnemoflow.demo")

    async def work(store: GraphStore, embedder: Embedder) -> Any:
        with bind_run_context(namespace=settings.namespace, run_id=uuid.uuid4().hex[:12]):
            log.info("demo.start", backend=store.backend, embedder=embedder.model)
            result = await run_demo(store, embedder, settings.namespace, query)
            log.info("demo.ingested", chunks=result.chunks_written, document=result.document_id)
            return result

    result = _run(work, settings)
    typer.echo(f"Stored {result.chunks_written} passages in the {settings.store.backend} store (namespace {settings.namespace!r}).")
    typer.echo(f"Query: {query}")
    for title, hits in (("Keyword search (BM25)", result.keyword_hits), ("Vector search (cosine)", result.vector_hits)):
        typer.echo(f"\n{title}:")
        for rank, hit in enumerate(hits, 1):
            text = (hit.node.text or "").replace("\n", " ")
            typer.echo(f"  {rank}. [{hit.score:.3f}] {text[:110]}{'...' if len(text) > 110 else ''}")
        if not hits:
            typer.echo("  (no hits)")


@store_app.command("setup")
def store_setup(backend: BackendOption = None) -> None:
    """Create the store's schema (constraints, indexes, migrations); safe to run again."""
    settings = _settings(backend)

    async def work(store: GraphStore, embedder: Embedder) -> int:
        return await store.schema_version()

    version = _run(work, settings)
    typer.echo(f"{settings.store.backend} store ready at schema version {version}")


@store_app.command("info")
def store_info(namespace: NamespaceOption = None, backend: BackendOption = None) -> None:
    """Print the schema version and the number of records in a namespace."""
    settings = _settings(backend, namespace)

    async def work(store: GraphStore, embedder: Embedder) -> tuple[int, int, int]:
        return (
            await store.schema_version(),
            await store.count_nodes(settings.namespace),
            await store.count_relationships(settings.namespace),
        )

    version, nodes, relationships = _run(work, settings)
    typer.echo(f"backend: {settings.store.backend}\nschema version: {version}")
    typer.echo(f"namespace {settings.namespace!r}: {nodes} nodes, {relationships} relationships")


@app.command("settings")
def show_settings() -> None:
    """Print the effective settings (secrets hidden)."""
    settings = _settings()
    typer.echo(settings.model_dump_json(indent=2))


def main() -> None:  # pragma: no cover - console entry point
    app(sys.argv[1:])
