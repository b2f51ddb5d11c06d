"""``mnemoflow store``: set up and inspect the memory store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import typer

from mnemoflow.cli.common import NamespaceOption, StoreOption, load_settings, store_location, with_parts

if TYPE_CHECKING:
    from mnemoflow.graphs.parts import RunParts

__all__ = ["app"]

app = typer.Typer(help="Set up and inspect the memory store.", no_args_is_help=True)


@dataclass(frozen=True)
class NamespaceContents:
    """What one namespace holds, as ``store info`` prints it."""

    name: str
    kinds: dict[str, int]
    """Node count per kind, by kind name."""
    relationships: int


@app.command("setup")
def setup(store: StoreOption = None) -> None:
    """Create the store's schema (constraints, indexes, migrations); safe to run again.

    Example: mnemoflow store setup --store neo4j
    """
    settings = load_settings(store)

    async def work(parts: RunParts) -> int:
        return await parts.store.schema_version()

    version = with_parts(settings, work)
    typer.echo(f"store ready at schema version {version}: {store_location(settings)}")


@app.command("info")
def info(namespace: NamespaceOption = None, store: StoreOption = None) -> None:
    """Print which store is open, its schema version and its records by namespace and kind; creates no store.

    Lists every namespace, or only the one --namespace (or MNEMOFLOW_NAMESPACE) names.

    Example: mnemoflow store info --namespace demo
    """
    settings = load_settings(store, namespace)
    chosen = settings.namespace if "namespace" in settings.model_fields_set else None  # given, not the default

    async def work(parts: RunParts) -> tuple[int, list[NamespaceContents]]:
        names = [chosen] if chosen is not None else [summary.name for summary in await parts.store.namespaces()]
        contents = [
            NamespaceContents(name, await parts.store.count_nodes_by_kind(name), await parts.store.count_relationships(name))
            for name in names
        ]
        return await parts.store.schema_version(), contents

    version, contents = with_parts(settings, work, create_store=False)
    typer.echo(f"store: {store_location(settings)}\nschema version: {version}")
    if not contents:
        typer.echo("no namespace holds records yet")
    for namespace_contents in contents:
        typer.echo(
            f"namespace {namespace_contents.name!r}: {sum(namespace_contents.kinds.values())} nodes, "
            f"{namespace_contents.relationships} relationships"
        )
        for kind, count in namespace_contents.kinds.items():
            typer.echo(f"  {kind}: {count}")
