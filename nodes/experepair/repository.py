"""The repository under repair: reading the clone, and running code on a throwaway worktree of it.

The clone at ``repo_path`` is only read (``git ls-tree``/``git show``). Untrusted code (the reproduction script,
the patched repository) only ever runs inside a throwaway :class:`~mnemoflow.nodes.sandbox.Worktree`, bounded in
time, memory and output by a :class:`SandboxConfig`.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from mnemoflow.errors import NodeError
from mnemoflow.nodes.sandbox import Execution, Limits, Worktree, run_python

__all__ = [
    "MAX_CODE_CHARS",
    "MAX_FILES",
    "MAX_LISTING_CHARS",
    "SandboxConfig",
    "code_of",
    "describe_execution",
    "is_unified_diff",
    "python_files",
    "repository_listing",
    "run_script",
]

MAX_LISTING_CHARS = 12_000
"""Bound on the repository listing the localizer sees (files with their class/def lines)."""
MAX_CODE_CHARS = 16_000
"""Bound on the code of the localized files shown to the Patch Agent."""
MAX_FILES = 4
"""At most this many localized files are shown to the Patch Agent."""

_DEFINITION = re.compile(r"^\s*(?:async\s+)?(?:def|class)\s+\w+.*$", re.MULTILINE)


class SandboxConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    timeout_s: float = Field(60.0, gt=0, le=3_600, description="Wall-clock limit of one script run.")
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


async def repository_listing(repo: Path, commit: str, limit: int = MAX_LISTING_CHARS) -> str:
    """The commit's Python files, each with its class and def lines, cut at ``limit`` characters."""
    lines: list[str] = []
    size = 0
    files = await python_files(repo, commit)
    for index, name in enumerate(files):
        source = await _git(repo, "show", f"{commit}:{name}")
        block = [name, *(f"    {match.group(0).strip()}" for match in _DEFINITION.finditer(source))]
        text = "\n".join(block)
        if size + len(text) > limit:
            lines.append(f"... {len(files) - index} more files not shown")
            break
        lines.append(text)
        size += len(text) + 1
    return "\n".join(lines)


async def code_of(repo: Path, commit: str, files: list[str], limit: int = MAX_CODE_CHARS) -> str:
    """The first :data:`MAX_FILES` files' code at the commit, each under a ``--- name`` line, cut at ``limit``."""
    parts: list[str] = []
    size = 0
    for name in files[:MAX_FILES]:
        source = await _git(repo, "show", f"{commit}:{name}")
        block = f"--- {name}\n{source}"
        if size + len(block) > limit:
            block = block[: max(0, limit - size)] + "\n... [cut]"
        parts.append(block)
        size += len(block)
        if size >= limit:
            break
    return "\n".join(parts)


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


def describe_execution(execution: Execution, limits: Limits) -> str:
    """The run's output, with a note when it was killed for time or its output was cut."""
    output = execution.output
    if execution.timed_out:
        output += f"\n[killed: the script ran longer than {limits.timeout_s:g} s]"
    if execution.truncated:
        output += "\n[output truncated]"
    return output.strip()
