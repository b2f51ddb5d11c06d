"""``mnemoflow graphs``: list, check, show and render graph files."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from mnemoflow.cli.common import load_graph_or_fail, load_settings, register_nodes
from mnemoflow.errors import MnemoflowError

__all__ = ["app"]

app = typer.Typer(help="List, check, show and render graph files.", no_args_is_help=True)


@app.command("list")
def list_graphs() -> None:
    """The shipped graphs, with their descriptions."""
    import yaml

    from mnemoflow.graphs import library_graphs

    for path in library_graphs():
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        description = " ".join(str(data.get("description", "")).split())
        typer.echo(f"{path.stem:<24} {description}")


@app.command("validate")
def validate(references: Annotated[list[str], typer.Argument(help="Graph files or library names.")]) -> None:
    """Check graph files; exit 1 and list every problem (file:line:column) when one is invalid."""
    from mnemoflow.graphs import load_graph

    register_nodes(load_settings())
    failed = False
    for reference in references:
        try:
            graph = load_graph(reference)
        except FileNotFoundError as exc:
            typer.secho(f"{reference}: {exc}", fg=typer.colors.RED, err=True)
            failed = True
        except MnemoflowError as exc:
            typer.secho(str(exc), fg=typer.colors.RED, err=True)
            failed = True
        else:
            typer.echo(f"{graph.path}: ok ({graph.spec.name} v{graph.spec.version}, {len(graph.spec.nodes)} nodes)")
    if failed:
        raise typer.Exit(code=1)


@app.command("show")
def show(reference: Annotated[str, typer.Argument(help="A graph file or library name.")]) -> None:
    """Describe a graph: its state, input and each node with its documentation."""
    from mnemoflow.nodes import REGISTRY

    graph = load_graph_or_fail(reference, load_settings())
    spec = graph.spec
    typer.echo(f"{spec.name} v{spec.version} ({graph.path})\n{' '.join(spec.description.split())}\n")
    typer.echo(f"state: {spec.state}   input: {', '.join(spec.input) or '-'}   max_steps: {spec.max_steps or '-'}\n")
    for name, node in spec.nodes.items():
        if node.use is not None:
            definition = REGISTRY.nodes[node.use]
            typer.echo(f"{name}: {node.use} {node.with_ or ''}".rstrip())
            typer.echo(f"    {definition.doc.splitlines()[0]}")
            typer.echo(f"    reads {', '.join(sorted(definition.reads)) or '-'}; writes {', '.join(sorted(definition.writes)) or '-'}")
        else:
            typer.echo(f"{name}: graph {node.graph}")
    for route in spec.routes:
        outcomes = ", ".join(f"{outcome} -> {target}" for outcome, target in route.outcomes.items())
        typer.echo(f"route after {route.from_}: {route.router} ({outcomes})")


@app.command("render")
def render(reference: Annotated[str, typer.Argument(help="A graph file or library name.")]) -> None:
    """Print the graph as Mermaid text (paste it into any Mermaid viewer)."""
    from mnemoflow.graphs import to_mermaid

    typer.echo(to_mermaid(load_graph_or_fail(reference, load_settings())), nl=False)


@app.command("schema")
def schema() -> None:
    """Print the JSON Schema of graph files, for editors."""
    from mnemoflow.graphs import GraphSpec

    typer.echo(json.dumps(GraphSpec.model_json_schema(by_alias=True), indent=2))
