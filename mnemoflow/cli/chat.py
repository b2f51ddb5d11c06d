"""``mnemoflow chat``: talk to a memory mechanism in the terminal.

On a terminal the chat is one: a banner saying which model it talks to, line editing and a history kept between
chats (readline, where the platform has it), ``/`` commands that are never turns, and no log lines unless asked
for (``-v``). Lines piped in are read the same way, with no banner and no history.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mnemoflow.cli.common import (
    NamespaceOption,
    StoreOption,
    fail,
    load_settings,
    missing_store_file,
    note_new_store,
    register_nodes,
)
from mnemoflow.errors import MnemoflowError
from mnemoflow.redaction import redact_urls
from mnemoflow.settings import Settings

if TYPE_CHECKING:
    from mnemoflow.graphs.runner import GraphRunner
    from mnemoflow.llm.endpoint import Endpoint

__all__ = ["COMMANDS", "HISTORY_FILE", "HISTORY_LENGTH", "app"]

app = typer.Typer(help="Talk to a memory mechanism in the terminal.", no_args_is_help=True)

COMMANDS = {"/help": "show these lines again", "/tree": "print the task memory", "/quit": "leave (Ctrl-D and Ctrl-C too)"}
"""The chat's own commands; any other line starting with ``/`` is refused, never sent as a turn."""

HISTORY_FILE = "chat-history"
"""The file of lines typed in earlier chats, beside the SQLite store's file."""

HISTORY_LENGTH = 1000
"""Lines the history file keeps, the latest."""

PROMPT = "you> "


@app.command("tme", epilog="Example: mnemoflow chat tme --session trip")
def tme(
    context: typer.Context,
    session: Annotated[str, typer.Option(help="Conversation id: the same id continues the same task memory.")],
    namespace: NamespaceOption = None,
    store: StoreOption = None,
) -> None:
    """A conversation with the Task Memory Engine: one turn per line, the task tree printed after each.

    On a terminal it starts with a banner (the model, the session, the commands) and has line editing and a
    history (chat-history beside the SQLite store's file). /help, /tree and /quit are commands, not turns; start a
    line with // to send one that begins with /. Lines can be piped in too: no banner then, an empty line is
    skipped, end of input stops. Logs only errors, unless asked for: mnemoflow -v chat tme ... (-vv: debug).
    """
    from mnemoflow.llm.endpoint import resolve_endpoint

    settings = load_settings(store, namespace)
    register_nodes(settings)
    _log_errors_only(settings, verbosity=int(context.obj or 0))
    interactive = sys.stdin.isatty()
    try:
        endpoint = resolve_endpoint(settings)
    except MnemoflowError as exc:
        fail(str(exc))
    if interactive:
        typer.echo(_banner(settings, session, endpoint))
    with _line_editing(settings.store.sqlite_path.parent / HISTORY_FILE) if interactive else nullcontext():
        _converse(settings, session, offline=endpoint.kind == "offline", prompt=PROMPT if interactive else "")


def _converse(settings: Settings, session: str, *, offline: bool, prompt: str) -> None:
    """Read lines until /quit or the end of input; each other line is a turn, run on one event loop kept for the
    chat, so that reading a line (and Ctrl-C while at it) happens outside it."""
    from mnemoflow.graphs import GraphRunner, load_graph
    from mnemoflow.graphs.parts import open_run_parts
    from mnemoflow.graphs.runner import LIVE_INTERVAL_S

    with asyncio.Runner() as loop:
        opened = AsyncExitStack()
        try:
            missing = missing_store_file(settings)
            parts = loop.run(opened.enter_async_context(open_run_parts(settings, checkpointer=False)))
            note_new_store(missing)
            runner = loop.run(opened.enter_async_context(GraphRunner.from_parts(load_graph("tme-turn"), parts, live_interval=LIVE_INTERVAL_S)))
            loop.run(_print_tree(runner, settings.namespace, session))
            while (line := _read_line(prompt)) is not None:
                text = line.strip()
                if text.startswith("/") and not text.startswith("//"):
                    command = text.split()[0]
                    if command == "/quit":
                        break
                    if command == "/tree":
                        loop.run(_print_tree(runner, settings.namespace, session))
                    elif command == "/help":
                        typer.echo(_help(offline))
                    else:
                        typer.echo(f"unknown command {command}; the commands are {', '.join(COMMANDS)}", err=True)
                    continue
                if text:
                    try:
                        loop.run(_turn(runner, settings.namespace, session, text.removeprefix("/")))
                    except KeyboardInterrupt:
                        typer.echo("\nthe turn was interrupted", err=True)
        except MnemoflowError as exc:
            fail(str(exc))
        finally:
            loop.run(opened.aclose())


async def _turn(runner: GraphRunner, namespace: str, session: str, utterance: str) -> None:
    """Run one turn and print the reply, what could not be applied, what went stale, and the tree."""
    from functools import partial

    from mnemoflow.nodes.tme.session import one_turn_at_a_time

    values = {"session": session, "utterance": utterance}
    try:
        result = await one_turn_at_a_time(namespace, session, partial(runner.run, values, namespace=namespace))
    except MnemoflowError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        return
    typer.echo(f"assistant> {result.state['response']}")
    for problem in result.state["errors"]:
        typer.secho(f"  not applied: {problem}", fg=typer.colors.YELLOW)
    if result.state["stale"]:
        typer.echo(f"  marked stale: {', '.join(result.state['stale'])}")
    await _print_tree(runner, namespace, session)


async def _print_tree(runner: GraphRunner, namespace: str, session: str) -> None:
    from mnemoflow.nodes.tme.conversation import load_conversation

    conversation = await load_conversation(runner.store, namespace, session)
    typer.echo(f"-- task memory after turn {conversation.turns} --\n{conversation.forest.render()}")


def _read_line(prompt: str) -> str | None:
    """The next line, or None at the end of input or on Ctrl-C (which leaves the chat like /quit)."""
    try:
        return input(prompt)
    except (EOFError, KeyboardInterrupt):
        if prompt:  # the shell's prompt comes next, on a line of its own
            typer.echo()
        return None


def _banner(settings: Settings, session: str, endpoint: Endpoint) -> str:
    """What the chat talks to and what it takes, shown once on a terminal."""
    where = settings.store.sqlite_path if settings.store.backend == "sqlite" else redact_urls(settings.neo4j.uri)
    lines = [
        f"Task Memory Engine chat: session {session!r}, namespace {settings.namespace!r}, {settings.store.backend} store {where}",
        f"model: {_model(settings, endpoint)}",
    ]
    return "\n".join([*lines, _help(endpoint.kind == "offline")])


def _model(settings: Settings, endpoint: Endpoint) -> str:
    """The model, and why this one (the stand-in is easy to end up with unawares)."""
    if endpoint.kind == "offline":
        why = (
            "MNEMOFLOW_LLM_OFFLINE=1 asks for it"
            if settings.llm.offline
            else "no OPENAI_BASE_URL or OPENAI_API_KEY is set and no local model server runs (mnemoflow model start)"
        )
        return f"{endpoint.describe()}: {why}"
    if endpoint.kind == "local":
        return endpoint.describe()
    return f"{endpoint.describe()} (configured by {'OPENAI_BASE_URL' if endpoint.base_url else 'OPENAI_API_KEY'})"


def _help(offline: bool) -> str:
    """The commands, and with the offline stand-in the only lines it understands."""
    width = max(len(command) for command in COMMANDS)
    lines = ["commands:", *(f"  {command:<{width}}  {what}" for command, what in COMMANDS.items())]
    lines.append("  (a line starting with // is sent as a turn starting with /)")
    if offline:
        from mnemoflow.nodes.tme.agents import OFFLINE_PHRASING

        width = max(len(example) for example, _ in OFFLINE_PHRASING)
        lines.append("the offline stand-in understands only lines like these; any other line changes nothing:")
        lines += [f"  {example:<{width}}  {what}" for example, what in OFFLINE_PHRASING]
    return "\n".join(lines)


def _log_errors_only(settings: Settings, *, verbosity: int) -> None:
    """Log only errors during the chat unless -v/-vv asked for more: a log line would land in the middle of the
    conversation, and what a turn could not do is shown in it already."""
    if verbosity or settings.log.level is not None:  # asked for with -v or MNEMOFLOW_LOG_LEVEL
        return
    from mnemoflow.logging import configure_logging

    configure_logging(settings.log.model_copy(update={"level": "error"}), service=False, force=True)


@contextmanager
def _line_editing(history: Path) -> Iterator[None]:
    """Line editing and history for ``input()`` (readline, when the platform has it): ``history``'s lines are read
    now, the lines typed in this chat are added to it at the end, the latest ``HISTORY_LENGTH`` kept."""
    try:
        import readline
    except ImportError:  # Windows, and Pythons built without it: plain input()
        yield
        return
    try:
        history.parent.mkdir(parents=True, exist_ok=True)
        history.touch()
        readline.read_history_file(history)
    except OSError as exc:
        typer.echo(f"warning: the chat history {history} cannot be read: {exc}", err=True)
    earlier = readline.get_current_history_length()
    try:
        yield
    finally:
        readline.set_history_length(HISTORY_LENGTH)
        try:
            if hasattr(readline, "append_history_file"):  # another chat may have added lines meanwhile: keep them
                readline.append_history_file(readline.get_current_history_length() - earlier, history)
            else:  # some libedit builds
                readline.write_history_file(history)
        except OSError as exc:
            typer.echo(f"warning: the chat history could not be saved in {history}: {exc}", err=True)
