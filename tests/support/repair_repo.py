"""A tiny Python repository with real bugs, committed in a fresh ``git init``: the subject of the repair tests.

``calc/ops.py``: ``add`` subtracts; ``calc/more.py``: ``multiply`` adds (a second, similar issue). The diffs
below fix them (``FIX_*``), break them differently (``WRONG_*``: they apply but the bug stays) or do not apply.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = [
    "COMMUTED_ADD",
    "FIX_ADD",
    "FIX_MULTIPLY",
    "FILES",
    "FLOAT_ADD",
    "STALE_DIFF",
    "WRONG_ADD",
    "WRONG_MULTIPLY",
    "build_repo",
    "git_status",
    "snapshot",
    "worktrees",
]

FILES = {
    "calc/__init__.py": '"""A calculator."""\n',
    "calc/ops.py": "def add(a, b):\n    return a - b\n",
    "calc/more.py": "def multiply(a, b):\n    return a + b\n",
    "README.md": "calc\n",
}


def _diff(path: str, old: str, new: str, header: str) -> str:
    return f"--- a/{path}\n+++ b/{path}\n@@ -1,2 +1,2 @@\n {header}\n-    {old}\n+    {new}\n"


FIX_ADD = _diff("calc/ops.py", "return a - b", "return a + b", "def add(a, b):")
WRONG_ADD = _diff("calc/ops.py", "return a - b", "return b - a", "def add(a, b):")
FIX_MULTIPLY = _diff("calc/more.py", "return a + b", "return a * b", "def multiply(a, b):")
WRONG_MULTIPLY = _diff("calc/more.py", "return a + b", "return a - b", "def multiply(a, b):")
STALE_DIFF = _diff("calc/ops.py", "return a // b", "return a + b", "def add(a, b):")
"""A well-formed diff whose context is not in the file: ``git apply`` refuses it."""
COMMUTED_ADD = _diff("calc/ops.py", "return a - b", "return b + a", "def add(a, b):")
"""Textually different from :data:`FIX_ADD`, the same behaviour on numbers."""
FLOAT_ADD = _diff("calc/ops.py", "return a - b", "return float(a) + float(b)", "def add(a, b):")
"""Fixes the sum but returns a float: the reproduction passes, a differential test printing types tells it apart."""


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def build_repo(root: Path) -> Path:
    """Write :data:`FILES` into ``root`` and commit them; returns ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for name, text in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "-c", "user.name=tests", "-c", "user.email=tests@example.invalid", "commit", "-q", "-m", "calc with bugs")
    return root


def git_status(repo: Path) -> str:
    return _git(repo, "status", "--porcelain", "--ignored")


def worktrees(repo: Path) -> list[str]:
    return [line for line in _git(repo, "worktree", "list", "--porcelain").splitlines() if line.startswith("worktree ")]


def snapshot(repo: Path) -> dict[str, bytes]:
    """Every file under ``repo`` outside ``.git``, by relative path."""
    return {
        str(path.relative_to(repo)): path.read_bytes()
        for path in sorted(repo.rglob("*"))
        if path.is_file() and ".git" not in path.relative_to(repo).parts
    }
