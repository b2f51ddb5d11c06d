"""Writing a run's final file tree to disk (``mnemoflow l2mac export RUN --to DIR``)."""

from __future__ import annotations

from pathlib import Path

from mnemoflow.errors import ConfigError
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import stable_id
from mnemoflow.nodes.l2mac.files import Project, check_path, load_project

__all__ = ["export_files", "project_of_run"]


async def project_of_run(store: GraphStore, namespace: str, run: str) -> Project:
    """The L2MAC project of run id ``run`` (a thread id is taken as is); ConfigError when there is none."""
    [record] = await store.get_nodes(namespace, [stable_id(namespace, "Run", run)])
    project = await load_project(store, namespace, str(record.properties["thread_id"]) if record is not None else run)
    if not project.exists:
        raise ConfigError(f"no L2MAC run or thread {run!r} in namespace {namespace!r}")
    return project


async def export_files(store: GraphStore, namespace: str, run: str, to: Path, *, force: bool = False) -> list[str]:
    """Write the current version of every file of ``run`` (a run id or thread id) under ``to``; the paths written.

    ``to`` must be empty or missing, unless ``force`` (then files of the same paths are overwritten, others kept).
    """
    project = await project_of_run(store, namespace, run)
    root = to.resolve()
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{str(to)!r} exists and is not a folder")
    if root.is_dir() and any(root.iterdir()) and not force:
        raise ConfigError(f"{str(to)!r} is not empty; choose an empty folder or pass --force to overwrite files in it")
    heads = await project.heads()
    for path, content in heads.items():
        target = (root / check_path(path)).resolve()
        if not target.is_relative_to(root):
            raise ConfigError(f"{path!r} would be written outside {str(to)!r}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
    return sorted(heads)
