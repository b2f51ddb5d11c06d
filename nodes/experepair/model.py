"""What ExpeRepair keeps in the store: episodic demonstrations and semantic insights, around the issues.

The contract between the repair graph, demo retrieval and anything that inspects them. Every id is a stable id
(a hash of the namespace, the kind and the parts named below), so re-recording the same issue, or a retried
step, never duplicates a record.

Episodic memory (concrete repairs):

- ``RepairIssue``: ``{repo, issue_id, status: resolved|unresolved, final_patch, evidence}``; text = the issue.
  ``evidence`` holds what the outcome rests on: whether a script reproduced the issue, that script and its output
  on the unfixed code, the rounds run, the last review, and for a resolved issue the reproduction's output with
  the final patch and whether it passed. Id from (namespace, repo, issue_id). Recording demos of an issue first
  creates a bare ``unresolved`` issue when none exists (claimed as new, so it never overwrites what the outcome
  wrote).
- ``TestDemo``: ``{kind: initial|repair, repo, issue_id, issue_description, old_test, old_exec_result,
  old_returncode, new_test, new_exec_result, new_returncode}``; text = the issue. ``initial``: no earlier script
  (issue -> working reproduction script); ``repair``: failing script and its output -> working script.
  Id from (namespace, repo, issue_id, kind, old_test, old_exec_result, new_test).
- ``PatchDemo``: ``{repo, issue_id, issue_description, old_patch, old_result: false, new_patch, new_result:
  true}``; text = the issue. Id from (namespace, repo, issue_id, old_patch, new_patch).
- ``(:TestDemo|PatchDemo)-[:OF_ISSUE]->(:RepairIssue)``.

Demos are only ever retrieved for other issues of the same ``repo``.

Semantic memory (lessons, per role):

- ``RepairInsight``: ``{role: tester|coder, text, ord, status: active|removed, seq}``; text = the insight.
  Id from (namespace, role, seq), ``seq`` counting every insight record of the role ever written. Active
  insights have ``ord`` 0..n-1 (their position in the numbered list), at most :data:`MAX_INSIGHTS` per role.
  An EDIT never rewrites text in place: it writes a new record ``(:RepairInsight)-[:SUPERSEDES]->(:RepairInsight)``
  pointing at the previous version, whose status becomes ``removed``; a REMOVE only sets the status. History is
  therefore the ``SUPERSEDES`` chain plus the removed records.

When memory is read and written (the run's ``memory``, ``episodic``, ``semantic`` and ``phase``; the paper's
seed and inference phases and its ablations):

=====================  ============================  ==========================================
run                    reads (shown in prompts)      writes (after the issue)
=====================  ============================  ==========================================
inference (default)    demos (R1-R3) and insights    demos and insight edits
seed                   nothing: static prompts       demos and insight edits
episodic: false        insights only                 insight edits only
semantic: false        demos only                    demos only
memory: false          nothing                       nothing (only the issue's outcome)
=====================  ============================  ==========================================

The seed phase builds memory from a seed set of issues (the paper's initial phase) with the prompts an empty
memory gives; later issues run in the inference phase. The switches combine: ``phase: seed`` with ``semantic:
false`` writes only demos. The conditions are ``retrieval.reads_episodic``, ``episodes.writes_episodic``,
``insights.reads_semantic`` and ``insights.writes_semantic``.

What a repair used (written by ``experepair.record`` from the run's state, for whatever was shown, whichever
switches were set; nothing when nothing was shown):

- ``(:RepairIssue)-[:USED_DEMO {stage, rank, score, uses}]->(:TestDemo|PatchDemo)``: a demonstration put into
  a prompt. ``stage`` is the retrieval phase (``test_initial`` R1, ``test_retry`` R2, ``patch_refine`` R3),
  ``rank`` its place in that retrieval's result (1: the one the prompts use), ``score`` its weighted BM25 score
  there, ``uses`` how many retrievals put it into prompts (R2 may return the same pair on every retry; rank and
  score are those of its first use). Keyed by ``stage``: one link per (issue, demo, stage).
- ``(:RepairIssue)-[:USED_INSIGHT {role, position}]->(:RepairInsight)``: an insight shown in the ``role``'s
  system prompt, ``position`` its number in the list shown (from 1). One link per (issue, insight).

Recording the same run again writes the same links (same ids, same properties). A later run of the same issue
adds its own and updates those it shares; links of an earlier run to memories it did not use stay. A memory
deleted between its use and the record gets no link.

Insight batches run one at a time per (namespace, role) in this process (a lock each); across processes the new
records are written as claims (``new=``), so a racing batch fails with ``ConflictError`` instead of overwriting.
"""

from __future__ import annotations

from typing import Literal

from mnemoflow.memory.names import REGISTRY
from mnemoflow.memory.records import stable_id

__all__ = [
    "INSIGHT",
    "ISSUE",
    "MAX_INSIGHTS",
    "OF_ISSUE",
    "PATCH_DEMO",
    "ROLES",
    "SUPERSEDES",
    "TEST_DEMO",
    "USED_DEMO",
    "USED_INSIGHT",
    "Role",
    "insight_id",
    "issue_node_id",
    "patch_demo_id",
    "test_demo_id",
]

ISSUE, TEST_DEMO, PATCH_DEMO, INSIGHT = "RepairIssue", "TestDemo", "PatchDemo", "RepairInsight"
OF_ISSUE, SUPERSEDES, USED_DEMO, USED_INSIGHT = "OF_ISSUE", "SUPERSEDES", "USED_DEMO", "USED_INSIGHT"
REGISTRY.register_kind(ISSUE, description="ExpeRepair: an issue of a repository, its outcome and final patch.")
REGISTRY.register_kind(TEST_DEMO, description="ExpeRepair: a reproduction-script demonstration (initial or repair).")
REGISTRY.register_kind(PATCH_DEMO, description="ExpeRepair: a rejected patch and the correct patch that followed.")
REGISTRY.register_kind(INSIGHT, description="ExpeRepair: a natural-language insight for the tester or the coder.")
REGISTRY.register_relationship(OF_ISSUE)
REGISTRY.register_relationship(SUPERSEDES)
REGISTRY.register_relationship(USED_DEMO)
REGISTRY.register_relationship(USED_INSIGHT)

Role = Literal["tester", "coder"]
"""The agents that keep insights: the Test Agent and the Patch Agent."""
ROLES: tuple[Role, ...] = ("tester", "coder")
MAX_INSIGHTS = 15
"""At most this many active insights per role, and so in a system prompt (the reference truncates after every
batch)."""


def issue_node_id(namespace: str, repo: str, issue_id: str) -> str:
    """The record of issue ``issue_id`` of ``repo``."""
    return stable_id(namespace, ISSUE, repo, issue_id)


def test_demo_id(
    namespace: str, repo: str, issue_id: str, kind: str, old_test: str, old_exec_result: str, new_test: str
) -> str:
    """The test demo of an issue turning ``old_test`` (empty for ``initial``) and its output into ``new_test``."""
    return stable_id(namespace, TEST_DEMO, repo, issue_id, kind, old_test, old_exec_result, new_test)


def patch_demo_id(namespace: str, repo: str, issue_id: str, old_patch: str, new_patch: str) -> str:
    """The patch demo of an issue turning the rejected ``old_patch`` into the correct ``new_patch``."""
    return stable_id(namespace, PATCH_DEMO, repo, issue_id, old_patch, new_patch)


def insight_id(namespace: str, role: str, seq: int) -> str:
    """The ``seq``-th insight record (from 0) ever written for ``role``."""
    return stable_id(namespace, INSIGHT, role, seq)
