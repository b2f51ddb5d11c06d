"""``mnemoflow run``: run a graph, or resume one on its thread."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mnemoflow.cli.common import NamespaceOption, StoreOption, fail, load_graph_or_fail, load_settings, progress_bar, with_parts

if TYPE_CHECKING:
    from mnemoflow.graphs.parts import RunParts
    from mnemoflow.graphs.runner import RunResult

__all__ = ["read_input", "run"]


def read_input(text: str) -> dict[str, Any]:
    """``--input``: a JSON object, or ``@file`` holding one."""
    try:
        values = json.loads(Path(text[1:]).read_text(encoding="utf-8") if text.startswith("@") else text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        fail(f"--input: {exc}")
    if not isinstance(values, dict):
        fail("--input must be a JSON object of state fields")
    return values


def run(
    graph: Annotated[str, typer.Argument(help="A graph file or library name.")],
    input: Annotated[str, typer.Option("--input", help="Input as JSON, or @file holding JSON.")] = "{}",
    thread: Annotated[str | None, typer.Option(help="Thread id: run again with the same id to resume.")] = None,
    store: StoreOption = None,
    namespace: NamespaceOption = None,
    field: Annotated[str | None, typer.Option(help="Print only this field of the final state.")] = None,
) -> None:
    """Run a graph (or resume one on --thread) and print its final state and a one-line summary."""
    settings = load_settings(store, namespace)
    loaded = load_graph_or_fail(graph, settings)
    values = read_input(input)

    async def work(parts: RunParts) -> RunResult:
        from mnemoflow.graphs import GraphRunner
        from mnemoflow.graphs.runner import LIVE_INTERVAL_S

        with progress_bar() as progress:
            async with GraphRunner.from_parts(loaded, parts, live_interval=LIVE_INTERVAL_S, progress=progress) as runner:
                return await runner.run(values, namespace=settings.namespace, thread_id=thread)

    result = with_parts(settings, work, checkpointer=True)
    if field is not None:
        if field not in result.state:
            fail(f"--field {field!r} is not in the final state: {', '.join(result.state)}")
        typer.echo(json.dumps(result.state[field], indent=2, default=str))
    else:
        typer.echo(json.dumps(result.state, indent=2, default=str))
    typer.echo(result.summary(), err=True)
