"""``mnemoflow store``: set up and inspect the memory store."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from mnemoflow.cli.common import NamespaceOption, StoreOption, load_settings, with_parts

if TYPE_CHECKING:
    from mnemoflow.graphs.parts import RunParts

__all__ = ["app"]

app = typer.Typer(help="Set up and inspect the memory store.", no_args_is_help=True)


@app.command("setup")
def setup(store: StoreOption = None) -> None:
    """Create the store's schema (constraints, indexes, migrations); safe to run again."""
    settings = load_settings(store)

    async def work(parts: RunParts) -> int:
        return await parts.store.schema_version()

    version = with_parts(settings, work)
    typer.echo(f"{settings.store.backend} store ready at schema version {version}")


@app.command("info")
def info(namespace: NamespaceOption = None, store: StoreOption = None) -> None:
    """Print the schema version and the number of records in a namespace."""
    settings = load_settings(store, namespace)

    async def work(parts: RunParts) -> tuple[int, int, int]:
        return (
            await parts.store.schema_version(),
            await parts.store.count_nodes(settings.namespace),
            await parts.store.count_relationships(settings.namespace),
        )

    version, nodes, relationships = with_parts(settings, work)
    typer.echo(f"backend: {settings.store.backend}\nschema version: {version}")
    typer.echo(f"namespace {settings.namespace!r}: {nodes} nodes, {relationships} relationships")
