"""The L2MAC project view: a run thread's instructions and their status, its file tree, any file at any version and
a diff between two versions of a file.

One project per run thread (:mod:`mnemoflow.nodes.l2mac.model`): the ``L2Project`` record holds the task, the
instruction list and the file manifest (each path's version ids, oldest first, and whether it is deleted); each
instruction and each version is a record of its own with a stable id. Everything is read by id through the store
API (``get_nodes``, ``list_nodes``), so both backends serve the view. The cost of each read is bounded by what it
shows: the project page reads the project and its instructions; a file reads the records of that path's versions
(for the version picker); a diff reads two versions and compares them here with :mod:`difflib`.

Pages: ``/mechanisms/l2mac`` (a namespace's projects) and ``/mechanisms/l2mac/project?namespace=&thread=`` with
optional ``path``, ``version`` and ``against`` (a version to diff with). APIs, the same data as JSON:
``/api/mechanisms/l2mac/projects``, ``/api/mechanisms/l2mac/project``, ``/api/mechanisms/l2mac/file`` and
``/api/mechanisms/l2mac/diff``.
"""

from __future__ import annotations

import difflib
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from mnemoflow.flows.server.state import ServerState, server_state
from mnemoflow.flows.server.ui import pages
from mnemoflow.flows.server.ui.views import UIError, get_many, store_errors
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import NodeRecord
from mnemoflow.nodes.l2mac.model import INSTRUCTION, PROJECT, VERSION, instruction_id, project_id

__all__ = [
    "GRAPH",
    "diff_versions",
    "file_versions",
    "project_summaries",
    "project_url",
    "project_view",
    "record_links",
    "router",
    "run_links",
]

GRAPH = "l2mac"
"""The library graph whose runs build a project (one per run thread)."""
MAX_PROJECTS = 200
"""Projects listed per namespace, most recently changed first."""
CONTEXT_LINES = 3
"""Unchanged lines shown around each change of a diff."""

router = APIRouter(include_in_schema=False)
State = Annotated[ServerState, Depends(server_state)]
Namespace = Annotated[str, Query(min_length=1, max_length=200, description="The namespace the run wrote to.")]
Thread = Annotated[str, Query(min_length=1, max_length=512, description="The run thread the project belongs to.")]
FilePath = Annotated[str, Query(min_length=1, max_length=1000, description="A path of the project's file store.")]
Version = Annotated[int, Query(ge=1, le=1_000_000, description="A version of the file, from 1.")]


def project_url(namespace: str, thread_id: str, **extra: str | int) -> str:
    """The project page's address (``extra``: ``path``, ``version``, ``against``)."""
    return "/mechanisms/l2mac/project?" + urlencode({"namespace": namespace, "thread": thread_id, **extra})


def run_links(run: dict[str, Any]) -> list[dict[str, str]]:
    """An ``l2mac`` run links to the project of its thread."""
    thread_id, namespace = run.get("thread_id"), run.get("namespace")
    if run.get("graph") != GRAPH or not thread_id or not namespace:
        return []
    return [{"label": "L2MAC project: instructions, files and versions", "url": project_url(str(namespace), str(thread_id))}]


def record_links(record: dict[str, Any]) -> list[dict[str, str]]:
    """The view a record of an L2MAC project links to (``record`` as :func:`views.node_json` shapes it): its
    project; for a file version, that version of its file."""
    properties = record.get("properties") or {}
    thread_id, namespace = properties.get("thread_id"), record.get("namespace")
    if record.get("kind") not in (PROJECT, INSTRUCTION, VERSION) or not isinstance(thread_id, str) or not namespace:
        return []
    if record["kind"] == VERSION and isinstance(properties.get("path"), str) and isinstance(properties.get("n"), int):
        url = project_url(str(namespace), thread_id, path=properties["path"], version=properties["n"])
        return [{"label": "L2MAC project: this version of the file", "url": url}]
    return [{"label": "L2MAC project: instructions, files and versions", "url": project_url(str(namespace), thread_id)}]


# -- reading -----------------------------------------------------------------------------------------------


async def _project(store: GraphStore, namespace: str, thread_id: str) -> NodeRecord:
    [record] = await get_many(store, namespace, [project_id(namespace, thread_id)])
    if record is None or record.kind != PROJECT:
        raise UIError(404, f"no L2MAC project for thread {thread_id!r} in namespace {namespace!r}")
    return record


def _manifest(project: NodeRecord) -> dict[str, dict[str, Any]]:
    """The project's files: ``{path: {"versions": [ids], "deleted": bool}}``, entries of another shape left out."""
    files = project.properties.get("files")
    if not isinstance(files, dict):
        return {}
    return {
        str(path): {"versions": [str(v) for v in entry["versions"]], "deleted": bool(entry.get("deleted"))}
        for path, entry in files.items()
        if isinstance(entry, dict) and isinstance(entry.get("versions"), list) and entry["versions"]
    }


def _instruction_json(idx: int, text: str, record: NodeRecord | None) -> dict[str, Any]:
    p = record.properties if record is not None else {}
    return {
        "idx": idx,
        "number": idx + 1,
        "id": record.id if record is not None else None,
        "text": str(p.get("text", text)),
        "status": str(p.get("status", "pending")),
        "restarts": p.get("restarts", 0),
        "turns": p.get("turns", 0),
        "checks": p.get("checks", 0),
        "summary": str(p.get("summary") or ""),
        "error": str(p.get("error") or ""),
    }


def _tree(manifest: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The manifest as a tree: folders first, then files, each by name. A file entry has ``versions`` (how many)
    and ``deleted``; a folder has ``children`` and is ``deleted`` when everything in it is."""
    root: dict[str, Any] = {"folders": {}, "files": []}
    for path in sorted(manifest):
        *folders, name = path.split("/")
        node = root
        for depth, folder in enumerate(folders):
            node = node["folders"].setdefault(folder, {"path": "/".join(folders[: depth + 1]), "folders": {}, "files": []})
        entry = manifest[path]
        node["files"].append(
            {"name": name, "path": path, "folder": False, "versions": len(entry["versions"]), "deleted": entry["deleted"]}
        )

    def entries(node: dict[str, Any]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for name, folder in sorted(node["folders"].items()):
            children = entries(folder)
            found.append(
                {
                    "name": name,
                    "path": folder["path"],
                    "folder": True,
                    "children": children,
                    "deleted": all(c["deleted"] for c in children),
                }
            )
        files: list[dict[str, Any]] = node["files"]
        return found + files

    return entries(root)


async def project_view(store: GraphStore, namespace: str, thread_id: str) -> dict[str, Any]:
    """A project: task, status, instructions with their control-unit state, and the file tree.

    ``{"namespace", "thread_id", "id", "task", "status", "instructions": [{"idx", "number", "id", "text", "status",
    "restarts", "turns", "checks", "summary", "error"}], "files": {"existing", "deleted", "versions"},
    "tree": [{"name", "path", "folder", "deleted", "versions" | "children"}]}``; 404 when the thread has no project.
    """
    project = await _project(store, namespace, thread_id)
    texts = [str(text) for text in project.properties.get("instructions") or []]
    records = await get_many(store, namespace, [instruction_id(namespace, thread_id, idx) for idx in range(len(texts))])
    manifest = _manifest(project)
    return {
        "namespace": namespace,
        "thread_id": thread_id,
        "id": project.id,
        "task": str(project.properties.get("task") or project.text or ""),
        "status": str(project.properties.get("status", "unknown")),
        "updated_at": project.updated_at.timestamp() if project.updated_at else None,
        "instructions": [
            _instruction_json(idx, text, record if record is not None and record.kind == INSTRUCTION else None)
            for idx, (text, record) in enumerate(zip(texts, records, strict=True))
        ],
        "files": {
            "existing": sum(not entry["deleted"] for entry in manifest.values()),
            "deleted": sum(entry["deleted"] for entry in manifest.values()),
            "versions": sum(len(entry["versions"]) for entry in manifest.values()),
        },
        "tree": _tree(manifest),
    }


async def project_summaries(store: GraphStore, namespace: str | None) -> list[dict[str, Any]]:
    """The projects of a namespace (or of every namespace), most recently changed first, at most
    ``MAX_PROJECTS`` per namespace: ``[{"namespace", "thread_id", "task", "status", "instructions", "files",
    "updated_at"}]``."""
    with store_errors():
        names = [namespace] if namespace else [summary.name for summary in await store.namespaces()]
        records: list[NodeRecord] = []
        for name in names:
            records += await store.list_nodes(name, kind=PROJECT, limit=MAX_PROJECTS)
    summaries: list[dict[str, Any]] = []
    for record in records:
        manifest = _manifest(record)
        summaries.append(
            {
                "namespace": record.namespace,
                "thread_id": str(record.properties.get("thread_id", "")),
                "task": str(record.properties.get("task") or record.text or ""),
                "status": str(record.properties.get("status", "unknown")),
                "instructions": len(record.properties.get("instructions") or []),
                "files": sum(not entry["deleted"] for entry in manifest.values()),
                "updated_at": record.updated_at.timestamp() if record.updated_at else None,
            }
        )
    summaries.sort(key=lambda summary: summary["updated_at"] or 0, reverse=True)
    return summaries


def _version_json(record: NodeRecord, *, content: bool) -> dict[str, Any]:
    p = record.properties
    data: dict[str, Any] = {
        "id": record.id,
        "n": p.get("n"),
        "action": str(p.get("action", "")),
        "instruction": p.get("instruction"),
        "attempt": p.get("attempt"),
        "turn": p.get("turn"),
        "lines": p.get("lines"),
        "sha256": str(p.get("sha256", "")),
        "created_at": record.created_at.timestamp() if record.created_at else None,
    }
    if content:
        data["content"] = str(p.get("content", ""))
    return data


async def _versions(store: GraphStore, namespace: str, thread_id: str, path: str) -> tuple[dict[str, Any], list[NodeRecord]]:
    """The project and every version record of ``path``, oldest first; 404 for an unknown project or path."""
    project = await _project(store, namespace, thread_id)
    entry = _manifest(project).get(path)
    if entry is None:
        raise UIError(404, f"the L2MAC project of thread {thread_id!r} has no file {path!r}")
    records = await get_many(store, namespace, entry["versions"])
    missing = [n for n, record in enumerate(records, 1) if record is None or record.kind != VERSION]
    if missing:
        raise UIError(500, f"{path}: version(s) {', '.join(map(str, missing))} are named by the manifest but not in the store")
    return entry, [record for record in records if record is not None]


def _pick(records: list[NodeRecord], path: str, version: int | None) -> NodeRecord:
    n = len(records) if version is None else version
    if not 1 <= n <= len(records):
        raise UIError(404, f"{path} has versions 1 to {len(records)}, not {version}")
    return records[n - 1]


async def file_versions(store: GraphStore, namespace: str, thread_id: str, path: str, version: int | None) -> dict[str, Any]:
    """One version of a file (the last one when ``version`` is None) with its content, and every version's
    metadata for a picker.

    ``{"path", "deleted", "version": {"id", "n", "action", "instruction", "attempt", "turn", "lines", "sha256",
    "created_at", "content"}, "versions": [the same without content, oldest first]}``.
    """
    entry, records = await _versions(store, namespace, thread_id, path)
    chosen = _pick(records, path, version)
    return {
        "path": path,
        "deleted": entry["deleted"],
        "version": _version_json(chosen, content=True),
        "versions": [_version_json(record, content=False) for record in records],
    }


def diff_lines(old: str, new: str, old_label: str, new_label: str) -> list[dict[str, str]]:
    """A unified diff of two texts as lines ``{"kind", "text"}``: ``header`` (the two file lines), ``hunk``
    (``@@`` ranges), ``added``, ``removed`` or ``context``; ``text`` keeps the diff's own marker column."""
    lines = list(difflib.unified_diff(old.splitlines(), new.splitlines(), old_label, new_label, lineterm="", n=CONTEXT_LINES))
    kinds = {"@": "hunk", "+": "added", "-": "removed"}
    return [{"kind": "header" if index < 2 else kinds.get(line[:1], "context"), "text": line} for index, line in enumerate(lines)]


async def diff_versions(
    store: GraphStore, namespace: str, thread_id: str, path: str, old: int, new: int | None
) -> dict[str, Any]:
    """The unified diff of version ``old`` of a file against version ``new`` (the last one when None).

    ``{"path", "from": version, "to": version (both without content), "lines": [{"kind", "text"}], "added",
    "removed"}``; no lines when the two versions hold the same text.
    """
    _, records = await _versions(store, namespace, thread_id, path)
    before, after = _pick(records, path, old), _pick(records, path, new)
    lines = diff_lines(
        str(before.properties.get("content", "")),
        str(after.properties.get("content", "")),
        f"{path} (version {before.properties.get('n')})",
        f"{path} (version {after.properties.get('n')})",
    )
    return {
        "path": path,
        "from": _version_json(before, content=False),
        "to": _version_json(after, content=False),
        "lines": lines,
        "added": sum(line["kind"] == "added" for line in lines),
        "removed": sum(line["kind"] == "removed" for line in lines),
    }


# -- pages -------------------------------------------------------------------------------------------------


@router.get("/mechanisms/l2mac")
async def projects_page(
    request: Request, state: State, namespace: Annotated[str | None, Query(max_length=200)] = None
) -> HTMLResponse:
    projects = await project_summaries(state.store, namespace or None)
    return pages.render(
        request,
        "mechanisms/l2mac_projects.html",
        section="memory",
        title="L2MAC projects",
        projects=projects,
        namespace=namespace,
    )


@router.get("/mechanisms/l2mac/project")
async def project_page(
    request: Request,
    state: State,
    namespace: Namespace,
    thread: Thread,
    path: Annotated[str | None, Query(max_length=1000)] = None,
    version: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
    against: Annotated[str, Query(max_length=7, pattern=r"^[0-9]*$", description="A version to compare with; empty: none.")] = "",
) -> HTMLResponse:
    project = await project_view(state.store, namespace, thread)
    shown = await file_versions(state.store, namespace, thread, path, version) if path else None
    diff = None
    if shown is not None and against and int(against) != shown["version"]["n"]:
        diff = await diff_versions(state.store, namespace, thread, shown["path"], int(against), shown["version"]["n"])
    return pages.render(
        request,
        "mechanisms/l2mac.html",
        section="memory",
        title=f"L2MAC project {thread}",
        project=project,
        file=shown,
        diff=diff,
        against=int(against) if diff is not None else None,
        project_url=project_url,
    )


# -- APIs --------------------------------------------------------------------------------------------------


@router.get("/api/mechanisms/l2mac/projects")
async def projects_api(
    state: State, namespace: Annotated[str | None, Query(min_length=1, max_length=200)] = None
) -> list[dict[str, Any]]:
    """The L2MAC projects of a namespace (or of all), most recently changed first."""
    return await project_summaries(state.store, namespace)


@router.get("/api/mechanisms/l2mac/project")
async def project_api(state: State, namespace: Namespace, thread: Thread) -> dict[str, Any]:
    """A project: its task, status, instructions and file tree."""
    return await project_view(state.store, namespace, thread)


@router.get("/api/mechanisms/l2mac/file")
async def file_api(
    state: State, namespace: Namespace, thread: Thread, path: FilePath, version: Version | None = None
) -> dict[str, Any]:
    """One version of a file (the last by default) with its content, and the list of its versions."""
    return await file_versions(state.store, namespace, thread, path, version)


@router.get("/api/mechanisms/l2mac/diff")
async def diff_api(
    state: State,
    namespace: Namespace,
    thread: Thread,
    path: FilePath,
    old: Annotated[int, Query(alias="from", ge=1, le=1_000_000, description="The version to compare from.")],
    new: Annotated[
        int | None, Query(alias="to", ge=1, le=1_000_000, description="The version to compare to (the last by default).")
    ] = None,
) -> dict[str, Any]:
    """The unified diff between two versions of a file, line by line."""
    return await diff_versions(state.store, namespace, thread, path, old, new)
