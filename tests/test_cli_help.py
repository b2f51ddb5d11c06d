"""Help that reads well: every command's help shows an example, `graphs list` fits the terminal, `graphs show` tells
everything needed to run a graph."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.core import TyperGroup
from typer.testing import CliRunner

from mnemoflow.cli import app
from mnemoflow.graphs import library_graphs, load_graph
from mnemoflow.graphs.render import first_sentence

MNEMOFLOW = str(Path(sys.executable).with_name("mnemoflow"))
ANSI = re.compile(r"\x1b\[[0-9;]*m")
EXAMPLE_HEADING = re.compile(r"^\s*Examples?:\s*(.*)$")


def commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command a user can run (typer's click commands), by its words after ``mnemoflow``, sub-apps included."""
    if isinstance(command, TyperGroup):
        for name, sub in sorted(command.commands.items()):
            yield from commands(sub, (*path, name))
    else:
        yield path, command


COMMANDS = dict(commands(typer.main.get_command(app)))


def invoke(*arguments: str, columns: int = 80) -> str:
    result = CliRunner().invoke(app, list(arguments), env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    return ANSI.sub("", result.stdout)


def examples(help_text: str) -> list[str]:
    """The commands under an ``Example:`` or ``Examples:`` heading: on its line, or on the lines after it up to the
    first that is not blank and not a ``mnemoflow`` command."""
    found: list[str] = []
    lines = [line.strip() for line in help_text.splitlines()]
    for number, line in enumerate(lines):
        heading = EXAMPLE_HEADING.match(line)
        if heading is None:
            continue
        following = [heading.group(1)] if heading.group(1) else []
        for after in lines[number + 1 :]:
            if after and not after.startswith("mnemoflow "):
                break
            following.append(after)
        found += [text for text in following if text.startswith("mnemoflow ")]
    return found


def test_the_walk_finds_the_commands_of_sub_apps() -> None:
    assert {("demo",), ("graphs", "show"), ("graphs", "list"), ("model", "status"), ("store", "info")} <= COMMANDS.keys()


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_every_command_help_has_an_example_that_parses(path: tuple[str, ...]) -> None:
    own = [example for example in examples(invoke(*path, "--help")) if example.split()[1 : 1 + len(path)] == list(path)]
    assert own, f"`mnemoflow {' '.join(path)} --help` shows no 'Example: mnemoflow {' '.join(path)} ...' line"
    for example in own:
        try:
            arguments = shlex.split(example)[1 + len(path) :]
        except ValueError as exc:  # an open quote: the line was wrapped at 80 columns
            pytest.fail(f"the example {example!r} is cut at 80 columns ({exc}): shorten it")
        for redirection in (">", ">>", "|", "<"):
            if redirection in arguments:
                arguments = arguments[: arguments.index(redirection)]
        try:  # parses the example's options and arguments as the command would (an unknown or missing one fails)
            COMMANDS[path].make_context(" ".join(path), arguments)
        except typer.TyperException as exc:  # typer's click: an unknown option, a missing argument, a bad value
            pytest.fail(f"the example {example!r} does not parse: {exc}")


def test_graphs_list_names_every_graph_on_lines_that_fit_the_terminal() -> None:
    for columns in (80, 200):
        listed = invoke("graphs", "list", columns=columns)
        lines = listed.splitlines()
        assert max(len(line) for line in lines) <= min(columns, 100)
        rows: dict[str, list[str]] = {}
        for line in lines:
            if not line.startswith(" "):
                name, _, line = line.partition(" ")
                rows[name] = []
            rows[name].append(line.strip())
        assert list(rows) == [path.stem for path in library_graphs()]
        for path in library_graphs():
            sentence = first_sentence(yaml.safe_load(path.read_text(encoding="utf-8"))["description"])
            shown = " ".join(rows[path.stem])
            if shown.endswith(" ..."):  # shortened at a word's end
                kept = shown.removesuffix(" ...")
                assert sentence.startswith(kept) and sentence[len(kept)] == " ", (path.stem, shown)
            else:
                assert shown == sentence


def sections(text: str) -> dict[str, list[str]]:
    """The blocks of `graphs show`'s output, by their heading (a line without indentation)."""
    blocks: dict[str, list[str]] = {}
    for block in text.split("\n\n"):
        heading, *lines = block.strip("\n").splitlines()
        blocks[heading] = lines
    return blocks


def test_graphs_show_tells_inputs_outputs_edges_fanouts_and_routes() -> None:
    shown = invoke("graphs", "show", "comorag-qa")
    spec = load_graph("comorag-qa").spec
    blocks = sections(shown)
    assert shown.startswith("comorag-qa v1  (") and "state model  comorag.QAState" in shown and "max steps    400" in shown
    assert "requires     comorag.book_indexed: The book is indexed in the run's namespace" in shown
    assert [line.split()[0] for line in blocks["required inputs"]] == ["question", "book_id"]
    optional = {line.split()[0]: " ".join(line.split()[1:]) for line in blocks["optional inputs"]}
    # what a caller may add: the fields the graph reads but neither requires nor writes itself
    assert optional == {"options": "dict[str, str] default {}", "max_cycles": "int (>= 0, <= 20) default 5", "encode_first": "bool default true"}
    assert [line.split()[0] for line in blocks["outputs"]] == spec.output
    edges = [tuple(line.split()) for line in blocks["edges"]]
    assert edges == [(edge.from_, "->", edge.to) for edge in spec.edges]
    assert [" ".join(line.split()) for line in blocks["fan-outs"]] == ["dispatch -> probe_worker once per item of probes, each as probe"]
    routes = [" ".join(line.split()) for line in blocks["routes"]]
    assert routes == [
        "after answer comorag.after_attempt",
        "answered -> finalize",
        "out_of_cycles -> finalize",
        "retry -> commit",
        "after probe comorag.has_probes",
        "probes -> dispatch",
        "none -> finalize",
    ]
    nodes = [line for line in blocks["nodes"] if not line.startswith("    ")]
    assert [line.split()[0] for line in nodes] == list(spec.nodes)
    assert "  probe_worker  comorag.probe_worker" in nodes


def test_graphs_show_names_a_subgraph_and_node_config() -> None:
    blocks = sections(invoke("graphs", "show", "text-pipeline"))
    nodes = [" ".join(line.split()) for line in blocks["nodes"]]
    assert "wait text.pause {seconds: 0.05}" in nodes and "stats graph text-stats.yaml (text-stats v1)" in nodes
    assert blocks["optional inputs"] == ["  -"] and blocks["fan-outs"] == ["  -"]


@pytest.mark.parametrize("graph", [path.stem for path in library_graphs()])
def test_graphs_show_wraps_to_the_terminal(graph: str) -> None:
    assert max(len(line) for line in invoke("graphs", "show", graph, columns=80).splitlines()) <= 80


@pytest.mark.subprocess
def test_graphs_show_in_a_real_process(tmp_path: Path) -> None:
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("MNEMOFLOW_", "NEO4J_", "COLUMNS"))}
    result = subprocess.run(
        [MNEMOFLOW, "graphs", "show", "comorag-qa"], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "\noptional inputs\n  options " in result.stdout and "\nfan-outs\n  dispatch  -> probe_worker" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 100  # not a terminal: 100 columns
