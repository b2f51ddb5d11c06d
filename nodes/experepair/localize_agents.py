"""The model calls of ExpeRepair's staged localization: suspicious files, then classes and functions, then lines.

Each stage shows the issue, the reproduction and what the previous stage narrowed the repository to (a listing of
files, the skeletons of the suspicious files, the code of the chosen functions with line numbers) and asks for a
short ranked answer. The offline stand-ins name nothing, so a run without a model takes each stage's fallback.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from mnemoflow.llm import offline_handler
from mnemoflow.llm.gateway import Message

__all__ = [
    "FILES_SYSTEM",
    "FUNCTIONS_SYSTEM",
    "LINES_SYSTEM",
    "MAX_LOCATIONS",
    "EditLocation",
    "EditLocations",
    "FunctionTarget",
    "FunctionTargets",
    "SuspiciousFiles",
    "files_messages",
    "functions_messages",
    "lines_messages",
]

MAX_LOCATIONS = 16
"""Edit locations one reply may name."""


class _Reply(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SuspiciousFiles(_Reply):
    """The files most likely to need a change, most likely first."""

    REPLY_TOKENS: ClassVar[int] = 300
    files: list[str] = Field(default_factory=list, max_length=20)


class FunctionTarget(_Reply):
    file: str = Field(min_length=1, max_length=500)
    function: str = Field("", max_length=200, description="A class, function or Class.method (empty: module level).")
    reason: str = Field("", max_length=1_000)


class FunctionTargets(_Reply):
    """The classes and functions to look at, most suspicious first."""

    REPLY_TOKENS: ClassVar[int] = 800
    functions: list[FunctionTarget] = Field(default_factory=list, max_length=50)


class EditLocation(_Reply):
    file: str = Field(min_length=1, max_length=500)
    function: str = Field("", max_length=200, description="The class or function the lines are in (empty: module level).")
    start: int = Field(ge=1, le=10_000_000, description="First line to edit (as numbered).")
    end: int = Field(ge=1, le=10_000_000, description="Last line to edit.")
    reason: str = Field("", max_length=1_000)


class EditLocations(_Reply):
    """The line ranges to edit, most important first."""

    REPLY_TOKENS: ClassVar[int] = 800
    locations: list[EditLocation] = Field(default_factory=list, max_length=MAX_LOCATIONS)


FILES_SYSTEM = """You localize an issue to files. Given the issue, the reproduction result and the Python files of a
repository (each with its top-level classes and functions when they fit), name the files that most likely need a
change to fix the issue. Reply with JSON {"files": ["path/to/file.py", ...]}, most likely first, paths exactly as
listed."""

FUNCTIONS_SYSTEM = """You localize an issue to classes and functions. Given the issue, the reproduction result and the
skeletons of the suspicious files (the numbered class and def lines, with the first line of each docstring), name the
classes and functions to inspect to fix the issue. Reply with JSON {"functions": [{"file": "path/to/file.py",
"function": "name or Class.method", "reason": "..."}]}, most suspicious first; an empty function means module-level
code."""

LINES_SYSTEM = """You localize an issue to lines. Given the issue, the reproduction result and the numbered code of
the suspicious classes and functions, name the line ranges that must be edited to fix the issue. Reply with JSON
{"locations": [{"file": "path/to/file.py", "function": "name or Class.method", "start": first line, "end": last
line, "reason": "what is wrong there"}]}, most important first, line numbers as shown."""


def _messages(system: str, issue: str, reproduction: str, title: str, shown: str, ask: str) -> list[Message]:
    user = f"Issue:\n{issue}\n\nReproduction:\n{reproduction}\n\n{title}:\n{shown}\n\n{ask}"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def files_messages(issue: str, reproduction: str, listing: str, max_files: int) -> list[Message]:
    """Stage 1: the repository's listing; at most ``max_files`` files asked for."""
    ask = f"Name at most {max_files} files."
    return _messages(FILES_SYSTEM, issue, reproduction, "Repository files", listing, ask)


def functions_messages(issue: str, reproduction: str, skeletons: str, max_functions: int) -> list[Message]:
    """Stage 2: the suspicious files' skeletons; at most ``max_functions`` classes and functions asked for."""
    ask = f"Name at most {max_functions} classes or functions."
    return _messages(FUNCTIONS_SYSTEM, issue, reproduction, "Skeletons of the suspicious files", skeletons, ask)


def lines_messages(issue: str, reproduction: str, code: str) -> list[Message]:
    """Stage 3: the chosen classes' and functions' numbered code."""
    ask = f"Name at most {MAX_LOCATIONS} line ranges."
    return _messages(LINES_SYSTEM, issue, reproduction, "Code of the suspicious classes and functions", code, ask)


# -- offline stand-ins: they name nothing, so each stage takes its documented fallback -----------------------------


@offline_handler(SuspiciousFiles)
def _offline_files(messages: list[Message]) -> SuspiciousFiles:
    return SuspiciousFiles(files=[])


@offline_handler(FunctionTargets)
def _offline_functions(messages: list[Message]) -> FunctionTargets:
    return FunctionTargets(functions=[])


@offline_handler(EditLocations)
def _offline_locations(messages: list[Message]) -> EditLocations:
    return EditLocations(locations=[])
