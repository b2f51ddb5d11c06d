"""Graph files as text: Mermaid (routes with outcome labels, fan-outs and subgraphs) and the plain description
``mnemoflow graphs show`` prints."""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Collection
from typing import Any, get_args

from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

from mnemoflow.graphs.loader import LIBRARY, LoadedGraph
from mnemoflow.graphs.spec import END, START, GraphSpec
from mnemoflow.nodes.registry import REGISTRY, Registry

__all__ = ["describe_graph", "first_sentence", "to_mermaid"]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
_Row = tuple[str, list[str]]
"""A name and its texts, each text wrapped on lines of its own under the first."""


def _id(name: str) -> str:
    return {START: "__start__", END: "__end__"}.get(name, f"n_{name}")


def _label(text: str) -> str:
    return text.replace('"', "#quot;")


def to_mermaid(graph: LoadedGraph, *, visited: Collection[str] = ()) -> str:
    """A ``flowchart`` of the graph: ``-->`` edges, ``-- outcome -->`` routes, ``-. each field .->`` fan-outs.

    Nodes named in ``visited`` (a run's steps; ``stats/count`` marks the subgraph node ``stats``) get the
    class ``visited``, drawn green.
    """
    spec = graph.spec
    lines = ["flowchart TD", f"    %% {spec.name} v{spec.version}", "    __start__([START])", "    __end__([END])"]
    for name, node in spec.nodes.items():
        if node.use is not None:
            lines.append(f'    {_id(name)}["{_label(name)}<br/><small>{_label(node.use)}</small>"]')
        else:
            sub = graph.subgraphs.get(name)
            target = sub.spec.name if sub else node.graph
            lines.append(f'    {_id(name)}[["{_label(name)}<br/><small>graph: {_label(str(target))}</small>"]]')
    for edge in spec.edges:
        lines.append(f"    {_id(edge.from_)} --> {_id(edge.to)}")
    for route in spec.routes:
        for outcome, target in route.outcomes.items():
            lines.append(f'    {_id(route.from_)} -- "{_label(outcome)}" --> {_id(target)}')
    for fanout in spec.fanouts:
        lines.append(f'    {_id(fanout.from_)} -. "each {_label(fanout.over)}" .-> {_id(fanout.to)}')
    marked = sorted({step.split("/", 1)[0] for step in visited} & spec.nodes.keys())
    if marked:
        lines.append("    classDef visited fill:#d1fae5,stroke:#047857,stroke-width:2px")
        lines.append("    class " + ",".join(_id(node) for node in marked) + " visited")
    return "\n".join(lines) + "\n"


def first_sentence(text: str) -> str:
    """The first sentence of ``text`` (its first paragraph when no sentence ends in it), on one line."""
    paragraph = " ".join(text.strip().split("\n\n", 1)[0].split())
    return _SENTENCE_END.split(paragraph, maxsplit=1)[0]


def describe_graph(graph: LoadedGraph, *, registry: Registry = REGISTRY, width: int = 100) -> str:
    """Plain text of what a caller needs to run the graph, aligned and wrapped to ``width`` columns.

    Its name, version, file and description; the state model, step bound, run retries and preconditions; the
    required inputs, the optional ones (fields the graph reads that it neither requires nor writes, with their type
    and default) and the outputs; each node with what it uses and its config; the edges, fan-outs and routes.
    """
    spec = graph.spec
    state = registry.states[spec.state]
    fields = state.model_fields
    reads, writes = _reads_writes(graph, registry)
    optional = [name for name in fields if name in reads and name not in writes and name not in spec.input]
    retries = spec.retry
    lines = [f"{spec.name} v{spec.version}  ({graph.path})", ""]
    if spec.description.strip():
        lines += textwrap.wrap(" ".join(spec.description.split()), width, initial_indent="  ", subsequent_indent="  ", break_long_words=False, break_on_hyphens=False) + [""]
    lines += _rows(
        [
            ("state model", [spec.state]),
            ("max steps", [str(spec.max_steps or "-")]),
            (
                "run retries",
                [
                    f"{retries.max_attempts} attempts, {retries.delay:g} s apart (under Prefect; `mnemoflow run` does not retry)"
                    if retries.max_attempts > 1
                    else "none"
                ],
            ),
            ("requires", [f"{name}: {first_sentence(registry.preconditions[name].doc)}" for name in spec.requires]),
        ],
        width,
        indent="",
    )
    lines += _section("required inputs", _field_rows(spec.input, fields, defaults=False), width)
    lines += _section("optional inputs", _field_rows(optional, fields, defaults=True), width)
    lines += _section("outputs", _field_rows(spec.output, fields, defaults=False), width)
    lines += _section("nodes", [(name, _node_lines(graph, name, registry)) for name in spec.nodes], width)
    lines += _section("edges", _arrows([(edge.from_, edge.to, "") for edge in spec.edges]), width)
    fanouts = [(fanout.from_, fanout.to, f"once per item of {fanout.over}, each as {fanout.item}") for fanout in spec.fanouts]
    lines += _section("fan-outs", _arrows(fanouts), width)
    lines += _section("routes", _routes(spec), width)
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _reads_writes(graph: LoadedGraph, registry: Registry) -> tuple[set[str], set[str]]:
    """The state fields the graph's nodes, routers and fan-outs read and write, its subgraphs' included."""
    reads: set[str] = set()
    writes: set[str] = set()
    for name, node in graph.spec.nodes.items():
        if node.use is not None:
            reads |= registry.nodes[node.use].reads
            writes |= registry.nodes[node.use].writes
        elif name in graph.subgraphs:
            sub_reads, sub_writes = _reads_writes(graph.subgraphs[name], registry)
            reads |= sub_reads | set(graph.subgraphs[name].spec.input)
            writes |= sub_writes
    for route in graph.spec.routes:
        reads |= registry.routers[route.router].reads
    for fanout in graph.spec.fanouts:
        reads.add(fanout.over)
        writes.add(fanout.item)
    return reads, writes


def _section(title: str, rows: list[_Row], width: int) -> list[str]:
    return ["", title, *(_rows(rows, width) if rows else ["  -"])]


def _rows(rows: list[_Row], width: int, indent: str = "  ") -> list[str]:
    """One line per row: the name, then its texts aligned in a column, each wrapped under the first."""
    column = max((len(name) for name, _ in rows), default=0) + 2
    lines: list[str] = []
    for name, texts in rows:
        lead = f"{indent}{name:<{column}}"
        hang = " " * len(lead)
        for number, text in enumerate(texts or ["-"]):
            start = lead if number == 0 else hang
            lines += textwrap.wrap(text, width, initial_indent=start, subsequent_indent=hang, break_long_words=False, break_on_hyphens=False)
    return lines


def _field_rows(names: list[str], fields: dict[str, FieldInfo], *, defaults: bool) -> list[_Row]:
    """A row per state field: its type and bounds (and default), then its description when the model has one."""
    types = {name: _type_text(fields[name]) for name in names}
    column = max((len(text) for text in types.values()), default=0) + 2
    rows: list[_Row] = []
    for name in names:
        field = fields[name]
        text = f"{types[name]:<{column}}{_default_text(field)}" if defaults else types[name]
        rows.append((name, [text, field.description] if field.description else [text]))
    return rows


def _type_text(field: FieldInfo) -> str:
    annotation = field.annotation
    if isinstance(annotation, type) and not get_args(annotation):
        text = annotation.__name__
    else:  # list[mnemoflow.nodes.comorag.state.Unit] -> list[Unit]
        text = re.sub(r"\b(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_])", "", str(annotation)).replace("NoneType", "None")
    bounds = [f"{sign} {getattr(item, name)}" for item in field.metadata for name, sign in _BOUNDS if getattr(item, name, None) is not None]
    return f"{text} ({', '.join(bounds)})" if bounds else text


def _default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "no default"
    value = json.dumps(to_jsonable_python(field.get_default(call_default_factory=True)), ensure_ascii=False)
    return "default " + textwrap.shorten(value, 60, placeholder=" ...")


def _config_text(values: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{key}: {json.dumps(value, default=str)}" for key, value in values.items()) + "}"


def _node_lines(graph: LoadedGraph, name: str, registry: Registry) -> list[str]:
    """What a node uses (with its config, retry and timeout), what it does (a registered node's first sentence; for
    a subgraph, where to read it), and what it reads and writes."""
    node = graph.spec.nodes[name]
    limits = [f"retry: {node.retry.max_attempts} attempts"] if node.retry is not None else []
    if node.timeout is not None:
        limits.append(f"timeout: {node.timeout:g} s")
    settings = [_config_text(node.with_)] if node.with_ else []
    if limits:
        settings.append(f"({', '.join(limits)})")
    if node.use is not None:
        definition = registry.nodes[node.use]
        uses, doc = node.use, definition.doc
        reads, writes = set(definition.reads), set(definition.writes)
    else:
        sub = graph.subgraphs[name]
        reference = sub.spec.name if sub.path.parent == LIBRARY else str(sub.path)
        uses, doc = f"graph {node.graph} ({sub.spec.name} v{sub.spec.version})", f"Run as one step: `mnemoflow graphs show {reference}`."
        sub_reads, writes = _reads_writes(sub, registry)
        reads = (sub_reads - writes) | set(sub.spec.input)
    lines = [" ".join([uses, *settings])]
    lines += [text for text in (node.description, first_sentence(doc)) if text]
    lines.append(f"reads {', '.join(sorted(reads)) or '-'}; writes {', '.join(sorted(writes)) or '-'}")
    return lines


def _arrows(links: list[tuple[str, str, str]]) -> list[_Row]:
    """``from -> to`` rows, the arrows aligned; the third item is said after the target."""
    column = max((len(target) for _, target, _ in links), default=0)
    return [(source, [f"-> {target:<{column}}  {note}".rstrip()]) for source, target, note in links]


def _routes(spec: GraphSpec) -> list[_Row]:
    rows: list[_Row] = []
    for route in spec.routes:
        config = f" {_config_text(route.with_)}" if route.with_ else ""
        column = max(len(outcome) for outcome in route.outcomes)
        outcomes = [f"{outcome:<{column}} -> {target}" for outcome, target in route.outcomes.items()]
        rows.append((f"after {route.from_}", [f"{route.router}{config}", *outcomes]))
    return rows
