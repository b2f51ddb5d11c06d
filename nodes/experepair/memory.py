"""ExpeRepair's memories in the store: episodic demonstrations and semantic insights.

The record contract (every id is a stable id, so re-recording the same issue never duplicates a record):

- ``RepairIssue`` ``{repo, issue_id, status: resolved|unresolved, final_patch, evidence}``; text = the issue.
  Id from (namespace, repo, issue_id). Recording demos of an issue first creates a bare ``unresolved`` issue when
  none exists (claimed as new, so it never overwrites what :func:`record_issue` wrote).
- ``TestDemo`` ``{kind: initial|repair, repo, issue_id, issue_description, old_test, old_exec_result,
  old_returncode, new_test, new_exec_result, new_returncode}``; text = the issue. ``initial``: no earlier script
  (issue -> working reproduction script); ``repair``: failing script and its output -> working script.
  Id from (namespace, repo, issue_id, kind, old_test, old_exec_result, new_test).
- ``PatchDemo`` ``{repo, issue_id, issue_description, old_patch, old_result: false, new_patch, new_result: true}``;
  text = the issue. Id from (namespace, repo, issue_id, old_patch, new_patch).
- ``(:TestDemo|PatchDemo)-[:OF_ISSUE]->(:RepairIssue)``.
- ``RepairInsight`` ``{role: tester|coder, text, ord, status: active|removed, seq}``; text = the insight. Id from
  (namespace, role, seq), ``seq`` counting every insight record of the role ever written. Active insights have
  ``ord`` 0..n-1 (their position in the numbered list). An EDIT never rewrites text in place: it writes a new
  record ``(:RepairInsight)-[:SUPERSEDES]->(:RepairInsight)`` pointing at the previous version, whose status
  becomes ``removed``; a REMOVE only sets the status. History is therefore the ``SUPERSEDES`` chain plus the
  removed records.

Insight batches run one at a time per (namespace, role) in this process (a lock each); across processes the new
records are written as claims (``new=``), so a racing batch fails with ``ConflictError`` instead of overwriting.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from mnemoflow.errors import ConflictError
from mnemoflow.memory.names import REGISTRY
from mnemoflow.memory.paging import all_nodes
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import NodeRecord, RelationshipRecord, stable_id
from mnemoflow.nodes.locks import keyed_lock

__all__ = [
    "ISSUE",
    "INSIGHT",
    "MAX_INSIGHTS",
    "PATCH_DEMO",
    "TEST_DEMO",
    "InsightEdit",
    "PatchRound",
    "TestAttempt",
    "apply_insight_edits",
    "derive_patch_demos",
    "derive_test_demos",
    "issue_node_id",
    "load_insights",
    "record_issue",
    "record_patch_rounds",
    "record_test_attempts",
]

ISSUE, TEST_DEMO, PATCH_DEMO, INSIGHT = "RepairIssue", "TestDemo", "PatchDemo", "RepairInsight"
OF_ISSUE, SUPERSEDES = "OF_ISSUE", "SUPERSEDES"
MAX_INSIGHTS = 15
"""At most this many active insights per role (the reference truncates after every batch)."""
REGISTRY.register_kind(ISSUE, description="ExpeRepair: an issue of a repository, its outcome and final patch.")
REGISTRY.register_kind(TEST_DEMO, description="ExpeRepair: a reproduction-script demonstration (initial or repair).")
REGISTRY.register_kind(PATCH_DEMO, description="ExpeRepair: a rejected patch and the correct patch that followed.")
REGISTRY.register_kind(INSIGHT, description="ExpeRepair: a natural-language insight for the tester or the coder.")
REGISTRY.register_relationship(OF_ISSUE)
REGISTRY.register_relationship(SUPERSEDES)

Role = Literal["tester", "coder"]


class TestAttempt(BaseModel):
    """One attempt of the Test Agent: its script, the execution and the judge's verdict."""

    __test__ = False  # not a pytest class
    model_config = ConfigDict(frozen=True)

    script: str
    output: str
    """stdout and stderr as one text."""
    returncode: int | None
    reproduces: bool
    """The judge's YES (True) or NO (False)."""
    analysis: str = ""
    advice: str = ""


class PatchRound(BaseModel):
    """One refinement round of the Patch Agent: the round's selected patch and the reviewer's verdict."""

    model_config = ConfigDict(frozen=True)

    patch: str
    correct: bool


class InsightEdit(BaseModel):
    """One operation proposed on a role's numbered insight list; ``number`` is 1-based, before the batch."""

    model_config = ConfigDict(frozen=True)

    operation: Literal["ADD", "EDIT", "REMOVE"]
    number: int | None = None
    text: str = ""


# -- ids and reads --------------------------------------------------------------------------------------------


def issue_node_id(namespace: str, repo: str, issue_id: str) -> str:
    return stable_id(namespace, ISSUE, repo, issue_id)


def _insight_id(namespace: str, role: str, seq: int) -> str:
    return stable_id(namespace, INSIGHT, role, seq)


# -- episodic memory ------------------------------------------------------------------------------------------


def derive_test_demos(attempts: Sequence[TestAttempt]) -> list[dict[str, Any]]:
    """Demos from an ordered attempt list (§1a): each attempt after a NO (or first) paired with the next YES."""
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
    """(rejected patch, correct patch) pairs: each rejected round paired with the next correct round (§1b).

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
        node_id = stable_id(
            namespace, TEST_DEMO, repo, issue_id, fields["kind"], fields["old_test"], fields["old_exec_result"],
            fields["new_test"],
        )  # fmt: skip
        demos.append(NodeRecord(id=node_id, namespace=namespace, kind=TEST_DEMO, properties=properties, text=issue_text))
    return await _write_demos(store, namespace, repo=repo, issue_id=issue_id, issue_text=issue_text, demos=demos)


async def record_patch_rounds(
    store: GraphStore, namespace: str, *, repo: str, issue_id: str, issue_text: str, rounds: list[PatchRound]
) -> list[str]:
    """Write a ``PatchDemo`` per (rejected round, next correct round) pair (idempotent); returns their ids."""
    demos = [
        NodeRecord(
            id=stable_id(namespace, PATCH_DEMO, repo, issue_id, old, new),
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
        raise ValueError(f"issue status {status!r} is not allowed: use 'resolved' or 'unresolved'")
    record = _issue_record(namespace, repo, issue_id, issue_text, status, final_patch, evidence)
    await store.upsert_nodes([record])
    return record.id


# -- semantic memory ------------------------------------------------------------------------------------------

def _check_role(role: str) -> None:
    if role not in ("tester", "coder"):
        raise ValueError(f"insight role {role!r} is not allowed: use 'tester' or 'coder'")


async def _insights(store: GraphStore, namespace: str, role: str) -> list[NodeRecord]:
    return [node for node in await all_nodes(store, namespace, INSIGHT) if node.properties.get("role") == role]


def _active(nodes: list[NodeRecord]) -> list[NodeRecord]:
    active = [node for node in nodes if node.properties.get("status") == "active"]
    return sorted(active, key=lambda node: (int(node.properties.get("ord", 0)), int(node.properties.get("seq", 0))))


async def load_insights(store: GraphStore, namespace: str, role: str) -> list[str]:
    """The role's active insights in list order, at most ``MAX_INSIGHTS``."""
    _check_role(role)
    return [str(node.properties["text"]) for node in _active(await _insights(store, namespace, role))][:MAX_INSIGHTS]


async def apply_insight_edits(store: GraphStore, namespace: str, role: str, edits: Sequence[InsightEdit]) -> dict[str, Any]:
    """Apply one batch of edits to the role's list, in order; numbers name the list as it was before the batch.

    ADD appends; EDIT writes a new version superseding the numbered insight; REMOVE retires it. An edit naming a
    number that is out of range or already removed in this batch, or lacking its text, is reported and changes
    nothing. Then only the first ``MAX_INSIGHTS`` stay active (the rest are retired and reported). All writes of
    the batch go in one ``upsert_nodes`` call (plus one for the ``SUPERSEDES`` links).

    Returns ``{"applied": [...], "ignored": [{"index", "operation", "number", "reason"}], "truncated": [texts],
    "insights": [active texts in order]}``.
    """
    _check_role(role)
    async with keyed_lock("experepair-insights", namespace, role):
        return await _apply(store, namespace, role, list(edits))


async def _apply(store: GraphStore, namespace: str, role: str, edits: list[InsightEdit]) -> dict[str, Any]:
    every = await _insights(store, namespace, role)
    next_seq = max((int(node.properties.get("seq", 0)) for node in every), default=-1) + 1
    before = _active(every)
    # the working list: slot per original number (None once removed), plus appended ADDs
    current: list[NodeRecord | None] = list(before)
    added: list[NodeRecord] = []
    changed: dict[str, NodeRecord] = {}
    created: list[str] = []
    links: list[RelationshipRecord] = []
    applied: list[dict[str, Any]] = []
    ignored: list[dict[str, Any]] = []

    def new_record(text: str) -> NodeRecord:
        nonlocal next_seq
        node = NodeRecord(
            id=_insight_id(namespace, role, next_seq),
            namespace=namespace,
            kind=INSIGHT,
            properties={"role": role, "text": text, "ord": 0, "status": "active", "seq": next_seq},
            text=text,
        )
        next_seq += 1
        created.append(node.id)
        return node

    def retire(node: NodeRecord) -> None:
        changed[node.id] = node.model_copy(update={"properties": {**node.properties, "status": "removed"}})

    for index, edit in enumerate(edits):
        report = {"index": index, "operation": edit.operation, "number": edit.number}
        text = edit.text.strip()
        if edit.operation in ("ADD", "EDIT") and not text:
            ignored.append({**report, "reason": "no text"})
            continue
        if edit.operation == "ADD":
            added.append(new_record(text))
            applied.append(report)
            continue
        slot = edit.number - 1 if edit.number is not None else -1
        target = current[slot] if 0 <= slot < len(current) else None
        if target is None:
            reason = "no number" if edit.number is None else f"no insight {edit.number} in the list of {len(before)}"
            if 0 <= slot < len(current):
                reason = f"insight {edit.number} was already removed in this batch"
            ignored.append({**report, "reason": reason})
            continue
        retire(target)
        if edit.operation == "REMOVE":
            current[slot] = None
        else:
            replacement = new_record(text)
            links.append(RelationshipRecord(namespace=namespace, type=SUPERSEDES, source_id=replacement.id, target_id=target.id))
            current[slot] = replacement
        applied.append(report)

    final = [node for node in current if node is not None] + added
    truncated = final[MAX_INSIGHTS:]
    for node in truncated:
        if node.id in created:  # never stored: keep it as a retired record for the history
            changed[node.id] = node.model_copy(update={"properties": {**node.properties, "status": "removed"}})
        else:
            retire(node)
    for position, node in enumerate(final[:MAX_INSIGHTS]):
        base = changed.get(node.id, node)
        if node.id in created or base.properties.get("ord") != position or node.id in changed:
            changed[node.id] = base.model_copy(update={"properties": {**base.properties, "ord": position}})
    if changed:
        await store.upsert_nodes(list(changed.values()), new=created)
    if links:
        await store.upsert_relationships(links)
    return {
        "applied": applied,
        "ignored": ignored,
        "truncated": [str(node.properties["text"]) for node in truncated],
        "insights": [str(node.properties["text"]) for node in final[:MAX_INSIGHTS]],
    }
