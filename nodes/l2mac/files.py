"""L2MAC's file store and instruction registry, kept in the memory store: :class:`Project` and :func:`load_project`.

A project reads its manifest once and keeps it up to date with its own writes; a file's versions are never
changed, a new one is added. The records, their properties and ids are :mod:`mnemoflow.nodes.l2mac.model`'s.
Paths are checked here too: :func:`check_path` takes relative POSIX paths inside the project's root whose names
every common filesystem can hold, nothing reserved; :meth:`Project.commit` refuses a file where a folder of the same
name is (or the other way round), which no folder on disk can hold.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Literal

from mnemoflow.errors import NodeError, ToolArgumentError
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import NodeRecord, RelationshipRecord
from mnemoflow.nodes.l2mac.model import (
    HAS_INSTRUCTION,
    INSTRUCTION,
    PREV,
    PROJECT,
    VERSION,
    WRITTEN_IN,
    WriteKey,
    file_version_id,
    instruction_id,
    project_id,
)

__all__ = [
    "MAX_FILE_CHARS",
    "Action",
    "FileVersion",
    "FileTooLargeError",
    "MissingFileError",
    "PathError",
    "Project",
    "check_path",
    "find_clash",
    "load_project",
]

MAX_PATH_CHARS = 200
MAX_NAME_BYTES = 255
"""Longest file or folder name, in UTF-8 bytes, that Linux filesystems take (``NAME_MAX``)."""
MAX_FILE_CHARS = 200_000
"""Largest file the store takes (a file must fit a model's context to be read back)."""
GIT_NAMES = frozenset({".git", "git~1"})
"""Names of git's own folder, refused at any depth: git runs commands a ``.git/config`` names (``core.fsmonitor``)
when it opens the folder holding it. ``GIT~1`` is the short name Windows gives ``.git``."""
SANDBOX_NAME = ".mnemoflow_sandbox"
"""The folder of the check scripts at the project's root (:data:`mnemoflow.nodes.sandbox.SANDBOX_DIR`)."""
_IGNORED_BY_HFS = frozenset("\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u206a\u206b\u206c\u206d\u206e\u206f\ufeff")
"""Code points macOS's HFS+ leaves out of a name when it compares names (as git's ``is_hfs_dotgit`` does)."""

Action = Literal["write", "edit", "delete"]


class PathError(ToolArgumentError):
    """A path the file store refuses: empty, absolute, climbing out with ``..``, reserved, a name too long, or a
    file where a folder of the same name is (or the other way round)."""

    code = "l2mac-path"


class MissingFileError(ToolArgumentError, KeyError):
    """A file, or a version of it, that the file store does not hold."""

    code = "l2mac-missing-file"


class FileTooLargeError(ToolArgumentError):
    """Content longer than a file of the store may hold (:data:`MAX_FILE_CHARS`)."""

    code = "l2mac-file-too-large"


def check_path(path: str) -> str:
    """``path`` normalized to a relative POSIX path inside the store's root, or :class:`PathError` saying why not."""
    if not isinstance(path, str) or not path.strip():
        raise PathError("the path is empty")
    raw = path.strip()
    if len(raw) > MAX_PATH_CHARS:
        raise PathError(f"the path {raw[:40]!r}... is longer than {MAX_PATH_CHARS} characters")
    if "\\" in raw or "\x00" in raw or (len(raw) > 1 and raw[1] == ":"):
        raise PathError(f"{raw!r} is not a relative POSIX path (use forward slashes, no drive letter)")
    pure = PurePosixPath(raw)
    if pure.is_absolute():
        raise PathError(f"{raw!r} is absolute; paths are relative to the project's root")
    if ".." in pure.parts:
        raise PathError(f"{raw!r} climbs out of the project's root with '..'")
    normal = str(pure)
    if normal in ("", "."):
        raise PathError(f"{raw!r} names the root folder, not a file")
    try:
        names = [(name, len(name.encode("utf-8"))) for name in pure.parts]
    except UnicodeEncodeError as error:
        raise PathError(f"{raw!r} is not valid Unicode text ({error.reason})") from error
    for name, size in names:
        if size > MAX_NAME_BYTES:
            raise PathError(f"{raw!r}: the name {name[:20]!r}... has {size} bytes in UTF-8, more than {MAX_NAME_BYTES} bytes")
    for name in pure.parts:
        if _as_filesystems_compare(name) in GIT_NAMES:
            raise PathError(f"{raw!r} is reserved: {name!r} names git's own folder, whose config can run commands")
    if _as_filesystems_compare(pure.parts[0]) == SANDBOX_NAME:
        raise PathError(f"{raw!r} is reserved: {pure.parts[0]!r} holds the check scripts")
    return normal


def _as_filesystems_compare(name: str) -> str:
    """``name`` as a case-insensitive, normalizing filesystem compares it: ``.GIT``, ``.git.`` and ``.git `` (Windows
    drops trailing dots and spaces), ``.git::$INDEX_ALLOCATION`` (an NTFS stream of the folder) and ``.git`` with a
    zero-width joiner inside (HFS+ ignores it) all name ``.git``."""
    visible = "".join(char for char in name if char not in _IGNORED_BY_HFS)
    folded = unicodedata.normalize("NFKC", visible).casefold()
    return folded.split(":", 1)[0].rstrip(". ")


def find_clash(path: str, files: Collection[str]) -> str | None:
    """Why the file ``path`` cannot sit beside ``files`` on disk (one of them is a folder of ``path``, or ``path`` is
    a folder of one of them), or None."""
    for folder in PurePosixPath(path).parents:
        if str(folder) in files:
            return f"{path}: {str(folder)!r} is a file"
    inside = min((other for other in files if other.startswith(f"{path}/")), default=None)
    return None if inside is None else f"{path!r} is a folder holding {inside}"


@dataclass(frozen=True)
class FileVersion:
    """One version of a file, as read back from its ``L2FileVersion`` record."""

    id: str
    path: str
    n: int
    """1 for a path's first version."""
    action: Action
    content: str
    instruction: int
    attempt: int
    turn: int

    @property
    def lines(self) -> int:
        return len(self.content.splitlines())

    @classmethod
    def from_record(cls, record: NodeRecord) -> FileVersion:
        p = record.properties
        return cls(record.id, p["path"], p["n"], p["action"], p["content"], p["instruction"], p["attempt"], p["turn"])


class Project:
    """One thread's instruction registry and file store; load it with :func:`load_project`.

    The manifest is read once and kept up to date by this object's own writes; one run writes a project at a time.
    """

    def __init__(self, store: GraphStore, namespace: str, thread_id: str, record: NodeRecord | None) -> None:
        self.store = store
        self.namespace = namespace
        self.thread_id = thread_id
        self.id = project_id(namespace, thread_id)
        self._properties: dict[str, Any] = (
            dict(record.properties)
            if record is not None
            else {"thread_id": thread_id, "task": "", "status": "planned", "instructions": [], "files": {}}
        )
        self.exists = record is not None

    # -- the instruction registry ------------------------------------------------------------------------------

    @property
    def instructions(self) -> list[str]:
        return list(self._properties["instructions"])

    @property
    def status(self) -> str:
        return str(self._properties["status"])

    async def save_plan(self, task: str, instructions: Sequence[str]) -> None:
        """Store the task and its instructions (pending), linked in order; a repeated call rewrites the same records."""
        ids = [instruction_id(self.namespace, self.thread_id, idx) for idx in range(len(instructions))]
        self._properties.update(task=task, instructions=list(instructions), status="running")
        nodes = [self._record()] + [
            NodeRecord(
                id=ids[idx],
                namespace=self.namespace,
                kind=INSTRUCTION,
                properties={
                    "thread_id": self.thread_id,
                    "idx": idx,
                    "text": text,
                    "status": "pending",
                    "restarts": 0,
                    "turns": 0,
                    "checks": 0,
                    "summary": "",
                    "error": "",
                },
                text=text,
            )
            for idx, text in enumerate(instructions)
        ]
        await self.store.upsert_nodes(nodes)
        links = [self._link(HAS_INSTRUCTION, self.id, target, key=str(idx)) for idx, target in enumerate(ids)]
        links += [self._link("NEXT", left, right) for left, right in zip(ids, ids[1:], strict=False)]
        await self.store.upsert_relationships(links)
        self.exists = True

    async def update_instruction(self, idx: int, **changes: Any) -> None:
        """Record the control unit's state of instruction ``idx`` (status, restarts, turns, checks, summary, error)."""
        [record] = await self.store.get_nodes(self.namespace, [instruction_id(self.namespace, self.thread_id, idx)])
        if record is None:
            raise NodeError(f"l2mac: instruction {idx} of thread {self.thread_id!r} is not in the store")
        await self.store.upsert_nodes([record.model_copy(update={"properties": {**record.properties, **changes}})])

    async def set_status(self, status: Literal["running", "done", "failed"]) -> None:
        self._properties["status"] = status
        await self.store.upsert_nodes([self._record()])

    # -- the file store ----------------------------------------------------------------------------------------

    def paths(self) -> list[str]:
        """The paths that exist now, sorted."""
        return sorted(path for path, entry in self._properties["files"].items() if not entry["deleted"])

    def version_count(self, path: str) -> int:
        entry = self._properties["files"].get(path)
        return len(entry["versions"]) if entry else 0

    async def read(self, path: str, version: int | None = None) -> FileVersion:
        """The head of ``path`` (:class:`MissingFileError` if it does not exist), or its version ``version`` (1-based;
        deleted too)."""
        entry = self._properties["files"].get(path)
        if entry is None or (version is None and entry["deleted"]):
            raise MissingFileError(path)
        versions = entry["versions"]
        n = len(versions) if version is None else version
        if not 1 <= n <= len(versions):
            raise MissingFileError(f"{path} has versions 1 to {len(versions)}, not {version}")
        [record] = await self.store.get_nodes(self.namespace, [versions[n - 1]])
        if record is None:
            raise NodeError(f"l2mac: version {n} of {path!r} is named by the manifest but not in the store")
        return FileVersion.from_record(record)

    async def heads(self) -> dict[str, str]:
        """Every existing file's current content, by path."""
        paths = self.paths()
        ids = [self._properties["files"][path]["versions"][-1] for path in paths]
        found: dict[str, str] = {}
        for start in range(0, len(ids), 500):
            for record in await self.store.get_nodes(self.namespace, ids[start : start + 500]):
                if record is not None:
                    found[record.properties["path"]] = record.properties["content"]
        return found

    def check_room(self, paths: Sequence[str]) -> None:
        """:class:`PathError` when a file of ``paths`` cannot sit beside the existing files and the paths before it.

        A deleted file's name is free: only existing files count.
        """
        taken = set(self.paths())
        for path in paths:
            clash = find_clash(path, taken)
            if clash is not None:
                raise PathError(clash)
            taken.add(path)

    async def commit(self, key: WriteKey, path: str, action: Action, content: str = "") -> tuple[FileVersion, bool]:
        """Write a new version of ``path`` (``delete``: a tombstone) for the tool call ``key``.

        Returns the version and whether it was written now (False: this call's version existed, the write had been
        applied before a resume, and nothing changed).

        Raises:
            PathError: a write or edit of a path :func:`check_path` refuses or does not give back unchanged, or of a
                file that cannot sit beside the existing ones (:meth:`check_room`). A deletion is not checked, so a
                path stored before a check was added can still be deleted.
            FileTooLargeError: more than :data:`MAX_FILE_CHARS` characters.
            ToolArgumentError: content that is not valid Unicode text.
        """
        if len(content) > MAX_FILE_CHARS:
            raise FileTooLargeError(f"{path}: {len(content)} characters is more than the {MAX_FILE_CHARS} a file may hold")
        try:
            encoded = content.encode("utf-8")
        except UnicodeEncodeError as error:
            raise ToolArgumentError(f"{path}: the content is not valid Unicode text ({error.reason})") from error
        if action != "delete":
            if check_path(path) != path:
                raise PathError(f"{path!r} is not a normalized path; write it as {check_path(path)!r}")
            self.check_room([path])
        version_id = file_version_id(self.namespace, self.thread_id, key, path)
        [existing] = await self.store.get_nodes(self.namespace, [version_id])
        if existing is not None:
            await self.store.upsert_relationships(self._version_links(existing))
            return FileVersion.from_record(existing), False
        files = self._properties["files"]
        entry = files.get(path, {"versions": [], "deleted": False})
        versions = entry["versions"]
        record = NodeRecord(
            id=version_id,
            namespace=self.namespace,
            kind=VERSION,
            properties={
                "thread_id": self.thread_id,
                "path": path,
                "n": len(versions) + 1,
                "action": action,
                "content": content,
                "sha256": hashlib.sha256(encoded).hexdigest(),
                "lines": len(content.splitlines()),
                "instruction": key.instruction,
                "attempt": key.attempt,
                "turn": key.turn,
                "tool_call_id": key.tool_call_id,
                "prev": versions[-1] if versions else None,
            },
            text=path,
        )
        files[path] = {"versions": [*versions, version_id], "deleted": action == "delete"}
        try:
            await self.store.upsert_nodes([record, self._record()], new=[version_id])
        except BaseException:
            files[path] = entry
            raise
        await self.store.upsert_relationships(self._version_links(record))
        return FileVersion.from_record(record), True

    # -- plumbing ----------------------------------------------------------------------------------------------

    def _record(self) -> NodeRecord:
        return NodeRecord(
            id=self.id, namespace=self.namespace, kind=PROJECT, properties=dict(self._properties), text=self._properties["task"]
        )

    def _link(self, type: str, source: str, target: str, key: str = "", **properties: Any) -> RelationshipRecord:
        return RelationshipRecord(
            namespace=self.namespace, type=type, source_id=source, target_id=target, key=key, properties=properties
        )

    def _version_links(self, record: NodeRecord) -> list[RelationshipRecord]:
        p = record.properties
        target = instruction_id(self.namespace, self.thread_id, p["instruction"])
        links = [self._link(WRITTEN_IN, record.id, target, attempt=p["attempt"], turn=p["turn"])]
        if p["prev"]:
            links.append(self._link(PREV, record.id, p["prev"]))
        return links


async def load_project(store: GraphStore, namespace: str, thread_id: str) -> Project:
    """The project of a run thread (empty when the thread has not planned yet)."""
    [record] = await store.get_nodes(namespace, [project_id(namespace, thread_id)])
    return Project(store, namespace, thread_id, record)
