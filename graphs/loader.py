"""Reading graph files: YAML with the position of every value, then the spec model, then the checks.

Every problem names the file, line and column, and all problems of a file are reported at once.
"""

from __future__ import annotations

import difflib
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mnemoflow.errors import GraphSpecError
from mnemoflow.graphs.spec import GraphSpec

__all__ = ["LIBRARY", "LoadedGraph", "Positions", "Problem", "find_graph", "library_graphs", "parse_graph_file", "read_yaml", "suggest"]

LIBRARY = Path(__file__).resolve().parent / "library"
"""The shipped graph files; ``mnemoflow run NAME`` finds ``NAME.yaml`` here."""

PathKey = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a graph file."""

    file: str
    line: int
    column: int
    code: str
    """Stable identifier, e.g. ``unknown-node``."""
    message: str
    hint: str = ""

    def __str__(self) -> str:
        hint = f" ({self.hint})" if self.hint else ""
        return f"{self.file}:{self.line}:{self.column}: {self.code}: {self.message}{hint}"


@dataclass
class Positions:
    """Line and column (1-based) of every key and value of a YAML document, by path."""

    file: str
    marks: dict[PathKey, tuple[int, int]] = field(default_factory=dict)

    def at(self, path: PathKey) -> tuple[int, int]:
        """The position of ``path``, or of its nearest enclosing value."""
        for end in range(len(path), -1, -1):
            if path[:end] in self.marks:
                return self.marks[path[:end]]
        return (1, 1)

    def problem(self, path: PathKey, code: str, message: str, hint: str = "") -> Problem:
        line, column = self.at(path)
        return Problem(self.file, line, column, code, message, hint)


@dataclass
class LoadedGraph:
    """A parsed graph file with its positions and its subgraphs (by node name), loaded recursively."""

    spec: GraphSpec
    path: Path
    positions: Positions
    subgraphs: dict[str, LoadedGraph] = field(default_factory=dict)


def suggest(name: str, candidates: Iterable[str]) -> str:
    """A did-you-mean hint, or an empty string."""
    close = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else ""


def library_graphs() -> list[Path]:
    """The shipped graph files, sorted by name."""
    return sorted(LIBRARY.glob("*.yaml"))


def find_graph(reference: str, relative_to: Path | None = None) -> Path:
    """Resolve a graph by path (relative to ``relative_to`` when given) or by library name."""
    candidates = []
    if relative_to is not None:
        candidates.append(relative_to / reference)
    candidates += [Path(reference), LIBRARY / reference, LIBRARY / f"{reference}.yaml"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    names = [path.stem for path in library_graphs()]
    hint = suggest(reference, names) or f"library graphs: {', '.join(names)}"
    raise FileNotFoundError(f"no graph file or library graph named {reference!r}; {hint}")


def read_yaml(text: str, file: str, *, holds: str = "graph", hint: str = "") -> tuple[Any, Positions, list[Problem]]:
    """The document with the line and column of every key (mappings) and item (sequences), and its problems
    (syntax, duplicate keys, an empty file: "the file holds no <holds>")."""
    positions = Positions(file)
    problems: list[Problem] = []
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        return None, positions, [_yaml_problem(file, exc)]
    except yaml.YAMLError as exc:  # e.g. a character YAML does not allow, reported without a mark
        return None, positions, [Problem(file, 1, 1, "yaml-syntax", str(exc))]
    if root is None:
        return None, positions, [Problem(file, 1, 1, "empty-file", f"the file holds no {holds}", hint)]
    constructor = yaml.SafeLoader("")

    def place(node: yaml.Node) -> tuple[int, int]:
        return node.start_mark.line + 1, node.start_mark.column + 1

    def build(node: yaml.Node, path: PathKey) -> Any:
        # a mapping entry is placed at its key, where a reader looks for it; list items at their value
        positions.marks.setdefault(path, place(node))
        if isinstance(node, yaml.MappingNode):
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = constructor.construct_object(key_node, deep=True)
                if not isinstance(key, Hashable):  # a mapping or a list written as a key: "{a: 1}: value"
                    problems.append(Problem(file, *place(key_node), "unhashable-key", "a key must be a word or number"))
                    key = yaml.serialize(key_node).strip()
                if key in result:
                    problems.append(Problem(file, *place(key_node), "duplicate-key", f"key {key!r} appears twice"))
                positions.marks[(*path, key)] = place(key_node)
                result[key] = build(value_node, (*path, key))
            return result
        if isinstance(node, yaml.SequenceNode):
            return [build(item, (*path, index)) for index, item in enumerate(node.value)]
        return constructor.construct_object(node, deep=True)

    try:
        return build(root, ()), positions, problems
    except yaml.MarkedYAMLError as exc:  # a value YAML cannot build, e.g. an unknown !tag
        return None, positions, [*problems, _yaml_problem(file, exc)]


def _yaml_problem(file: str, error: yaml.MarkedYAMLError) -> Problem:
    mark = error.problem_mark or error.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    return Problem(file, line, column, "yaml-syntax", str(error.problem or error))


def parse_graph_file(path: Path) -> tuple[GraphSpec | None, Positions, list[Problem]]:
    """Parse one file into a spec; structural problems (YAML, types, unknown keys) come back as a list."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return None, Positions(file), [Problem(file, 1, 1, "unreadable", str(exc))]
    data, positions, problems = read_yaml(text, file)
    if data is None:
        return None, positions, problems
    if not isinstance(data, dict):
        return None, positions, [*problems, positions.problem((), "not-a-mapping", "a graph file is a mapping of keys")]
    try:
        spec = GraphSpec.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            location = tuple(error["loc"])
            where = ".".join(str(part) for part in location) or "file"
            hint = ""
            if isinstance(error.get("input"), bool) or (location and location[-1] == "[key]" and "valid string" in error["msg"]):
                hint = "YAML reads yes/no/on/off/true/false as booleans: quote the word"
            problems.append(positions.problem(location, f"invalid-{error['type']}", f"{where}: {error['msg']}", hint))
        return None, positions, problems
    return spec, positions, problems


def raise_problems(problems: list[Problem]) -> None:
    if problems:
        raise GraphSpecError(sorted(problems, key=lambda problem: (problem.file, problem.line, problem.column)))
