"""ExpeRepair's episodic memory: an issue's outcome and the demonstrations derived from its attempts.

A repair run leaves an ordered list of reproduction attempts (:class:`TestAttempt`) and one selected patch per
round (:class:`PatchRound`). :func:`derive_test_demos` pairs each attempt that is the first or follows a failure
with the next attempt that reproduced the issue; :func:`derive_patch_demos` pairs each rejected round with the
next accepted one. The records and their ids are described in ``model.py``; writing them again changes nothing.
Demos are written when :func:`writes_episodic`; what a run used is linked by :func:`record_usage` either way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from mnemoflow.errors import ConflictError, UsageError
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import NodeRecord, RelationshipRecord
from mnemoflow.nodes.experepair.model import (
    ISSUE,
    OF_ISSUE,
    PATCH_DEMO,
    TEST_DEMO,
    USED_DEMO,
    USED_INSIGHT,
    issue_node_id,
    patch_demo_id,
    test_demo_id,
)
from mnemoflow.nodes.experepair.state import RepairState

__all__ = [
    "PatchRound",
    "TestAttempt",
    "derive_patch_demos",
    "derive_test_demos",
    "record_issue",
    "record_patch_rounds",
    "record_test_attempts",
    "record_usage",
    "writes_episodic",
]


class TestAttempt(BaseModel):
    """One attempt of the Test Agent: its script, the execution and the judge's verdict."""

    __test__ = False  # not a pytest class
    model_config = ConfigDict(frozen=True)

    script: str
    """The reproduction script the Test Agent wrote."""
    output: str
    """stdout and stderr as one text."""
    returncode: int | None
    """The script's exit code on the unfixed code (None when it did not finish)."""
    reproduces: bool
    """The judge's YES (True) or NO (False)."""
    analysis: str = ""
    """The judge's analysis of the run."""
    advice: str = ""
    """The judge's advice for the next script."""


class PatchRound(BaseModel):
    """One refinement round of the Patch Agent: the round's selected patch and the reviewer's verdict."""

    model_config = ConfigDict(frozen=True)

    patch: str
    """The round's best-ranked patch, as a unified diff (empty when the round had none)."""
    correct: bool
    """Whether the reviewer accepted it."""


def writes_episodic(state: RepairState) -> bool:
    """Whether the issue's demos are recorded: memory and episodic memory on, in either phase (the seed phase
    builds the memory it does not read)."""
    return state.memory and state.episodic


def derive_test_demos(attempts: Sequence[TestAttempt]) -> list[dict[str, Any]]:
    """Demos from an ordered attempt list: each attempt that is the first or follows a NO, paired with the next
    YES (``initial`` when it is the first, ``repair`` otherwise)."""
    demos: list[dict[str, Any]] = []
    for i in range(len(attempts)):
        previous = attempts[i - 1] if i > 0 else None
        if previous is not None and previous.reproduces:
            continue
        success = next((attempts[j] for j in range(i, len(attempts)) if attempts[j].reproduces), None)
        if success is None:
            break  # no later attempt succeeds, so neither does any from a later i
        old_test = previous.script if previous is not None else ""
        demos.append(
            {
                "kind": "repair" if old_test != "" else "initial",
                "old_test": old_test,
                "old_exec_result": previous.output if previous is not None else "",
                "old_returncode": previous.returncode if previous is not None else None,
                "new_test": success.script,
                "new_exec_result": success.output,
                "new_returncode": success.returncode,
            }
        )
    return demos


def derive_patch_demos(rounds: Sequence[PatchRound]) -> list[tuple[str, str]]:
    """(rejected patch, correct patch) pairs: each rejected round paired with the next correct round.

    The reference checks round ``i`` instead of ``j`` when looking for the correct round; this does not.
    """
    pairs: list[tuple[str, str]] = []
    for i, rejected in enumerate(rounds):
        if rejected.correct or rejected.patch == "":
            continue
        fixed = next((rounds[j] for j in range(i + 1, len(rounds)) if rounds[j].correct), None)
        if fixed is not None and (rejected.patch, fixed.patch) not in pairs:
            pairs.append((rejected.patch, fixed.patch))
    return pairs


async def _write_demos(
    store: GraphStore, namespace: str, *, repo: str, issue_id: str, issue_text: str, demos: list[NodeRecord]
) -> list[str]:
    if not demos:
        return []
    issue = issue_node_id(namespace, repo, issue_id)
    links = [RelationshipRecord(namespace=namespace, type=OF_ISSUE, source_id=d.id, target_id=issue) for d in demos]
    (existing,) = await store.get_nodes(namespace, [issue])
    if existing is None:
        bare = _issue_record(namespace, repo, issue_id, issue_text, "unresolved", "", {})
        try:
            await store.upsert_nodes([bare, *demos], new=[issue])
        except ConflictError:  # another writer created the issue meanwhile: keep theirs
            await store.upsert_nodes(demos)
    else:
        await store.upsert_nodes(demos)
    await store.upsert_relationships(links)
    return [d.id for d in demos]


async def record_test_attempts(
    store: GraphStore, namespace: str, *, repo: str, issue_id: str, issue_text: str, attempts: list[TestAttempt]
) -> list[str]:
    """Derive the test demos of one issue's attempts and write them (idempotent); returns their ids."""
    demos = []
    for fields in derive_test_demos(attempts):
        properties = {"repo": repo, "issue_id": issue_id, "issue_description": issue_text, **fields}
        node_id = test_demo_id(
            namespace, repo, issue_id, fields["kind"], fields["old_test"], fields["old_exec_result"], fields["new_test"]
        )
        demos.append(NodeRecord(id=node_id, namespace=namespace, kind=TEST_DEMO, properties=properties, text=issue_text))
    return await _write_demos(store, namespace, repo=repo, issue_id=issue_id, issue_text=issue_text, demos=demos)


async def record_patch_rounds(
    store: GraphStore, namespace: str, *, repo: str, issue_id: str, issue_text: str, rounds: list[PatchRound]
) -> list[str]:
    """Write a ``PatchDemo`` per (rejected round, next correct round) pair (idempotent); returns their ids."""
    demos = [
        NodeRecord(
            id=patch_demo_id(namespace, repo, issue_id, old, new),
            namespace=namespace,
            kind=PATCH_DEMO,
            properties={
                "repo": repo,
                "issue_id": issue_id,
                "issue_description": issue_text,
                "old_patch": old,
                "old_result": False,
                "new_patch": new,
                "new_result": True,
            },
            text=issue_text,
        )
        for old, new in derive_patch_demos(rounds)
    ]
    return await _write_demos(store, namespace, repo=repo, issue_id=issue_id, issue_text=issue_text, demos=demos)


def _issue_record(
    namespace: str, repo: str, issue_id: str, issue_text: str, status: str, final_patch: str, evidence: dict[str, Any]
) -> NodeRecord:
    return NodeRecord(
        id=issue_node_id(namespace, repo, issue_id),
        namespace=namespace,
        kind=ISSUE,
        properties={"repo": repo, "issue_id": issue_id, "status": status, "final_patch": final_patch, "evidence": evidence},
        text=issue_text,
    )


async def record_issue(
    store: GraphStore,
    namespace: str,
    *,
    repo: str,
    issue_id: str,
    issue_text: str,
    status: Literal["resolved", "unresolved"],
    final_patch: str,
    evidence: dict[str, Any],
) -> str:
    """Write (or update) the issue's record with its outcome; returns its id."""
    if status not in ("resolved", "unresolved"):
        raise UsageError(f"issue status {status!r} is not allowed: use 'resolved' or 'unresolved'")
    record = _issue_record(namespace, repo, issue_id, issue_text, status, final_patch, evidence)
    await store.upsert_nodes([record])
    return record.id


async def record_usage(
    store: GraphStore,
    namespace: str,
    *,
    repo: str,
    issue_id: str,
    demos_used: Mapping[str, Sequence[Mapping[str, Any]]],
    insight_ids: Mapping[str, Sequence[str]],
) -> int:
    """Link the issue's record to the demos put into its prompts (``USED_DEMO``, per stage) and the insights shown
    (``USED_INSIGHT``), as ``model.py`` describes; the issue's record must exist. A memory deleted since its use
    gets no link. Idempotent; returns the number of links written."""
    issue = issue_node_id(namespace, repo, issue_id)
    demo_links: dict[tuple[str, str], RelationshipRecord] = {}
    for stage, entries in demos_used.items():
        for entry in entries:
            demo_id = str(entry["id"])
            link = demo_links.get((demo_id, stage))
            if link is None:
                properties = {"stage": stage, "rank": int(entry["rank"]), "score": float(entry["score"]), "uses": 1}
                demo_links[(demo_id, stage)] = RelationshipRecord(
                    namespace=namespace, type=USED_DEMO, source_id=issue, target_id=demo_id, key=stage, properties=properties
                )
            else:
                uses = {**link.properties, "uses": int(link.properties["uses"]) + 1}
                demo_links[(demo_id, stage)] = link.model_copy(update={"properties": uses})
    insight_links = {
        insight: RelationshipRecord(
            namespace=namespace,
            type=USED_INSIGHT,
            source_id=issue,
            target_id=insight,
            properties={"role": role, "position": position},
        )
        for role, ids in insight_ids.items()
        for position, insight in enumerate(ids, start=1)
    }
    links = [*demo_links.values(), *insight_links.values()]
    if not links:
        return 0
    targets = list(dict.fromkeys(link.target_id for link in links))
    existing = {node.id for node in await store.get_nodes(namespace, targets) if node is not None}
    kept = [link for link in links if link.target_id in existing]
    if kept:
        await store.upsert_relationships(kept)
    return len(kept)
