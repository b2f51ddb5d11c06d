"""The tools the model works through, and their dispatch against the file store.

Every failure of a call (an unknown tool, arguments that are not JSON or do not validate, a path outside the root or
reserved, a file where a folder of that name is, a file that does not exist, an edit whose text is not found)
becomes a tool result telling the model what was wrong; dispatch never raises for what the model sent. After a turn
that wrote files, or asked for the checks, the checks run once over the files as the turn left them.
``run_python_file`` and ``pytest_files`` run in a scratch copy of the files as they are when the call runs (this
turn's earlier writes included), in the checks' sandbox with their own time limits; they change nothing stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mnemoflow.errors import ToolArgumentError
from mnemoflow.llm import Tool, ToolCall, tool_result
from mnemoflow.nodes.l2mac.checks import Checker, CheckResult, run_checks, run_file, run_tests
from mnemoflow.nodes.l2mac.files import (
    MAX_FILE_CHARS,
    Action,
    FileVersion,
    MissingFileError,
    PathError,
    Project,
    check_path,
)
from mnemoflow.nodes.l2mac.model import WriteKey
from mnemoflow.nodes.sandbox import Limits

__all__ = ["STEP_TOOLS", "TurnResult", "dispatch", "file_listing"]

Message = dict[str, Any]


class _Arguments(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FileRef(_Arguments):
    path: str = Field(description="A path relative to the project's root, e.g. 'pkg/module.py'.")
    version: int | None = Field(None, ge=1, description="An earlier version to read (1 is the first); omit for the current one.")


class ReadFiles(_Arguments):
    files: list[FileRef] = Field(min_length=1)


class FileContent(_Arguments):
    path: str
    content: str = Field(description="The whole file.")


class WriteFiles(_Arguments):
    files: list[FileContent] = Field(min_length=1)


class EditFile(_Arguments):
    path: str
    old: str = Field(min_length=1, description="Text of the file to replace, exactly as it is now.")
    new: str = Field(description="The replacement text.")
    replace_all: bool = Field(False, description="Replace every occurrence; otherwise `old` must occur exactly once.")


class DeleteFiles(_Arguments):
    paths: list[str] = Field(min_length=1)


class RunPythonFile(_Arguments):
    file_name_to_run: str
    arguments: list[str] = Field(default_factory=list)


class PytestFiles(_Arguments):
    files_to_test: list[str] = Field(default_factory=list)


class NoArguments(_Arguments):
    pass


STEP_TOOLS: tuple[Tool, ...] = (
    Tool("list_files", "List the project's files with their number of versions and lines.", NoArguments),
    Tool("read_files", "Read files (their current version, or an earlier one).", ReadFiles),
    Tool("write_files", "Create or overwrite whole files.", WriteFiles),
    Tool("edit_file", "Replace a piece of one file's text with new text.", EditFile),
    Tool("delete_files", "Delete files.", DeleteFiles),
    Tool("run_checks", "Run the error checks and the tests over the project and see the results.", NoArguments),
    Tool("run_python_file", "Run a Python file of the project with command-line arguments; see its output.", RunPythonFile),
    Tool("pytest_files", "Run pytest on the given test files (none: all tests); see its report.", PytestFiles),
    Tool("step_complete", "Declare the current instruction complete; the checks run first and must pass.", NoArguments),
)
_BY_NAME = {tool.name: tool for tool in STEP_TOOLS}


@dataclass
class TurnResult:
    """What one turn's tool calls did."""

    messages: list[Message] = field(default_factory=list)
    """One tool result per call, in call order."""
    written: list[str] = field(default_factory=list)
    """Paths given a new version (written, edited or deleted) by this turn."""
    errors: list[str] = field(default_factory=list)
    """The tool errors returned to the model."""
    check: CheckResult | None = None
    complete: bool = False
    """``step_complete`` was called and the checks passed."""


def file_listing(project: Project) -> str:
    paths = project.paths()
    if not paths:
        return "(no files yet)"
    return "\n".join(f"- {path} (version {project.version_count(path)})" for path in paths)


async def dispatch(
    calls: Sequence[ToolCall],
    project: Project,
    *,
    instruction: int,
    attempt: int,
    turn: int,
    limits: Limits,
    tests: bool,
    read_chars: int,
    checker: Checker,
    run_timeout_s: float,
    pytest_timeout_s: float,
) -> TurnResult:
    """Run a turn's tool calls in order against ``project``, then the checks when the turn wrote or asked for them.

    ``limits`` bound the checks; ``run_python_file`` and ``pytest_files`` get the same bounds with their own time
    limits (``run_timeout_s``, ``pytest_timeout_s``).
    """
    result = TurnResult()
    replies: list[str | None] = []  # None: run_checks and step_complete, answered with the checks' report
    runs = _Runs(replace(limits, timeout_s=run_timeout_s), replace(limits, timeout_s=pytest_timeout_s), read_chars)
    for call in calls:
        key = WriteKey(instruction, attempt, turn, call.id)
        try:
            reply = await _run_call(call, project, key, runs, result)
        except _CallError as error:
            result.errors.append(str(error) if str(error).startswith(f"{call.name}:") else f"{call.name}: {error}")
            reply = f"ERROR: {error}"
        replies.append(reply)
    waiting = [call.name for call, reply in zip(calls, replies, strict=True) if reply is None]
    if result.written or waiting:
        check = result.check = await run_checks(await project.heads(), limits, tests=tests, checker=checker)
        result.complete = "step_complete" in waiting and check.passed
        verdict = "The step is complete." if check.passed else "The step is NOT complete: the checks failed."
        replies = [
            reply if reply is not None else f"{verdict}\n{check.report()}" if call.name == "step_complete" else check.report()
            for call, reply in zip(calls, replies, strict=True)
        ]
    result.messages = [tool_result(call, reply or "") for call, reply in zip(calls, replies, strict=True)]
    return result


class _CallError(Exception):
    """What was wrong with one call, in words for the model."""


@dataclass(frozen=True)
class _Runs:
    """The bounds of the calls that run something or read: ``run_python_file``, ``pytest_files``, ``read_files``."""

    file: Limits
    tests: Limits
    read_chars: int


async def _run_call(call: ToolCall, project: Project, key: WriteKey, runs: _Runs, result: TurnResult) -> str | None:
    """The call's reply, or None for a call answered by the checks (run_checks, step_complete)."""
    tool = _BY_NAME.get(call.name)
    if tool is None:
        raise _CallError(f"there is no tool {call.name!r}; the tools are: {', '.join(_BY_NAME)}")
    try:
        arguments = tool.parse(call)
    except ToolArgumentError as error:
        raise _CallError(str(error)) from error
    if isinstance(arguments, ReadFiles):
        return await _read(project, arguments, runs.read_chars)
    if isinstance(arguments, RunPythonFile):
        path = _existing(project, arguments.file_name_to_run)
        return await run_file(await project.heads(), path, arguments.arguments, runs.file)
    if isinstance(arguments, PytestFiles):
        paths = [_existing(project, path) for path in arguments.files_to_test]
        return await run_tests(await project.heads(), paths, runs.tests)
    if isinstance(arguments, WriteFiles):
        targets = [(_path(item.path), item.content) for item in arguments.files]
        too_long = [path for path, content in targets if len(content) > MAX_FILE_CHARS]
        if too_long:
            raise _CallError(f"{', '.join(too_long)}: a file may hold {MAX_FILE_CHARS} characters; split it; nothing was written")
        try:
            project.check_room([path for path, _ in targets])
        except PathError as error:
            raise _CallError(f"refused path: {error}; nothing was written") from error
        lines = []
        for path, content in targets:
            version = await _commit(project, key, path, "write", content, result)
            lines.append(f"wrote {path} (version {version.n}, {version.lines} lines)")
        return "\n".join(lines)
    if isinstance(arguments, EditFile):
        path = _path(arguments.path)
        current = await _head(project, path)
        found = current.count(arguments.old)
        if found == 0:
            raise _CallError(f"{path}: the text to replace was not found; read the file and copy the text exactly")
        if found > 1 and not arguments.replace_all:
            raise _CallError(f"{path}: the text to replace occurs {found} times; give more context or set replace_all")
        edited = current.replace(arguments.old, arguments.new, -1 if arguments.replace_all else 1)
        version = await _commit(project, key, path, "edit", edited, result)
        return (
            f"edited {path}: {found if arguments.replace_all else 1} replacement(s) (version {version.n}, {version.lines} lines)"
        )
    if isinstance(arguments, DeleteFiles):
        existing = project.paths()
        # a file stored before a path check was added may be refused now; it can still be deleted as it is listed
        paths = [path if path in existing else _path(path) for path in arguments.paths]
        missing = [path for path in paths if path not in existing]
        if missing:
            raise _CallError(f"no such file(s): {', '.join(missing)}; nothing was deleted")
        for path in paths:
            await _commit(project, key, path, "delete", "", result)
        return f"deleted {', '.join(paths)}"
    if call.name == "list_files":
        return file_listing(project)
    return None  # run_checks, step_complete: answered once the checks ran


def _path(path: str) -> str:
    try:
        return check_path(path)
    except PathError as error:
        raise _CallError(f"refused path: {error}") from error


def _existing(project: Project, path: str) -> str:
    """``path`` checked, naming a file of the project or a folder holding some (a pytest node id ``file::test`` too)."""
    name, separator, test = path.partition("::")
    checked = _path(name)
    files = project.paths()
    if checked not in files and not any(file.startswith(f"{checked}/") for file in files):
        raise _CallError(f"no such file or folder: {checked}; call list_files to see the project's files")
    return f"{checked}{separator}{test}"


async def _head(project: Project, path: str) -> str:
    try:
        return (await project.read(path)).content
    except MissingFileError as error:
        raise _CallError(f"no such file: {path}") from error


async def _commit(project: Project, key: WriteKey, path: str, action: Action, content: str, result: TurnResult) -> FileVersion:
    try:
        version, _ = await project.commit(key, path, action, content)
    except PathError as error:
        raise _CallError(f"refused path: {error}") from error
    except ToolArgumentError as error:  # FileTooLargeError, or content that is not Unicode text
        raise _CallError(str(error)) from error
    result.written.append(path)
    return version


async def _read(project: Project, arguments: ReadFiles, read_chars: int) -> str:
    blocks: list[str] = []
    problems: list[str] = []
    used = 0
    for ref in arguments.files:
        try:
            path = check_path(ref.path)
            version = await project.read(path, ref.version)
        except PathError as error:
            problems.append(f"refused path: {error}")
            continue
        except MissingFileError as error:
            problems.append(f"no such file or version: {error.args[0]}")
            continue
        if version.action == "delete":
            problems.append(f"{path} version {version.n} is its deletion")
            continue
        block = f"{path} (version {version.n}):\n```\n{version.content}\n```"
        if used + len(block) > read_chars:
            problems.append(f"{path} not shown: the files read in one call may total {read_chars} characters; read it alone")
            continue
        used += len(block)
        blocks.append(block)
    if problems and not blocks:
        raise _CallError("; ".join(problems))
    return "\n\n".join(blocks + [f"NOTE: {problem}" for problem in problems])
