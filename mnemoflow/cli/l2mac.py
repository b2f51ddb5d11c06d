"""``mnemoflow l2mac``: work with L2MAC runs' file stores."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mnemoflow.cli.common import NamespaceOption, StoreOption, load_settings, with_parts

if TYPE_CHECKING:
    from mnemoflow.graphs.parts import RunParts
    from mnemoflow.nodes.l2mac.export import ExportedTree

__all__ = ["app"]

app = typer.Typer(
    help="Work with L2MAC runs' file stores.", epilog="Example: mnemoflow l2mac export RUN_ID --to ./project", no_args_is_help=True
)


@app.command("export", epilog="Example: mnemoflow l2mac export RUN_ID --to ./project")
def export(
    run: Annotated[str, typer.Argument(help="The run id (or its thread id), as `mnemoflow run` prints it.")],
    to: Annotated[Path, typer.Option("--to", help="Folder to write the files into; must be empty or missing.")],
    force: Annotated[
        bool, typer.Option(help="Write into a folder that is not empty, overwriting files of the same paths.")
    ] = False,
    namespace: NamespaceOption = None,
    store: StoreOption = None,
) -> None:
    """Write an L2MAC run's final file tree (the current version of every file) to a folder."""
    from mnemoflow.nodes.l2mac.export import export_files

    settings = load_settings(store, namespace)

    async def work(parts: RunParts) -> ExportedTree:
        return await export_files(parts.store, settings.namespace, run, to, force=force)

    exported = with_parts(settings, work, create_store=False)
    for path, why in exported.skipped.items():
        typer.echo(f"warning: skipped {path}: {why}", err=True)
    typer.echo(f"wrote {len(exported.written)} file(s) to {to}")
    for path in exported.written:
        typer.echo(f"  {path}")
