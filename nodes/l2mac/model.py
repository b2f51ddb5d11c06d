"""What L2MAC keeps in the store: the instruction registry and the versioned file store of each run thread.

The contract between the control unit (which writes them), the export command and anything that inspects a run.
One project per run thread; every id is a stable id, so a resumed step that repeats a write finds it done instead of
writing it twice.

- ``L2Project``: ``{thread_id, task, status: planned|running|done|failed, instructions: [text], files: {path:
  {versions: [version ids, oldest first], deleted: bool}}}``; text = the task. ``files`` is the manifest: the
  head of a path is its last version, unless the path is deleted. Id from (namespace, thread_id).
- ``L2Instruction``: ``{thread_id, idx, text, status: pending|active|done|failed, restarts, turns, checks, summary,
  error}``; text = the instruction. ``(:L2Project)-[:HAS_INSTRUCTION {key: idx}]->(:L2Instruction)`` and
  ``(:L2Instruction)-[:NEXT]->(:L2Instruction)`` in plan order. Id from (namespace, thread_id, idx).
- ``L2FileVersion``: ``{thread_id, path, n, action: write|edit|delete, content, sha256, lines, instruction,
  attempt, turn, tool_call_id, prev}``; text = the path. ``n`` counts the path's versions from 1, ``prev`` is the
  id of the version before (None for the first), a delete is a version with empty content (a tombstone).
  ``(:L2FileVersion)-[:WRITTEN_IN {attempt, turn}]->(:L2Instruction)`` (the step that wrote it) and
  ``(:L2FileVersion)-[:PREV]->(:L2FileVersion)``. Id from (namespace, thread_id, write key, path), the write key
  (:class:`WriteKey`) naming the tool call: instruction, attempt, turn and call id.

- ``L2Claim``: ``{thread_id, generation, run_id, host, pid, started, claimed_at, renewed_at, released,
  took_over}``; text = the thread id. Which run, in which process (host, pid and the process's start time where the
  platform tells it), runs the thread. Id from (namespace, thread_id, generation); generations count from 1 and
  the thread's claim is the highest one stored.

A version and the manifest that points at it are written in one transaction, the version as a claim (``new=``):
the write key's version existing already means the write was applied (a resumed step), and a racing writer of
the same key gets ``ConflictError``. ``NEXT`` is the memory layer's relationship; the others are registered here.

One process runs a thread at a time (:mod:`mnemoflow.nodes.l2mac.claim`), so no manifest update is lost to a
second writer: every node that touches the store first holds the thread's claim. A run holds it while it is the
latest generation, not released, and its own (same run id, host and process). Another run may take it over only
when its owner is gone, by writing the next generation as new (``new=``), so of two runs taking over at once
exactly one wins and the other is refused (``ConflictError``), as is a run that finds the claim held:

- released: the owner finished, or a node of it failed (a failing node releases before it raises);
- dead: the owner ran on this host and its process is gone (no such pid, or a pid reused by a process started at
  another time);
- silent: the owner runs on another host, or is another run of this very process, and has not renewed the claim
  (``renewed_at``, refreshed by the owner's nodes) for :data:`~mnemoflow.nodes.l2mac.claim.LEASE_S` seconds.

A run killed mid-instruction therefore resumes on its thread at once on the same host, and after the lease from
another host; a second process started while the first is alive is refused before it calls the model or writes.
"""

from __future__ import annotations

from dataclasses import dataclass

from mnemoflow.memory.names import REGISTRY
from mnemoflow.memory.records import stable_id

__all__ = [
    "CLAIM",
    "HAS_INSTRUCTION",
    "INSTRUCTION",
    "PREV",
    "PROJECT",
    "VERSION",
    "WRITTEN_IN",
    "WriteKey",
    "claim_id",
    "file_version_id",
    "instruction_id",
    "project_id",
]

PROJECT, INSTRUCTION, VERSION, CLAIM = "L2Project", "L2Instruction", "L2FileVersion", "L2Claim"
HAS_INSTRUCTION, WRITTEN_IN, PREV = "HAS_INSTRUCTION", "WRITTEN_IN", "PREV"

REGISTRY.register_kind(PROJECT, description="L2MAC: a run thread's task, instruction list and file manifest.")
REGISTRY.register_kind(INSTRUCTION, description="L2MAC: one instruction of the plan and its control-unit state.")
REGISTRY.register_kind(VERSION, description="L2MAC: one version of a file of the file store, and the step that wrote it.")
REGISTRY.register_kind(CLAIM, description="L2MAC: which run, in which process, runs a thread (one generation of its claim).")
for relationship in (HAS_INSTRUCTION, WRITTEN_IN, PREV):
    REGISTRY.register_relationship(relationship)


@dataclass(frozen=True)
class WriteKey:
    """Which tool call of which step wrote a version: the same call always gives the same version id."""

    instruction: int
    attempt: int
    turn: int
    tool_call_id: str

    def token(self) -> str:
        return f"{self.instruction}/{self.attempt}/{self.turn}/{self.tool_call_id}"


def project_id(namespace: str, thread_id: str) -> str:
    return stable_id(namespace, PROJECT, thread_id)


def instruction_id(namespace: str, thread_id: str, idx: int) -> str:
    """Instruction ``idx`` (from 0) of a thread's plan."""
    return stable_id(namespace, INSTRUCTION, thread_id, idx)


def file_version_id(namespace: str, thread_id: str, key: WriteKey, path: str) -> str:
    """The version of ``path`` the tool call ``key`` wrote."""
    return stable_id(namespace, VERSION, thread_id, key.token(), path)


def claim_id(namespace: str, thread_id: str, generation: int) -> str:
    """Generation ``generation`` (from 1) of a thread's claim."""
    return stable_id(namespace, CLAIM, thread_id, generation)
