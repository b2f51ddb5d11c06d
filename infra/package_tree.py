"""Link the repository's modules into the shape they install in, for the static checks (mypy, import-linter).

The top-level folders (``memory/``, ``nodes/``...) install as ``mnemoflow.memory``, ``mnemoflow.nodes``...
(``[tool.setuptools.package-dir]`` in pyproject.toml). The editable install maps them with an import hook, which
static tools cannot see: they find a module by its folder. This writes ``.mnemoflow/package/mnemoflow/``: real
folders in the installed shape holding a link to every module, so a tool reading ``mnemoflow/memory/store.py``
reads ``memory/store.py``. ``make typecheck`` and ``make test`` write it afresh before each check.

    python infra/package_tree.py [ROOT]
"""

from __future__ import annotations

import shutil
import sys
import tomllib
from pathlib import Path

TREE = Path(".mnemoflow") / "package"


def link_tree(root: Path) -> Path:
    """Write the tree under ``root``; return the folder to put on a tool's path."""
    package_dirs: dict[str, str] = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    top = root / TREE
    shutil.rmtree(top, ignore_errors=True)
    for package, folder in package_dirs.items():
        source = (root / folder).resolve()
        target = top.joinpath(*package.split("."))
        for module in source.rglob("*"):
            relative = module.relative_to(source)
            if module.suffix not in (".py", ".typed") or "node_modules" in relative.parts:
                continue
            if package == "mnemoflow" and relative.parts[0] in package_dirs.values():
                continue  # a layer folder inside the kernel's would be linked twice
            link = target / relative
            if not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(module)
    return top


if __name__ == "__main__":
    link_tree(Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve())
