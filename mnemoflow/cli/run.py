"""``mnemoflow run``: run a graph, or resume one on its thread."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mnemoflow.cli.common import NamespaceOption, StoreOption, fail, load_graph_or_fail, load_settings, progress_bar, with_parts
from mnemoflow.errors import MnemoflowError

if TYPE_CHECKING:
    from mnemoflow.graphs.loader import LoadedGraph
    from mnemoflow.graphs.parts import RunParts
    from mnemoflow.graphs.runner import RunResult

__all__ = ["format_outputs", "read_input", "run"]


def read_input(text: str) -> dict[str, Any]:
    """``--input``: a JSON object, or ``@file`` holding one."""
    try:
        values = json.loads(Path(text[1:]).read_text(encoding="utf-8") if text.startswith("@") else text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        fail(f"--input: {exc}")
    if not isinstance(values, dict):
        fail("--input must be a JSON object of state fields")
    return values


def format_outputs(outputs: dict[str, Any]) -> str:
    """``name: value`` per output field: text as it is (continued lines indented), anything else as compact JSON."""
    lines = []
    for name, value in outputs.items():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
        lines.append(f"{name}: " + text.replace("\n", "\n  "))
    return "\n".join(lines)


def run(
    graph: Annotated[str, typer.Argument(help="A graph file or library name.")],
    input: Annotated[str, typer.Option("--input", help="Input as JSON, or @file holding JSON.")] = "{}",
    thread: Annotated[str | None, typer.Option(help="Thread id: run again with the same id to resume.")] = None,
    store: StoreOption = None,
    namespace: NamespaceOption = None,
    field: Annotated[str | None, typer.Option(help="Print only this field of the final state (as JSON).")] = None,
    whole_state: Annotated[bool, typer.Option("--json", help="Print the whole final state as JSON (vectors left out).")] = False,
) -> None:
    """Run a graph (or resume one on --thread): print the graph's outputs on stdout, a one-line summary on stderr."""
    from mnemoflow.graphs.outputs import without_vectors
    from mnemoflow.graphs.runner import check_input

    settings = load_settings(store, namespace)
    loaded = load_graph_or_fail(graph, settings)
    values = read_input(input)
    fields = _state_fields(loaded)
    if field is not None and field not in fields:
        fail(f"--field {field!r} is not a field of {loaded.spec.state}; its fields: {', '.join(fields)}")
    if thread is None or values:  # a named thread with no input resumes; the runner checks that case
        try:
            check_input(loaded, values)
        except MnemoflowError as exc:
            fail(str(exc))

    async def work(parts: RunParts) -> RunResult:
        from mnemoflow.graphs import GraphRunner
        from mnemoflow.graphs.runner import LIVE_INTERVAL_S

        with progress_bar() as progress:
            async with GraphRunner.from_parts(loaded, parts, live_interval=LIVE_INTERVAL_S, progress=progress) as runner:
                return await runner.run(values, namespace=settings.namespace, thread_id=thread)

    result = with_parts(settings, work, checkpointer=True)
    if field is not None:
        typer.echo(json.dumps(without_vectors(result.state.get(field)), indent=2, ensure_ascii=False, default=str))
    elif whole_state:
        typer.echo(json.dumps(without_vectors(result.state), indent=2, ensure_ascii=False, default=str))
    else:
        typer.echo(format_outputs(result.outputs))
    typer.echo(result.summary(), err=True)


def _state_fields(loaded: LoadedGraph) -> list[str]:
    from mnemoflow.nodes.registry import REGISTRY

    return list(REGISTRY.states[loaded.spec.state].model_fields)
