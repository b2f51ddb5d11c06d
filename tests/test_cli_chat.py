"""``mnemoflow chat tme`` as a user meets it: on a terminal (a pseudo-terminal here) and with lines piped in."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mnemoflow.llm.backends import OFFLINE
from mnemoflow.nodes.tme.agents import OFFLINE_PHRASING, Classification, Decomposition, classify_messages
from tests.conftest import cli_environment

MNEMOFLOW = str(Path(sys.executable).with_name("mnemoflow"))
LEFT, UP, CTRL_D = "\x1b[D", "\x1b[A", "\x04"


def test_the_offline_phrasing_shown_is_what_the_stand_in_understands() -> None:
    classify = OFFLINE.handlers[Classification]
    for example, _ in OFFLINE_PHRASING:
        reply = classify(classify_messages("(none)", Decomposition(task=example), example))
        assert isinstance(reply, Classification) and len(reply.operations) == 1, example
        assert reply.operations[0].intent == "new" and reply.operations[0].value
    plain = "I want to plan a trip to Lisbon"
    assert classify(classify_messages("(none)", Decomposition(task=plain), plain)) == Classification(operations=[])


def environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    return cli_environment("sqlite", tmp_path, namespace="chat", MNEMOFLOW_LLM_OFFLINE="1", **extra)


def piped(tmp_path: Path, lines: str, *options: str, session: str = "trip", **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MNEMOFLOW, *options, "chat", "tme", "--session", session],
        input=lines,
        cwd=tmp_path,
        env=environment(tmp_path, **extra),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.subprocess
@pytest.mark.slow
def test_piped_lines_commands_are_never_turns_and_no_log_lines(tmp_path: Path) -> None:
    lines = "/help\n/bogus now\n\ndestination: Lisbon\n//etc is a folder\n/tree\n/quit\nset destination to Madrid\n"
    result = piped(tmp_path, lines)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("-- task memory after turn 0 --\n(no tasks yet)\ncommands:\n")  # no banner when piped
    assert "/help" in out and "/tree" in out and "/quit" in out and "destination: Lisbon " in out  # /help's answer
    assert out.count("assistant> ") == 2 and "User: /help" not in out and "User: /bogus" not in out
    assert "User: /etc is a folder" in out  # a line starting with // is a turn starting with /
    assert out.count("-- task memory after turn 2 --\n- destination: Lisbon  v1") == 2  # after the turn, and /tree
    assert "Madrid" not in out  # /quit stopped the chat
    # on stderr only the new store's note and the refusal: no log line
    assert result.stderr.splitlines() == [
        f"note: created a new, empty store at {tmp_path / 'memory.db'}",
        "unknown command /bogus; the commands are /help, /tree, /quit",
    ]
    assert not (tmp_path / "chat-history").exists()  # piped lines are no history

    verbose = piped(tmp_path, "/tree\ndeparture date: May 3\n", "-v", MNEMOFLOW_LOG_FORMAT="json")
    assert verbose.returncode == 0, verbose.stderr
    assert "-- task memory after turn 3 --" in verbose.stdout and "- departure date: May 3  v1" in verbose.stdout
    assert '"event": "run.end"' in verbose.stderr  # -v asks for the log lines, as MNEMOFLOW_LOG_LEVEL does
    by_variable = piped(tmp_path, "/quit\n", MNEMOFLOW_LOG_LEVEL="debug", MNEMOFLOW_LOG_FORMAT="json")
    assert '"event": "parts.open"' in by_variable.stderr


@pytest.mark.subprocess
@pytest.mark.slow
def test_chat_tme_remembers_and_updates_across_invocations(tmp_path: Path) -> None:
    first = piped(tmp_path, "destination: Paris\ndeparture date: May 3\nset destination to Rome\n/tree\n/quit\n", session="s1")
    assert first.returncode == 0, first.stderr
    out = first.stdout
    assert out.startswith("-- task memory after turn 0 --\n(no tasks yet)")
    assert out.count("assistant> ") == 3
    assert out.count("-- task memory after turn 3 --") == 2  # after the third turn, and for /tree
    final_tree = out.rsplit("-- task memory after turn 3 --", 1)[1]
    assert "- destination: Rome  v2" in final_tree and "- departure date: May 3  v1" in final_tree
    assert "Paris" not in final_tree
    second = piped(tmp_path, "", session="s1")
    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith("-- task memory after turn 3 --") and "- destination: Rome  v2" in second.stdout
    other = piped(tmp_path, "", session="s2")
    assert other.returncode == 0 and "(no tasks yet)" in other.stdout


class Terminal:
    """``mnemoflow chat tme`` on a pseudo-terminal: what a person types, and the screen it writes."""

    def __init__(self, tmp_path: Path) -> None:
        self.fd, child = os.openpty()
        self.process = subprocess.Popen(
            [MNEMOFLOW, "chat", "tme", "--session", "trip"],
            cwd=tmp_path,
            env=environment(tmp_path, TERM="xterm", INPUTRC=os.devnull),  # no one's own key bindings
            stdin=child,
            stdout=child,
            stderr=child,
        )
        os.close(child)
        self.screen = ""

    def until_prompt(self) -> str:
        """What was written up to the next prompt (or to the end, when the chat has left)."""
        start, deadline = len(self.screen), time.monotonic() + 60  # a guard against a hang, not a measurement
        while not self.screen[start:].endswith("you> ") and time.monotonic() < deadline:
            if select.select([self.fd], [], [], 1)[0]:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:  # the process closed the terminal
                    break
                if not chunk:
                    break
                self.screen += chunk.decode("utf-8", "replace")
        return self.screen[start:]

    def type(self, keys: str) -> str:
        os.write(self.fd, keys.encode())
        return self.until_prompt()

    def close(self) -> int:
        os.write(self.fd, CTRL_D.encode())
        self.until_prompt()
        code = self.process.wait(timeout=60)
        os.close(self.fd)
        return code


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Callable[[], Terminal]]:
    """Starts chats on pseudo-terminals; any still running at the end (a failed test) is stopped."""
    started: list[Terminal] = []

    def start() -> Terminal:
        started.append(Terminal(tmp_path))
        return started[-1]

    yield start
    for chat in started:
        if chat.process.poll() is None:
            chat.process.kill()
            chat.process.wait()


@pytest.mark.subprocess
@pytest.mark.slow
def test_a_terminal_gets_a_banner_line_editing_and_a_history(tmp_path: Path, terminal: Callable[[], Terminal]) -> None:
    chat = terminal()
    banner = chat.until_prompt()
    assert banner.startswith("Task Memory Engine chat: session 'trip', namespace 'chat', sqlite store ")
    assert "model: the offline stand-in (not a model): MNEMOFLOW_LLM_OFFLINE=1 asks for it" in banner
    assert all(command in banner for command in ("/help", "/tree", "/quit"))
    assert all(example in banner and what in banner for example, what in OFFLINE_PHRASING)
    assert "-- task memory after turn 0 --" in banner
    assert "User: abXc" in chat.type(f"abc{LEFT}X\r")  # the left arrow moved the cursor: readline edits the line
    assert "User: /help" not in chat.type("/help\r")
    assert "- destination: Lisbon  v1" in chat.type("destination: Lisbon\r")
    assert chat.close() == 0
    assert "run.end" not in chat.screen  # no log lines in the conversation
    assert (tmp_path / "chat-history").read_text().splitlines()[-3:] == ["abXc", "/help", "destination: Lisbon"]

    again = terminal()
    assert "-- task memory after turn 2 --" in again.until_prompt()
    recalled = again.type(f"{UP}{UP}{UP}\r")  # three lines back in the last chat's history
    assert "User: abXc" in recalled and "-- task memory after turn 3 --" in recalled
    assert again.close() == 0
