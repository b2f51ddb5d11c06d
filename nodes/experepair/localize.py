"""Localization in stages (``graphs/library/experepair.yaml``): files, then classes and functions, then lines.

localize_files -> localize_functions -> localize_lines -> generate (``patch.py``); one model call each, as the
paper's Agentless-style localization: pick the suspicious files from the repository's structure (at most
``max_files``), the classes and functions to look at in them (at most ``max_functions``), then the line ranges to
edit; overlapping ranges are merged. Every stage shows a bounded view (the listing, the skeletons, the numbered code)
and keeps only what exists at the commit: a named file or function that does not exist is dropped and recorded in
``errors``. A reply that does not validate, or that names nothing usable, takes the stage's fallback (also recorded):
the files sharing words with the issue (else the first files); every top-level definition of the files; the whole
code of the suspicious files.

What the Patch Agent sees (``code``): the edit locations, then each file with a location, whole when it is under
``whole_file_chars``, else the lines around each location (``context_lines`` either side), exactly as in the file
(no line numbers, so context lines can be copied into a diff) under a ``--- path`` header that gives the lines'
numbers for the hunk headers.
"""

from __future__ import annotations

from itertools import zip_longest
from pathlib import Path
from typing import Any

from pydantic import Field

from mnemoflow.errors import LLMOutputError, NodeError
from mnemoflow.nodes.context import RunContext
from mnemoflow.nodes.experepair.agents import ReplyConfig, reproduction_text
from mnemoflow.nodes.experepair.localize_agents import (
    EditLocation,
    EditLocations,
    FunctionTargets,
    SuspiciousFiles,
    files_messages,
    functions_messages,
    lines_messages,
)
from mnemoflow.nodes.experepair.repository import (
    MAX_CODE_CHARS,
    MAX_LISTING_CHARS,
    Definition,
    bounded_blocks,
    code_of,
    definitions,
    numbered,
    python_files,
    read_files,
    repository_listing,
    skeleton,
    top_level_names,
)
from mnemoflow.nodes.experepair.retrieval import tokenize
from mnemoflow.nodes.experepair.state import RepairState
from mnemoflow.nodes.registry import node
from mnemoflow.nodes.tokens import clip

__all__ = ["FilesConfig", "FunctionsConfig", "LinesConfig"]

_READS = {"repo_path", "commit", "issue", "reproduced", "test_script", "test_output", "errors"}


class FilesConfig(ReplyConfig):
    max_files: int = Field(4, ge=1, le=20, description="Files kept after the first stage (the paper: 4).")
    listing_chars: int = Field(
        MAX_LISTING_CHARS, ge=40, le=200_000, description="Bound on the repository listing shown, in characters."
    )


class FunctionsConfig(ReplyConfig):
    max_functions: int = Field(8, ge=1, le=50, description="Classes and functions kept after the second stage.")
    skeleton_chars: int = Field(12_000, ge=40, le=200_000, description="Bound on the skeletons shown, in characters.")


class LinesConfig(ReplyConfig):
    context_lines: int = Field(10, ge=0, le=200, description="Lines shown around each edit location.")
    code_chars: int = Field(
        16_000, ge=40, le=200_000, description="Bound on the numbered code of the chosen functions shown, in characters."
    )
    whole_file_chars: int = Field(
        8_000, ge=0, le=200_000, description="A file with a location up to this size goes to the Patch Agent whole."
    )


def _words(text: str) -> set[str]:
    """The words of ``text`` worth matching: identifiers split at underscores, three letters or more, no numbers."""
    return {part for token in tokenize(text) for part in token.split("_") if len(part) > 2 and not part.isdigit()}


def _related(sources: dict[str, str], query: str) -> list[str]:
    """The files sharing words with ``query`` (in their path or top-level names), most shared first."""
    wanted = _words(query)
    scores = {name: len(wanted & _words(" ".join([name, *top_level_names(source)]))) for name, source in sources.items()}
    return sorted((name for name, score in scores.items() if score), key=lambda name: -scores[name])


def _known_file(name: str, known: dict[str, str]) -> str:
    """The path a reply means: as given (without a leading ``./``), else the only known path ending in it."""
    name = name.strip().removeprefix("./")
    if name in known:
        return name
    ending = [path for path in known if path.endswith(f"/{name}")]
    return ending[0] if len(ending) == 1 else name


def _dropped(node_name: str, what: str, dropped: list[str]) -> list[str]:
    """The error line for the names a reply gave that do not exist (none when nothing was dropped)."""
    return [f"{node_name}: dropped {what}: {', '.join(dropped)}"] if dropped else []


@node("experepair.localize_files", state=RepairState, reads=_READS, writes={"suspicious_files", "errors"}, config=FilesConfig)
async def localize_files(state: RepairState, config: FilesConfig, context: RunContext) -> dict[str, Any]:
    """Stage 1: the model picks the suspicious files from a listing of the repository's Python files (with their
    top-level names when they fit: an issue names functions and classes more often than files)."""
    repo = Path(state.repo_path)
    files = await python_files(repo, state.commit)
    if not files:
        raise NodeError(f"repo_path {state.repo_path!r} holds no Python file at commit {state.commit!r}: nothing to repair")
    sources = await read_files(repo, state.commit, files)
    related = _related(sources, f"{state.issue}\n{state.test_script}")
    listing = repository_listing(sources, config.listing_chars, first=related)
    messages = files_messages(state.issue, reproduction_text(state), listing, config.max_files)
    errors = list(state.errors)
    named: list[str] = []
    try:
        reply = await context.llm.structured(messages, SuspiciousFiles, max_tokens=config.max_tokens)
        named = list(dict.fromkeys(_known_file(name, sources) for name in reply.files))
    except LLMOutputError as exc:
        context.log.warning("experepair.localize_files_unreadable", error=str(exc))
        errors.append(f"localize_files: the files could not be read: {exc}")
    kept = [name for name in named if name in sources][: config.max_files]
    errors += _dropped("localize_files", f"files not in the repository at {state.commit}", [n for n in named if n not in sources])
    if not kept:
        kept = (related or files)[: config.max_files]
        basis = "the files sharing words with the issue" if related else "the first files"
        errors.append(f"localize_files: no known file named; using {basis}: {', '.join(kept)}")
    return {"suspicious_files": kept, "errors": errors}


def _resolve(found: list[Definition], name: str) -> Definition | None:
    """The definition a reply means by ``name``: its qualified name, else the one whose name ends so, else the only
    one with that last part (``save`` for ``Model.save``); None when there is none."""
    name = name.strip().removesuffix("()").removeprefix("def ").removeprefix("class ").strip()
    last = name.split(".")[-1]
    for matches in (
        [definition for definition in found if definition.name == name],
        [definition for definition in found if definition.name.endswith(f".{name}")],
    ):
        if matches:
            return matches[0]
    alike = [definition for definition in found if definition.name.split(".")[-1] == last]
    return alike[0] if len(alike) == 1 else None


async def _suspicious(state: RepairState, node_name: str) -> tuple[dict[str, str], dict[str, list[Definition]]]:
    """The suspicious files' text and definitions; NodeError when none of them exists at the commit."""
    sources = await read_files(Path(state.repo_path), state.commit, state.suspicious_files)
    if not sources:
        raise NodeError(
            f"{node_name}: none of the suspicious files {state.suspicious_files} exists at commit {state.commit!r} "
            f"of {state.repo_path!r}; localize_files must run first"
        )
    return sources, {name: definitions(source) for name, source in sources.items()}


def _top_level(found: dict[str, list[Definition]], limit: int) -> list[dict[str, Any]]:
    """Stage 2's fallback: the files' top-level definitions, taken in turn from each file, at most ``limit``; a file
    without any stands for its module-level code."""
    per_file = [
        [{"file": name, "function": d.name, "reason": "fallback: a top-level definition"} for d in defs if not d.depth]
        or [{"file": name, "function": "", "reason": "fallback: the module-level code"}]
        for name, defs in found.items()
    ]
    return [target for group in zip_longest(*per_file) for target in group if target][:limit]


@node(
    "experepair.localize_functions",
    state=RepairState,
    reads=_READS | {"suspicious_files"},
    writes={"functions", "errors"},
    config=FunctionsConfig,
)
async def localize_functions(state: RepairState, config: FunctionsConfig, context: RunContext) -> dict[str, Any]:
    """Stage 2: the model picks the classes and functions to look at from the skeletons of the suspicious files
    (each file's share of ``skeleton_chars``)."""
    sources, found = await _suspicious(state, "localize_functions")
    share = config.skeleton_chars // len(sources)
    skeletons = "\n".join(
        f"--- {name}\n{clip(skeleton(sources[name], found[name]) or '(no classes or functions)', share)}" for name in sources
    )
    messages = functions_messages(state.issue, reproduction_text(state), skeletons, config.max_functions)
    errors = list(state.errors)
    functions: list[dict[str, Any]] = []
    dropped: list[str] = []
    try:
        reply = await context.llm.structured(messages, FunctionTargets, max_tokens=config.max_tokens)
        for target in reply.functions:
            file = _known_file(target.file, sources)
            definition = _resolve(found[file], target.function) if file in found else None
            if file not in found or (target.function.strip() and definition is None):
                dropped.append(f"{file}:{target.function}" if file in found else f"{file} (not a suspicious file)")
                continue
            entry = {"file": file, "function": definition.name if definition else "", "reason": target.reason}
            if not any((f["file"], f["function"]) == (entry["file"], entry["function"]) for f in functions):
                functions.append(entry)
    except LLMOutputError as exc:
        context.log.warning("experepair.localize_functions_unreadable", error=str(exc))
        errors.append(f"localize_functions: the functions could not be read: {exc}")
    errors += _dropped("localize_functions", "names not defined in the suspicious files", dropped)
    functions = functions[: config.max_functions]
    if not functions:
        functions = _top_level(found, config.max_functions)
        errors.append("localize_functions: no known class or function named; using the files' top-level definitions")
    return {"functions": functions, "errors": errors}


def _span(source: str, found: list[Definition], function: str) -> tuple[int, int]:
    """The lines of ``function`` in the file (all of them for the module level)."""
    definition = _resolve(found, function) if function else None
    return (definition.start, definition.end) if definition else (1, max(1, len(source.splitlines())))


def _targets_code(state: RepairState, sources: dict[str, str], found: dict[str, list[Definition]], limit: int) -> str:
    """Stage 3's view: each chosen class or function numbered (its share of ``limit``), one inside another shown
    once."""
    targets = [t for t in state.functions if t["file"] in sources] or [{"file": name, "function": ""} for name in sources]
    spans: list[tuple[str, str, int, int]] = []
    for target in targets:
        file, function = str(target["file"]), str(target["function"])
        start, end = _span(sources[file], found[file], function)
        if not any(f == file and s <= start and end <= e for f, _, s, e in spans):
            spans.append((file, function, start, end))
    share = limit // len(spans)
    return "\n".join(
        f"--- {file}: {function or 'module level'} (lines {start}-{end})\n{clip(numbered(sources[file], start, end), share)}"
        for file, function, start, end in spans
    )


def _check(location: EditLocation, sources: dict[str, str], found: dict[str, list[Definition]]) -> dict[str, Any] | str:
    """The location as state keeps it, or why it is dropped (an unknown file or function, lines outside the file)."""
    file = _known_file(location.file, sources)
    if file not in sources:
        return f"{file} (not a suspicious file)"
    definition = _resolve(found[file], location.function) if location.function.strip() else None
    if location.function.strip() and definition is None:
        return f"{file}:{location.function} (no such class or function)"
    start, end = sorted((location.start, location.end))
    total = len(sources[file].splitlines())
    if start > total:
        return f"{file} lines {start}-{end} (the file has {total} lines)"
    if definition is None:  # unnamed: the innermost class or function holding the first line, if any
        definition = next((d for d in reversed(found[file]) if d.start <= start <= d.end), None)
    function = definition.name if definition else ""
    return {"file": file, "function": function, "start": start, "end": min(end, total), "reason": location.reason}


def _merge_locations(locations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Overlapping or touching ranges of a file made one, its functions and reasons joined in the order they were
    named; files in the order they were first named, ranges by line."""
    order = list(dict.fromkeys(location["file"] for location in locations))
    groups: list[list[tuple[int, dict[str, Any]]]] = []
    for index, location in sorted(enumerate(locations), key=lambda item: (order.index(item[1]["file"]), item[1]["start"])):
        last = groups[-1] if groups else []
        if last and last[0][1]["file"] == location["file"] and location["start"] <= max(at["end"] for _, at in last) + 1:
            last.append((index, location))
        else:
            groups.append([(index, location)])
    merged = []
    for group in groups:
        named = [at for _, at in sorted(group, key=lambda item: item[0])]
        merged.append(
            {
                "file": named[0]["file"],
                "function": ", ".join(dict.fromkeys(at["function"] for at in named if at["function"])),
                "start": min(at["start"] for at in named),
                "end": max(at["end"] for at in named),
                "reason": "; ".join(dict.fromkeys(at["reason"] for at in named if at["reason"])),
            }
        )
    return merged


def _location_line(at: dict[str, Any]) -> str:
    return f"- {at['file']} lines {at['start']}-{at['end']} ({at['function'] or 'module level'}): {at['reason']}"


def _patch_view(locations: list[dict[str, Any]], sources: dict[str, str], config: LinesConfig) -> str:
    """What the Patch Agent sees: the locations, then each file with one, whole when small, else the lines around
    the locations (merged windows), verbatim under a ``--- path`` header with their numbers; cut at
    :data:`MAX_CODE_CHARS`."""
    blocks = ["\n".join(["Edit locations:", *map(_location_line, locations)])]
    for file in dict.fromkeys(location["file"] for location in locations):
        source = sources[file]
        text = source.splitlines()
        if len(source) <= config.whole_file_chars:
            blocks.append(f"--- {file} (whole file, {len(text)} lines)\n{source.rstrip()}")
            continue
        around = config.context_lines
        windows = [
            {**at, "start": max(1, at["start"] - around), "end": min(len(text), at["end"] + around)}
            for at in locations
            if at["file"] == file
        ]
        for window in _merge_locations(windows):
            start, end = window["start"], window["end"]
            body = "\n".join(text[start - 1 : end])
            blocks.append(f"--- {file} (lines {start}-{end} of {len(text)})\n{body}")
    return bounded_blocks(blocks, MAX_CODE_CHARS)


@node(
    "experepair.localize_lines",
    state=RepairState,
    reads=_READS | {"suspicious_files", "functions"},
    writes={"locations", "code", "errors"},
    config=LinesConfig,
)
async def localize_lines(state: RepairState, config: LinesConfig, context: RunContext) -> dict[str, Any]:
    """Stage 3: the model names the line ranges to edit in the numbered code of the chosen classes and functions;
    the ranges are checked against the files and merged, and the code around them becomes what the Patch Agent
    sees."""
    sources, found = await _suspicious(state, "localize_lines")
    shown = _targets_code(state, sources, found, config.code_chars)
    messages = lines_messages(state.issue, reproduction_text(state), shown)
    errors = list(state.errors)
    kept: list[dict[str, Any]] = []
    try:
        reply = await context.llm.structured(messages, EditLocations, max_tokens=config.max_tokens)
        checked = [_check(location, sources, found) for location in reply.locations]
        kept = [location for location in checked if isinstance(location, dict)]
        errors += _dropped("localize_lines", "locations", [reason for reason in checked if isinstance(reason, str)])
    except LLMOutputError as exc:
        context.log.warning("experepair.localize_lines_unreadable", error=str(exc))
        errors.append(f"localize_lines: the locations could not be read: {exc}")
    if not kept:
        errors.append("localize_lines: no edit location within the files; showing the suspicious files whole")
        code = await code_of(Path(state.repo_path), state.commit, list(sources))
        return {"locations": [], "code": code, "errors": errors}
    locations = _merge_locations(kept)
    return {"locations": locations, "code": _patch_view(locations, sources, config), "errors": errors}
