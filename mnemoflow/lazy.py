"""Package faces that import a heavy member only when it is first used.

``from mnemoflow.memory import SQLiteStore`` keeps working, while ``import mnemoflow.memory.records`` (which runs
the package's ``__init__`` first) loads no database driver. A package lists its heavy members once, for the
type checker under ``TYPE_CHECKING`` and here by module::

    __getattr__, __dir__ = lazy.members(__name__, {"SQLiteStore": "mnemoflow.memory.sqlite.store"})
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["members"]


def members(package: str, members: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A module ``__getattr__`` that imports ``members[name]`` and takes ``name`` from it (kept for next time),
    and a ``__dir__`` that lists the package's own names with the lazy ones."""

    def __getattr__(name: str) -> Any:
        try:
            module = members[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *members})

    return __getattr__, __dir__
