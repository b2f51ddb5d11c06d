"""Every Cypher statement of the LangGraph checkpoint saver, as named constants and functions.

Values are always ``$parameters``. Metadata filter keys come from callers, so they are never spliced in:
they travel as strings inside ``$metadata_entries`` and ``$absent_paths`` (see
:mod:`mnemoflow.memory.neo4j.checkpoints`). The only text assembled here is a choice among fixed ``WHERE``
fragments, so a lookup by thread keeps using the indexes.

Model, mirroring LangGraph's SQLite saver (a table per kind, no relationships):

``(:MfCheckpoint)``
    ``thread_id``, ``checkpoint_ns``, ``checkpoint_id`` (the key), ``parent_checkpoint_id``, ``type`` and
    ``checkpoint`` (the serialized checkpoint, a byte array), ``metadata`` (JSON text),
    ``metadata_entries``/``metadata_paths`` (for filtering), ``run_id``.
``(:MfCheckpointWrite)``
    ``thread_id``, ``checkpoint_ns``, ``checkpoint_id``, ``task_id``, ``idx`` (the key), ``task_path``,
    ``channel``, ``type`` and ``value`` (a byte array).
"""

from __future__ import annotations

__all__ = [
    "CHECKPOINT_LABEL",
    "COPY_THREAD_CHECKPOINTS",
    "COPY_THREAD_WRITES",
    "DELETE_FOR_RUNS",
    "DELETE_THREADS",
    "INSERT_WRITES",
    "PRUNE_KEEP_LATEST",
    "PRUNE_OLDER_THAN",
    "REPLACE_WRITES",
    "UPSERT_CHECKPOINT",
    "WRITE_LABEL",
    "schema_statements",
    "select_checkpoints",
]

CHECKPOINT_LABEL = "MfCheckpoint"
WRITE_LABEL = "MfCheckpointWrite"

_CHECKPOINT_KEY = "{thread_id: c.thread_id, checkpoint_ns: c.checkpoint_ns, checkpoint_id: c.checkpoint_id}"


def schema_statements() -> list[str]:
    """Constraints and indexes of the checkpoint saver, each idempotent."""
    return [
        f"CREATE CONSTRAINT mf_checkpoint_key IF NOT EXISTS FOR (c:{CHECKPOINT_LABEL}) "
        "REQUIRE (c.thread_id, c.checkpoint_ns, c.checkpoint_id) IS UNIQUE",
        f"CREATE CONSTRAINT mf_checkpoint_write_key IF NOT EXISTS FOR (w:{WRITE_LABEL}) "
        "REQUIRE (w.thread_id, w.checkpoint_ns, w.checkpoint_id, w.task_id, w.idx) IS UNIQUE",
        f"CREATE INDEX mf_checkpoint_thread IF NOT EXISTS FOR (c:{CHECKPOINT_LABEL}) ON (c.thread_id)",
        f"CREATE INDEX mf_checkpoint_run IF NOT EXISTS FOR (c:{CHECKPOINT_LABEL}) ON (c.run_id)",
        f"CREATE INDEX mf_checkpoint_write_thread IF NOT EXISTS FOR (w:{WRITE_LABEL}) ON (w.thread_id)",
        f"CREATE INDEX mf_checkpoint_write_owner IF NOT EXISTS FOR (w:{WRITE_LABEL}) "
        "ON (w.thread_id, w.checkpoint_ns, w.checkpoint_id)",
    ]


UPSERT_CHECKPOINT = f"""
MERGE (c:{CHECKPOINT_LABEL} {{thread_id: $thread_id, checkpoint_ns: $checkpoint_ns, checkpoint_id: $checkpoint_id}})
SET c += $values
"""
"""Insert or replace one checkpoint; ``$values`` holds every non-key property (``null`` removes one)."""

INSERT_WRITES = f"""
UNWIND $rows AS row
MERGE (w:{WRITE_LABEL} {{thread_id: $thread_id, checkpoint_ns: $checkpoint_ns, checkpoint_id: $checkpoint_id,
                        task_id: $task_id, idx: row.idx}})
ON CREATE SET w += row.values
"""
"""Store a task's writes, keeping any already stored under the same (task_id, idx)."""

REPLACE_WRITES = f"""
UNWIND $rows AS row
MERGE (w:{WRITE_LABEL} {{thread_id: $thread_id, checkpoint_ns: $checkpoint_ns, checkpoint_id: $checkpoint_id,
                        task_id: $task_id, idx: row.idx}})
SET w += row.values
"""
"""Store a task's special writes (errors, interrupts...: negative idx), overwriting earlier ones."""


def select_checkpoints(
    *,
    thread: bool,
    namespace: bool,
    checkpoint_id: bool,
    before: bool,
    after: bool,
    metadata: bool,
) -> str:
    """Checkpoints newest first, at most ``$limit``, each with its pending writes.

    Each flag adds a fixed condition on its parameter: ``$thread_id``, ``$checkpoint_ns``,
    ``$checkpoint_id``, ``$before`` (ids strictly lower), ``$after`` (a keyset cursor: the
    ``{checkpoint_id, thread_id, checkpoint_ns}`` of the last row of the previous page), and ``metadata``
    (every string of ``$metadata_entries`` is among the node's, no path of ``$absent_paths`` is).
    The order (``checkpoint_id``, then ``thread_id``, then ``checkpoint_ns``, all descending) is total,
    so pages neither skip nor repeat rows.
    """
    conditions = [
        condition
        for wanted, condition in (
            (thread, "c.thread_id = $thread_id"),
            (namespace, "c.checkpoint_ns = $checkpoint_ns"),
            (checkpoint_id, "c.checkpoint_id = $checkpoint_id"),
            (before, "c.checkpoint_id < $before"),
            (
                after,
                "(c.checkpoint_id < $after.checkpoint_id OR (c.checkpoint_id = $after.checkpoint_id AND "
                "(c.thread_id < $after.thread_id OR (c.thread_id = $after.thread_id AND "
                "c.checkpoint_ns < $after.checkpoint_ns))))",
            ),
            (
                metadata,
                "all(entry IN $metadata_entries WHERE entry IN c.metadata_entries) "
                "AND none(path IN $absent_paths WHERE path IN c.metadata_paths)",
            ),
        )
        if wanted
    ]
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    return f"""
    MATCH (c:{CHECKPOINT_LABEL})
    {where}
    WITH c ORDER BY c.checkpoint_id DESC, c.thread_id DESC, c.checkpoint_ns DESC
    LIMIT $limit
    CALL (c) {{
        OPTIONAL MATCH (w:{WRITE_LABEL} {_CHECKPOINT_KEY})
        RETURN collect(w {{.task_id, .task_path, .idx, .channel, .type, .value}}) AS writes
    }}
    RETURN c {{.thread_id, .checkpoint_ns, .checkpoint_id, .parent_checkpoint_id, .type, .checkpoint, .metadata}}
           AS checkpoint,
           writes
    """


DELETE_THREADS = f"""
UNWIND $thread_ids AS thread_id
CALL (thread_id) {{
    MATCH (w:{WRITE_LABEL} {{thread_id: thread_id}})
    DELETE w
}}
CALL (thread_id) {{
    MATCH (c:{CHECKPOINT_LABEL} {{thread_id: thread_id}})
    DELETE c
}}
"""
"""Delete every checkpoint and write of the threads ``$thread_ids``."""

DELETE_FOR_RUNS = f"""
UNWIND $run_ids AS run_id
MATCH (c:{CHECKPOINT_LABEL} {{run_id: run_id}})
CALL (c) {{
    MATCH (w:{WRITE_LABEL} {_CHECKPOINT_KEY})
    DELETE w
}}
DELETE c
"""
"""Delete the checkpoints whose metadata ``run_id`` is in ``$run_ids``, with their writes."""

COPY_THREAD_CHECKPOINTS = f"""
MATCH (c:{CHECKPOINT_LABEL} {{thread_id: $source_thread_id}})
MERGE (t:{CHECKPOINT_LABEL} {{thread_id: $target_thread_id, checkpoint_ns: c.checkpoint_ns,
                             checkpoint_id: c.checkpoint_id}})
SET t = c {{.*, thread_id: $target_thread_id}}
"""
"""Copy every checkpoint of ``$source_thread_id`` to ``$target_thread_id``, replacing same-key ones."""

COPY_THREAD_WRITES = f"""
MATCH (w:{WRITE_LABEL} {{thread_id: $source_thread_id}})
MERGE (t:{WRITE_LABEL} {{thread_id: $target_thread_id, checkpoint_ns: w.checkpoint_ns,
                        checkpoint_id: w.checkpoint_id, task_id: w.task_id, idx: w.idx}})
SET t = w {{.*, thread_id: $target_thread_id}}
"""
"""Copy every write of ``$source_thread_id`` to ``$target_thread_id``, replacing same-key ones."""

PRUNE_KEEP_LATEST = f"""
UNWIND $thread_ids AS thread_id
MATCH (c:{CHECKPOINT_LABEL} {{thread_id: thread_id}})
WITH thread_id, c.checkpoint_ns AS checkpoint_ns, max(c.checkpoint_id) AS latest
CALL (thread_id, checkpoint_ns, latest) {{
    MATCH (w:{WRITE_LABEL} {{thread_id: thread_id, checkpoint_ns: checkpoint_ns}})
    WHERE w.checkpoint_id < latest
    DELETE w
}}
CALL (thread_id, checkpoint_ns, latest) {{
    MATCH (old:{CHECKPOINT_LABEL} {{thread_id: thread_id, checkpoint_ns: checkpoint_ns}})
    WHERE old.checkpoint_id < latest
    DELETE old
}}
"""
"""In each namespace of the threads ``$thread_ids``, delete every checkpoint and write older than the
newest checkpoint."""

PRUNE_OLDER_THAN = f"""
MATCH (c:{CHECKPOINT_LABEL})
WITH c.thread_id AS thread_id, c.checkpoint_ns AS checkpoint_ns, max(c.checkpoint_id) AS latest
WITH thread_id, checkpoint_ns, CASE WHEN latest < $cutoff THEN latest ELSE $cutoff END AS bound
CALL (thread_id, checkpoint_ns, bound) {{
    MATCH (w:{WRITE_LABEL} {{thread_id: thread_id, checkpoint_ns: checkpoint_ns}})
    WHERE w.checkpoint_id < bound
    DELETE w
}}
CALL (thread_id, checkpoint_ns, bound) {{
    MATCH (old:{CHECKPOINT_LABEL} {{thread_id: thread_id, checkpoint_ns: checkpoint_ns}})
    WHERE old.checkpoint_id < bound
    DELETE old
    RETURN count(old) AS deleted
}}
RETURN coalesce(sum(deleted), 0) AS deleted
"""
"""In every namespace of every thread, delete the checkpoints (and their writes) whose id sorts below
``$cutoff``, except the namespace's newest checkpoint; returns how many checkpoints were deleted."""
