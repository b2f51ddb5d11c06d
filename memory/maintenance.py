"""Housekeeping of stored runs: prune old checkpoints, whatever backend holds them.

Expired memory records are the store's own business: :meth:`~mnemoflow.memory.protocol.GraphStore.delete_expired`.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from mnemoflow.errors import ConfigError
from mnemoflow.memory.checkpoint_ids import checkpoint_id_floor
from mnemoflow.memory.neo4j.checkpoints import Neo4jCheckpointSaver
from mnemoflow.memory.sqlite.rows import sqlite_error

__all__ = ["prune_checkpoints"]

# A checkpoint or write goes when its id is below both the cutoff and the newest id of its (thread, namespace):
# the newest always stays, and so do the writes pending on it. Writes go first, while the newest is still there.
_SQLITE_PRUNE = (
    """
    DELETE FROM writes
    WHERE checkpoint_id < :cutoff
      AND checkpoint_id < (SELECT max(c.checkpoint_id) FROM checkpoints c
                           WHERE c.thread_id = writes.thread_id AND c.checkpoint_ns = writes.checkpoint_ns)
    """,
    """
    DELETE FROM checkpoints
    WHERE checkpoint_id < :cutoff
      AND checkpoint_id < (SELECT max(c.checkpoint_id) FROM checkpoints c
                           WHERE c.thread_id = checkpoints.thread_id AND c.checkpoint_ns = checkpoints.checkpoint_ns)
    """,
)


async def prune_checkpoints(checkpointer: BaseCheckpointSaver[Any], *, older_than: datetime) -> int:
    """Delete every checkpoint made before ``older_than``, with its pending writes, in one transaction.

    The newest checkpoint of each (thread, namespace) always stays, whatever its age, with its writes, so
    every thread can still be read and resumed; its history before the cutoff is gone. ``older_than`` must be
    timezone-aware. Ages come from the checkpoint ids (see :mod:`mnemoflow.memory.checkpoint_ids`). Don't prune threads
    of graphs that use a ``DeltaChannel``: its value is replayed from the ancestors.

    Supports ``AsyncSqliteSaver`` and :class:`~mnemoflow.memory.neo4j.checkpoints.Neo4jCheckpointSaver`; raises
    ``ConfigError`` for any other saver. Returns how many checkpoints were deleted.
    """
    if isinstance(checkpointer, Neo4jCheckpointSaver):
        return await checkpointer.aprune_older_than(older_than)
    if isinstance(checkpointer, AsyncSqliteSaver):
        return await _prune_sqlite(checkpointer, checkpoint_id_floor(older_than))
    kind = type(checkpointer)
    raise ConfigError(
        f"cannot prune checkpoints of a {kind.__module__}.{kind.__qualname__}: "
        "prune_checkpoints supports AsyncSqliteSaver and Neo4jCheckpointSaver"
    )


async def _prune_sqlite(saver: AsyncSqliteSaver, cutoff: str) -> int:
    await saver.setup()
    connection = saver.conn
    try:
        async with saver.lock, connection.cursor() as cursor:
            # the saver commits after each of its own operations; BEGIN makes this one transaction even in autocommit
            if not connection.in_transaction:
                await cursor.execute("BEGIN IMMEDIATE")
            try:
                await cursor.execute(_SQLITE_PRUNE[0], {"cutoff": cutoff})
                await cursor.execute(_SQLITE_PRUNE[1], {"cutoff": cutoff})
                deleted = cursor.rowcount
                await connection.commit()
            except BaseException:
                await connection.rollback()
                raise
    except sqlite3.Error as exc:
        raise sqlite_error(exc, "SQLite checkpointer: pruning failed, nothing deleted") from exc
    return deleted
