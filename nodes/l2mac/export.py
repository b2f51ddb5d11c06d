"""Writing a run's final file tree to disk (``mnemoflow l2mac export RUN --to DIR``).

Every path is checked again before anything is written: a store may hold paths kept before the file store refused
them. A path the store refuses now (a git folder, a name too long) is skipped and reported; a tree that no folder
can hold (a file where a folder of the same name is) is refused whole.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mnemoflow.errors import ConfigError
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import stable_id
from mnemoflow.nodes.l2mac.files import PathError, Project, check_path, find_clash, load_project

__all__ = ["ExportedTree", "export_files", "project_of_run"]


@dataclass(frozen=True)
class ExportedTree:
    """What :func:`export_files` wrote, and what it would not write."""

    written: list[str]
    """The paths written, sorted."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Paths of the run that were not written (stored before the file store refused them), with why."""


async def project_of_run(store: GraphStore, namespace: str, run: str) -> Project:
    """The L2MAC project of run id ``run`` (a thread id is taken as is); ConfigError when there is none."""
    [record] = await store.get_nodes(namespace, [stable_id(namespace, "Run", run)])
    project = await load_project(store, namespace, str(record.properties["thread_id"]) if record is not None else run)
    if not project.exists:
        raise ConfigError(f"no L2MAC run or thread {run!r} in namespace {namespace!r}")
    return project


async def export_files(store: GraphStore, namespace: str, run: str, to: Path, *, force: bool = False) -> ExportedTree:
    """Write the current version of every file of ``run`` (a run id or thread id) under ``to``.

    ``to`` must be empty or missing, unless ``force`` (then files of the same paths are overwritten, others kept).
    Paths the file store refuses are skipped (:attr:`ExportedTree.skipped`); ConfigError, before anything is
    written, when a file would be a folder of another or land outside ``to``, and when a file cannot be written.
    """
    project = await project_of_run(store, namespace, run)
    root = to.resolve()
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{str(to)!r} exists and is not a folder")
    if root.is_dir() and any(root.iterdir()) and not force:
        raise ConfigError(f"{str(to)!r} is not empty; choose an empty folder or pass --force to overwrite files in it")
    heads = await project.heads()
    targets, skipped = _targets(heads, root, to)
    for path, target in targets.items():
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(heads[path], encoding="utf-8")
        except (OSError, UnicodeError) as error:
            why = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
            raise ConfigError(f"could not write {path!r} under {str(to)!r}: {why}") from error
    return ExportedTree(sorted(targets), skipped)


def _targets(paths: Iterable[str], root: Path, to: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """Where each path is written under ``root``, and the paths skipped with why; ConfigError for a tree that
    cannot be written."""
    targets: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    for path in sorted(paths):
        try:
            target = (root / check_path(path)).resolve()
            if not target.is_relative_to(root):
                raise ConfigError(f"{path!r} would be written outside {str(to)!r}")
            check_path(target.relative_to(root).as_posix())  # a symlink already in a --force folder may lead into .git
        except PathError as error:
            skipped[path] = str(error)
            continue
        targets[path] = target
    written = {target.relative_to(root).as_posix() for target in targets.values()}
    for path in sorted(written):
        clash = find_clash(path, written)
        if clash is not None:
            raise ConfigError(f"cannot export {str(to)!r}: {clash}; nothing was written")
    return targets, skipped
