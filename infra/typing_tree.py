"""Link the repository's folders into the shape they install in, for mypy.

The top-level folders (``memory/``, ``nodes/``...) install as ``mnemoflow.memory``, ``mnemoflow.nodes``...
(``[tool.setuptools.package-dir]`` in pyproject.toml). The editable install maps them with an import hook, which
mypy cannot see: mypy finds a module by its folder. This writes ``.mnemoflow/typing/mnemoflow/``, a folder of
links in the installed shape, that ``mypy_path`` points to. Links to folders, so new modules need no new run.

    python infra/typing_tree.py [ROOT]
"""

from __future__ import annotations

import shutil
import sys
import tomllib
from pathlib import Path


def link_tree(root: Path) -> Path:
    package_dirs: dict[str, str] = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    top = root / ".mnemoflow" / "typing"
    shutil.rmtree(top, ignore_errors=True)
    kernel = root / package_dirs["mnemoflow"]
    tree = top / "mnemoflow"
    tree.mkdir(parents=True)
    for entry in kernel.iterdir():
        if entry.name != "__pycache__":
            (tree / entry.name).symlink_to(entry.resolve())
    for package, folder in package_dirs.items():
        if package != "mnemoflow":
            (tree / package.removeprefix("mnemoflow.")).symlink_to((root / folder).resolve())
    return top


if __name__ == "__main__":
    link_tree(Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve())
