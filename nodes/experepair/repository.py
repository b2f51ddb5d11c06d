"""The repository under repair: reading the clone, and running code on a throwaway worktree of it.

The clone at ``repo_path`` is only read (``git ls-tree``/``git cat-file``). Untrusted code (the reproduction script,
the patched repository) only ever runs inside a throwaway :class:`~mnemoflow.nodes.sandbox.Worktree`, bounded in
time, memory and output by a :class:`SandboxConfig`.
"""

from __future__ import annotations

import ast
import asyncio
import re
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from mnemoflow.errors import NodeError
from mnemoflow.nodes.sandbox import Execution, Limits, Worktree, run_python

__all__ = [
    "MAX_CODE_CHARS",
    "MAX_FILES",
    "MAX_LISTING_CHARS",
    "Definition",
    "PatchRun",
    "SandboxConfig",
    "bounded_blocks",
    "code_of",
    "definitions",
    "describe_execution",
    "is_unified_diff",
    "numbered",
    "python_files",
    "read_files",
    "repository_listing",
    "run_patch",
    "run_script",
    "skeleton",
    "top_level_names",
]

MAX_LISTING_CHARS = 12_000
"""Bound on the repository listing the file localizer sees (paths, with their top-level names when they fit)."""
MAX_CODE_CHARS = 16_000
"""Bound on the code of the localized files shown to the Patch Agent."""
MAX_FILES = 4
"""At most this many localized files are shown to the Patch Agent."""
MAX_NAMES_CHARS = 200
"""Bound on one file's top-level names in the repository listing."""
MAX_HEADER_LINES = 5
"""At most this many lines of a multi-line signature go into a file's skeleton."""
MAX_DOC_CHARS = 100
"""Bound on the docstring line a skeleton shows under a signature."""

_DEFINITION = re.compile(r"^\s*(?:async\s+)?(def|class)\s+(\w+)")
_TOP_LEVEL = re.compile(r"^(?:async\s+)?(?:def|class)\s+(\w+)", re.MULTILINE)


class SandboxConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    timeout_s: float = Field(300.0, gt=0, le=3_600, description="Wall-clock limit of one script run.")
    memory_mb: int = Field(512, ge=32, le=65_536, description="Address-space limit of the script's process.")

    def limits(self) -> Limits:
        return Limits(timeout_s=self.timeout_s, memory_mb=self.memory_mb)


# -- reading the clone ----------------------------------------------------------------------------------------


async def _git(repo: Path, *args: str) -> str:
    """A read-only git command in the clone; NodeError naming the repository when it fails."""
    process = await asyncio.create_subprocess_exec(
        "git", *args, cwd=repo, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise NodeError(f"git {' '.join(args[:2])} in {str(repo)!r} failed: {err.decode(errors='replace').strip()}")
    return out.decode(errors="replace")


async def python_files(repo: Path, commit: str) -> list[str]:
    """The commit's ``.py`` files, sorted."""
    names = (await _git(repo, "ls-tree", "-r", "--name-only", commit)).splitlines()
    return sorted(name for name in names if name.endswith(".py"))


async def read_files(repo: Path, commit: str, names: list[str]) -> dict[str, str]:
    """The text of each named file at the commit, read by one ``git cat-file --batch``; a name the commit does not
    hold (or that is not a file) is left out."""
    if not names:
        return {}
    process = await asyncio.create_subprocess_exec(
        "git", "cat-file", "--batch", cwd=repo,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    request = "".join(f"{commit}:{name}\n" for name in names).encode()
    out, err = await process.communicate(request)
    if process.returncode != 0:
        raise NodeError(f"git cat-file in {str(repo)!r} failed: {err.decode(errors='replace').strip()}")
    texts: dict[str, str] = {}
    position = 0
    for name in names:
        end = out.index(b"\n", position)
        header = out[position:end].rsplit(b" ", 2)
        position = end + 1
        if len(header) != 3 or not header[2].isdigit():  # "<object> missing" (or "ambiguous"): no content follows
            continue
        size = int(header[2])
        if header[1] == b"blob":
            texts[name] = out[position : position + size].decode(errors="replace")
        position += size + 1
    return texts


def top_level_names(source: str) -> list[str]:
    """The names of the module-level classes and functions, found by their lines (no parsing: cheap on every file)."""
    return [match.group(1) for match in _TOP_LEVEL.finditer(source)]


def repository_listing(sources: dict[str, str], limit: int = MAX_LISTING_CHARS, first: list[str] | None = None) -> str:
    """The files (``sources``, by path, in path order), one a line, each with its top-level class and def names
    while everything fits in ``limit`` characters; else the paths alone; else as many paths as fit, taking the files
    in ``first`` (the most relevant, say) before the others, and a line saying how many were left out."""
    named = []
    for name, source in sources.items():
        names = ", ".join(top_level_names(source))
        if len(names) > MAX_NAMES_CHARS:
            cut = names.rfind(", ", 0, MAX_NAMES_CHARS)
            names = names[: cut if cut > 0 else MAX_NAMES_CHARS] + ", ..."
        named.append(f"{name}: {names}" if names else name)
    files = list(sources)
    for lines in (named, files):
        text = "\n".join(lines)
        if len(text) <= limit:
            return text
    kept: set[str] = set()
    size = len("... 1000000 more files not shown")
    for name in dict.fromkeys([*(name for name in first or [] if name in sources), *files]):
        if size + len(name) + 1 > limit:
            break
        kept.add(name)
        size += len(name) + 1
    shown = [name for name in files if name in kept]
    return "\n".join([*shown, f"... {len(files) - len(shown)} more files not shown"])


async def code_of(repo: Path, commit: str, files: list[str], limit: int = MAX_CODE_CHARS) -> str:
    """The first :data:`MAX_FILES` files' code at the commit, each under a ``--- name`` line, cut at ``limit``."""
    sources = await read_files(repo, commit, files[:MAX_FILES])
    return bounded_blocks([f"--- {name}\n{sources[name]}" for name in files[:MAX_FILES] if name in sources], limit)


def bounded_blocks(blocks: list[str], limit: int) -> str:
    """The blocks one a line, in order, until ``limit`` characters: the block that overflows is cut (with a marker)
    and the rest left out."""
    parts: list[str] = []
    size = 0
    for block in blocks:
        if size + len(block) > limit:
            parts.append(block[: max(0, limit - size)] + "\n... [cut]")
            break
        parts.append(block)
        size += len(block) + 1
    return "\n".join(parts)


# -- the shape of a Python file ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Definition:
    """A class or function of a file (module level, or inside classes; not the ones nested in functions)."""

    name: str
    """Its qualified name within the file: ``Class.method``."""
    start: int
    """Its first line (1-based; its first decorator when it has one)."""
    end: int
    """Its last line."""
    header: tuple[int, int]
    """The lines of its ``def``/``class`` signature."""
    doc: str = ""
    """The first line of its docstring."""
    depth: int = 0
    """0 at module level, 1 for a method, and so on."""


def definitions(source: str) -> list[Definition]:
    """The file's classes and functions in line order. A file Python cannot parse (another Python version's syntax)
    falls back to its ``def``/``class`` lines, each ending where a line as little indented starts."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return _definitions_by_indent(source)
    found: list[Definition] = []

    def visit(body: list[ast.stmt], prefix: str, depth: int) -> None:
        for child in body:
            if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                start = min([child.lineno, *(decorator.lineno for decorator in child.decorator_list)])
                header_end = max(child.lineno, min(child.body[0].lineno - 1, child.lineno + MAX_HEADER_LINES - 1))
                doc = (ast.get_docstring(child) or "").strip().split("\n")[0]
                name = f"{prefix}{child.name}"
                found.append(Definition(name, start, child.end_lineno or child.lineno, (child.lineno, header_end), doc, depth))
                if isinstance(child, ast.ClassDef):
                    visit(child.body, f"{name}.", depth + 1)

    visit(tree.body, "", 0)
    return sorted(found, key=lambda definition: definition.start)


def _definitions_by_indent(source: str) -> list[Definition]:
    lines = source.splitlines()
    found: list[Definition] = []
    stack: list[tuple[int, str]] = []  # (indent, qualified name) of the enclosing classes
    for index, line in enumerate(lines):
        match = _DEFINITION.match(line)
        if not match:
            continue
        indent = len(line) - len(line.lstrip())
        stack = [(level, name) for level, name in stack if level < indent]
        end = next((later for later in range(index + 1, len(lines)) if _ends_block(lines[later], indent)), len(lines))
        name = ".".join([*(name for _, name in stack), match.group(2)])
        found.append(Definition(name, index + 1, end, (index + 1, index + 1), "", len(stack)))
        if match.group(1) == "class":
            stack.append((indent, name))
    return found


def _ends_block(line: str, indent: int) -> bool:
    """A code line indented no deeper than ``indent``: the block started at that indent ended before it."""
    return bool(line.strip()) and not line.lstrip().startswith("#") and len(line) - len(line.lstrip()) <= indent


def numbered(source: str, start: int = 1, end: int | None = None) -> str:
    """Lines ``start``..``end`` of ``source`` (1-based, inclusive), each after its number, for a model that must
    name lines."""
    lines = source.splitlines()
    last = len(lines) if end is None else min(end, len(lines))
    width = len(str(last))
    return "\n".join(f"{number:>{width}}| {lines[number - 1]}" for number in range(max(1, start), last + 1))


def skeleton(source: str, found: list[Definition]) -> str:
    """The file's shape: each definition's signature lines with their numbers, and its docstring's first line."""
    lines = source.splitlines()
    out: list[str] = []
    width = len(str(len(lines)))
    for definition in found:
        first, last = definition.header
        out += [f"{number:>{width}}| {lines[number - 1]}" for number in range(first, last + 1)]
        if definition.doc:
            indent = " " * (len(lines[first - 1]) - len(lines[first - 1].lstrip()) + 4)
            out.append(f"{'':>{width}}| {indent}\"\"\"{definition.doc[:MAX_DOC_CHARS]}\"\"\"")
    return "\n".join(out)


def is_unified_diff(text: str) -> bool:
    """Has the shape of a unified diff: a ``---``/``+++`` file header and at least one ``@@`` hunk."""
    return bool(re.search(r"^--- .+\n\+\+\+ .+\n@@ ", text, re.MULTILINE))


# -- running code -----------------------------------------------------------------------------------------------


async def run_script(repo_path: str, commit: str, script: str, limits: Limits, diff: str = "") -> Execution:
    """Run ``script`` in a fresh worktree of the commit (with ``diff`` applied first when given)."""
    async with Worktree(Path(repo_path), commit) as tree:
        if diff:
            applied = await tree.apply(diff)
            if not applied.applied:
                raise NodeError(f"the diff no longer applies: {applied.error}")
        return await run_python(tree, script, limits)


@dataclass(frozen=True)
class PatchRun:
    """A patch applied in a fresh worktree and the scripts run there (in the order given)."""

    applied: bool
    error: str = ""
    """Why the patch did not apply (empty when it did)."""
    diff: str = ""
    """The worktree's diff after applying: the patch as git normalises it (empty when it did not apply)."""
    executions: list[Execution] = field(default_factory=list)
    """One per script, in order; empty when the patch did not apply."""


async def run_patch(repo_path: str, commit: str, patch: str, scripts: list[str], limits: Limits) -> PatchRun:
    """Apply ``patch`` in one fresh worktree of the commit and run each of ``scripts`` there, one after the other.
    A text that is not a unified diff, or does not apply, is a :class:`PatchRun` with ``applied=False`` and the
    reason; nothing runs then."""
    if not is_unified_diff(patch):
        return PatchRun(applied=False, error="not a unified diff (no ---/+++ header followed by an @@ hunk)")
    async with Worktree(Path(repo_path), commit) as tree:
        result = await tree.apply(patch)
        if not result.applied:
            return PatchRun(applied=False, error=result.error)
        diff = await tree.diff()
        executions = [await run_python(tree, script, limits) for script in scripts]
    return PatchRun(applied=True, diff=diff, executions=executions)


def describe_execution(execution: Execution, limits: Limits) -> str:
    """The run's output, with a note when it was killed for time or its output was cut."""
    output = execution.output
    if execution.timed_out:
        output += f"\n[killed: the script ran longer than {limits.timeout_s:g} s]"
    if execution.truncated:
        output += "\n[output truncated]"
    return output.strip()
