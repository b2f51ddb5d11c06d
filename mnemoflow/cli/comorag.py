"""``mnemoflow comorag``: inspect ComoRAG's question workspaces."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from mnemoflow.cli.common import NamespaceOption, StoreOption, fail, load_settings, with_parts

if TYPE_CHECKING:
    from mnemoflow.graphs.parts import RunParts
    from mnemoflow.memory.records import Subgraph

__all__ = ["app"]

app = typer.Typer(
    help="Inspect ComoRAG's indexes and question workspaces.",
    epilog="Example: mnemoflow comorag show QUESTION_ID --namespace demo",
    no_args_is_help=True,
)


@app.command("show", epilog="Example: mnemoflow comorag show QUESTION_ID --namespace demo")
def show(
    question_id: Annotated[str, typer.Argument(help="The question's id, as `mnemoflow demo` prints it.")],
    namespace: NamespaceOption = None,
    store: StoreOption = None,
) -> None:
    """Print a question's workspace: its cycles, probes and memory units."""
    import mnemoflow.nodes.comorag.model  # noqa: F401  (registers the workspace's kinds)

    settings = load_settings(store, namespace)

    async def work(parts: RunParts) -> Subgraph:
        return await parts.store.neighbourhood(
            settings.namespace, question_id, depth=3, relationship_types=["HAS_CYCLE", "ISSUED", "YIELDED"], direction="out"
        )

    workspace = with_parts(settings, work, create_store=False)
    if not workspace.nodes:
        fail(f"no question {question_id!r} in namespace {settings.namespace!r}")
    question, *others = workspace.nodes
    props = question.properties
    typer.echo(f"{props.get('question')}\n  status: {props.get('status')}, final answer: {props.get('final_answer')}")
    for node in others:
        indent = "  " * workspace.distances[node.id]
        if node.kind == "Cycle":
            typer.echo(f"{indent}cycle {node.properties.get('index')}: prediction {node.properties.get('prediction')!r}")
        elif node.kind == "Probe":
            typer.echo(f"{indent}probe: {node.properties.get('text') or node.text}")
        else:
            cue = " ".join((node.text or "").split())
            typer.echo(f"{indent}{node.properties.get('layer', node.kind)} unit: {cue[:140]}{'...' if len(cue) > 140 else ''}")
