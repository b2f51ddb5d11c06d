"""The LangGraph checkpointer of a run, on the same backend as its memory store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiosqlite
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from mnemoflow.memory.neo4j.checkpoints import Neo4jCheckpointSaver
from mnemoflow.settings import Settings

__all__ = ["open_checkpointer"]


@asynccontextmanager
async def open_checkpointer(settings: Settings) -> AsyncIterator[BaseCheckpointSaver[str]]:
    """A set-up checkpointer for ``settings.store.backend``, closed on exit.

    sqlite: an ``AsyncSqliteSaver`` on ``checkpoints.db`` next to the memory file; neo4j: a
    :class:`~mnemoflow.memory.neo4j.checkpoints.Neo4jCheckpointSaver` on the ``NEO4J_*`` server.
    """
    if settings.store.backend == "sqlite":
        path = settings.store.sqlite_path.with_name("checkpoints.db")
        path.parent.mkdir(parents=True, exist_ok=True)
        async with aiosqlite.connect(path) as connection:
            sqlite_saver = AsyncSqliteSaver(connection)
            await sqlite_saver.setup()
            yield sqlite_saver
        return
    neo4j = settings.neo4j
    password = neo4j.password.get_secret_value() if neo4j.password is not None else None
    async with Neo4jCheckpointSaver(
        neo4j.uri,
        auth=(neo4j.user, password) if password else None,
        database=neo4j.database,
        max_transaction_retry_time=neo4j.max_transaction_retry_time,
        connection_timeout=neo4j.connection_timeout,
    ) as neo4j_saver:
        yield neo4j_saver
