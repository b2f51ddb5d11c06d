"""``mnemoflow chat``: talk to a memory mechanism in the terminal."""

from __future__ import annotations

import asyncio
import sys
from functools import partial
from typing import TYPE_CHECKING, Annotated

import typer

from mnemoflow.cli.common import NamespaceOption, StoreOption, load_settings, register_nodes, with_parts
from mnemoflow.errors import MnemoflowError

if TYPE_CHECKING:
    from mnemoflow.graphs.parts import RunParts

__all__ = ["app"]

app = typer.Typer(help="Talk to a memory mechanism in the terminal.", no_args_is_help=True)


@app.command("tme")
def tme(
    session: Annotated[str, typer.Option(help="Conversation id: the same id continues the same task memory.")],
    namespace: NamespaceOption = None,
    store: StoreOption = None,
) -> None:
    """A conversation with the Task Memory Engine: one turn per line of input, the task tree printed after each.

    Reads standard input, so a script can drive it too; an empty line is skipped, /tree prints the tree, /quit
    (or end of input) stops.
    """
    settings = load_settings(store, namespace)
    register_nodes(settings)
    interactive = sys.stdin.isatty()

    async def work(parts: RunParts) -> None:
        from mnemoflow.graphs import GraphRunner, load_graph
        from mnemoflow.graphs.runner import LIVE_INTERVAL_S
        from mnemoflow.nodes.tme.conversation import load_conversation
        from mnemoflow.nodes.tme.session import one_turn_at_a_time

        async def tree() -> None:
            conversation = await load_conversation(parts.store, settings.namespace, session)
            typer.echo(f"-- task memory after turn {conversation.turns} --\n{conversation.forest.render()}")

        async with GraphRunner.from_parts(load_graph("tme-turn"), parts, live_interval=LIVE_INTERVAL_S) as runner:
            await tree()
            while True:
                line = await asyncio.to_thread(_read_line, "you> " if interactive else "")
                if line is None or line.strip() == "/quit":
                    break
                if line.strip() == "/tree":
                    await tree()
                    continue
                if not line.strip():
                    continue
                values = {"session": session, "utterance": line.strip()}
                try:
                    result = await one_turn_at_a_time(settings.namespace, session, partial(runner.run, values, namespace=settings.namespace))
                except MnemoflowError as exc:
                    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
                    continue
                typer.echo(f"assistant> {result.state['response']}")
                for problem in result.state["errors"]:
                    typer.secho(f"  not applied: {problem}", fg=typer.colors.YELLOW)
                if result.state["stale"]:
                    typer.echo(f"  marked stale: {', '.join(result.state['stale'])}")
                await tree()

    with_parts(settings, work)


def _read_line(prompt: str) -> str | None:
    try:
        return input(prompt)
    except EOFError:
        return None
