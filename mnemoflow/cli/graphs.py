"""``mnemoflow graphs``: list, check, show and render graph files."""

from __future__ import annotations

import json
import shutil
import textwrap
from typing import Annotated

import typer

from mnemoflow.cli.common import load_graph_or_fail, load_settings, register_nodes
from mnemoflow.errors import MnemoflowError

__all__ = ["app"]

app = typer.Typer(
    help="List, check, show and render graph files.", epilog="Example: mnemoflow graphs show comorag-qa", no_args_is_help=True
)


@app.command("list", epilog="Example: mnemoflow graphs list")
def list_graphs() -> None:
    """The shipped graphs, each with the first sentence of its description (`graphs show NAME` has the rest)."""
    import yaml

    from mnemoflow.graphs import library_graphs
    from mnemoflow.graphs.render import first_sentence

    paths = library_graphs()
    column = max((len(path.stem) for path in paths), default=0) + 2
    for path in paths:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        lines = textwrap.wrap(
            first_sentence(str(data.get("description", ""))),
            _text_width(),
            initial_indent=f"{path.stem:<{column}}",
            subsequent_indent=" " * column,
            max_lines=2,
            placeholder=" ...",
            break_long_words=False,
            break_on_hyphens=False,
        )
        typer.echo("\n".join(lines) or path.stem)


@app.command("validate", epilog="Example: mnemoflow graphs validate comorag-qa my-graph.yaml")
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


@app.command("show", epilog="Example: mnemoflow graphs show comorag-qa")
def show(reference: Annotated[str, typer.Argument(help="A graph file or library name.")]) -> None:
    """Describe a graph: its state model, required and optional inputs, outputs, nodes, edges, fan-outs and routes."""
    from mnemoflow.graphs.render import describe_graph

    typer.echo(describe_graph(load_graph_or_fail(reference, load_settings()), width=_text_width()), nl=False)


@app.command("render", epilog="Example: mnemoflow graphs render comorag-qa > comorag-qa.mmd")
def render(reference: Annotated[str, typer.Argument(help="A graph file or library name.")]) -> None:
    """Print the graph as Mermaid text (paste it into any Mermaid viewer)."""
    from mnemoflow.graphs import to_mermaid

    typer.echo(to_mermaid(load_graph_or_fail(reference, load_settings())), nl=False)


@app.command("schema", epilog="Example: mnemoflow graphs schema > graph.schema.json")
def schema() -> None:
    """Print the JSON Schema of graph files, for editors."""
    from mnemoflow.graphs import GraphSpec

    typer.echo(json.dumps(GraphSpec.model_json_schema(by_alias=True), indent=2))


def _text_width() -> int:
    """Columns to wrap text to: the terminal's, within 60 to 100 (100 when the output is not a terminal)."""
    return max(60, min(shutil.get_terminal_size((100, 24)).columns, 100))
