"""A LangGraph checkpoint saver on Neo4j: official async driver, managed transactions.

Semantics follow LangGraph's ``AsyncSqliteSaver``: each checkpoint is one serialized blob plus its metadata
as JSON, keyed by (thread_id, checkpoint_ns, checkpoint_id); writes are keyed by that plus (task_id, idx),
a task's writes are kept on a retry unless they are all special (errors, interrupts...: negative idx), in
which case they are overwritten. Lists are newest first (by checkpoint id).

Metadata filters of :meth:`Neo4jCheckpointSaver.alist` compare each key (a dotted key reaches into nested
objects) like the SQLite saver's ``json_extract``: booleans equal 0/1, ``1 == 1.0``, ``None`` matches a
missing or null value. The keys never reach Cypher text: each stored checkpoint carries the JSON strings
``[path, value]`` of its metadata, and the filter is the same strings, sent as a parameter.

Retries of transient faults belong to the driver's managed transactions, bounded by
``max_transaction_retry_time``. The saver is async-only.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, TypeVar, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    PendingWrite,
    get_checkpoint_id,
    get_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from neo4j import AsyncManagedTransaction

from mnemoflow.errors import InvalidQueryError, UnsupportedError
from mnemoflow.memory.checkpoint_ids import checkpoint_id_floor
from mnemoflow.memory.neo4j import checkpoint_queries as queries
from mnemoflow.memory.neo4j.connection import Neo4jConnection

__all__ = ["Neo4jCheckpointSaver", "metadata_filter_parameters", "metadata_index"]

T = TypeVar("T")
PAGE_SIZE = 100
"""Checkpoints fetched per read while :meth:`Neo4jCheckpointSaver.alist` iterates."""
_ASYNC_ONLY = "Neo4jCheckpointSaver is async-only: use ainvoke/astream (and aget_state...), not {}"


def _normalized(value: Any) -> Any:
    """A metadata value as the filter compares it: booleans as 0/1, integral floats as ints."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _entry(path: str, value: Any) -> str:
    return json.dumps([path, _normalized(value)], sort_keys=True, separators=(",", ":"), default=str)


def metadata_index(metadata: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The ``[path, value]`` strings of metadata, and the paths that hold a non-null value.

    Nested objects are indexed whole and by each dotted path into them, so ``{"parents": {"": "x"}}``
    matches a filter on ``parents`` and one on ``parents.``.
    """
    entries: list[str] = []
    paths: list[str] = []

    def walk(prefix: str, values: Mapping[str, Any]) -> None:
        for key, value in values.items():
            path = f"{prefix}{key}"
            if value is None:
                continue
            entries.append(_entry(path, value))
            paths.append(path)
            if isinstance(value, Mapping):
                walk(f"{path}.", value)

    walk("", metadata)
    return sorted(set(entries)), sorted(set(paths))


def metadata_filter_parameters(filter: Mapping[str, Any]) -> dict[str, list[str]]:
    """``$metadata_entries`` (each must be stored) and ``$absent_paths`` (none may hold a value)."""
    return {
        "metadata_entries": [_entry(key, value) for key, value in filter.items() if value is not None],
        "absent_paths": [key for key, value in filter.items() if value is None],
    }


class Neo4jCheckpointSaver(BaseCheckpointSaver[str]):
    """A LangGraph checkpointer on a Neo4j 5.26+ server (nodes ``MfCheckpoint`` and ``MfCheckpointWrite``).

    Use it as an async context manager, or call :meth:`setup` (also done lazily) and :meth:`close`.
    """

    def __init__(
        self,
        uri: str,
        *,
        auth: tuple[str, str] | None = None,
        database: str = "neo4j",
        max_transaction_retry_time: float = 30.0,
        connection_timeout: float = 10.0,
        serde: SerializerProtocol | None = None,
    ) -> None:
        super().__init__(serde=serde)
        self.uri = uri
        self._connection = Neo4jConnection(
            uri,
            auth=auth,
            database=database,
            max_transaction_retry_time=max_transaction_retry_time,
            connection_timeout=connection_timeout,
        )
        self._is_setup = False
        self._setup_lock = asyncio.Lock()

    async def __aenter__(self) -> Neo4jCheckpointSaver:
        try:
            await self.setup()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- plumbing ---------------------------------------------------------------------------------------

    async def _query(
        self, statement: str, routing: Literal["r", "w"] = "r", /, **parameters: Any
    ) -> list[dict[str, Any]]:
        """One statement: a write in its own managed transaction (retried by the driver), a read as one auto-commit
        query, not retried (see :mod:`mnemoflow.memory.neo4j.connection`)."""
        await self.setup()
        return await self._connection.query(statement, routing, **parameters)

    async def _write(self, work: Callable[[AsyncManagedTransaction], Awaitable[T]]) -> T:
        """Several statements in one managed write transaction (all or nothing, retried by the driver)."""
        await self.setup()
        return await self._connection.write(work)

    # -- lifecycle --------------------------------------------------------------------------------------

    async def setup(self) -> None:
        """Check the server answers and create the constraints and indexes; once per saver."""
        async with self._setup_lock:
            if self._is_setup:
                return
            await self._connection.verify()
            for statement in queries.schema_statements():
                await self._connection.query(statement, "w")
            self._is_setup = True

    async def close(self) -> None:
        await self._connection.close()

    # -- reads ------------------------------------------------------------------------------------------

    def _tuple(self, row: Mapping[str, Any], config: RunnableConfig | None = None) -> CheckpointTuple:
        stored = row["checkpoint"]
        thread_id, checkpoint_ns = stored["thread_id"], stored["checkpoint_ns"]
        writes = sorted(row["writes"], key=lambda w: writes_sort_key(w["task_path"] or "", w["task_id"], w["idx"]))
        pending: list[PendingWrite] = [
            (w["task_id"], w["channel"], self.serde.loads_typed((w["type"], bytes(w["value"] or b""))))
            for w in writes
        ]
        parent_id = stored["parent_checkpoint_id"]
        return CheckpointTuple(
            config
            or {
                "configurable": {
                    "thread_id": thread_id,
                    "checkpoint_ns": checkpoint_ns,
                    "checkpoint_id": stored["checkpoint_id"],
                }
            },
            cast(Checkpoint, self.serde.loads_typed((stored["type"], bytes(stored["checkpoint"])))),
            cast(CheckpointMetadata, json.loads(stored["metadata"]) if stored["metadata"] is not None else {}),
            (
                {"configurable": {"thread_id": thread_id, "checkpoint_ns": checkpoint_ns, "checkpoint_id": parent_id}}
                if parent_id
                else None
            ),
            pending,
        )

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint named by ``config`` (its ``checkpoint_id``, else the thread's newest), with its writes."""
        configurable = config["configurable"]
        checkpoint_id = get_checkpoint_id(config)
        rows = await self._query(
            queries.select_checkpoints(
                thread=True, namespace=True, checkpoint_id=bool(checkpoint_id), before=False, after=False, metadata=False
            ),
            thread_id=str(configurable["thread_id"]),
            checkpoint_ns=configurable.get("checkpoint_ns", ""),
            checkpoint_id=checkpoint_id,
            limit=1,
        )
        if not rows:
            return None
        return self._tuple(rows[0], config if checkpoint_id else None)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Checkpoints newest first, of the config's thread (and namespace, and id, when given).

        ``filter`` keeps those whose metadata matches every key; ``before`` those with a lower id;
        ``limit`` caps the count. Rows are read a page at a time.
        """
        configurable = config["configurable"] if config is not None else {}
        thread_id = configurable.get("thread_id")
        checkpoint_ns = configurable.get("checkpoint_ns")
        checkpoint_id = get_checkpoint_id(config) if config is not None else None
        before_id = get_checkpoint_id(before) if before is not None else None
        parameters: dict[str, Any] = {
            "thread_id": None if thread_id is None else str(thread_id),
            "checkpoint_ns": checkpoint_ns,
            "checkpoint_id": checkpoint_id,
            "before": before_id,
            **metadata_filter_parameters(filter or {}),
        }
        flags = {
            "thread": thread_id is not None,
            "namespace": checkpoint_ns is not None,
            "checkpoint_id": bool(checkpoint_id),
            "before": before is not None,
            "metadata": bool(filter),
        }
        remaining = limit
        after: dict[str, str] | None = None
        while remaining is None or remaining > 0:
            page = PAGE_SIZE if remaining is None else min(PAGE_SIZE, remaining)
            rows = await self._query(
                queries.select_checkpoints(**flags, after=after is not None), after=after, limit=page, **parameters
            )
            for row in rows:
                yield self._tuple(row)
            if len(rows) < page:
                return
            if remaining is not None:
                remaining -= len(rows)
            last = rows[-1]["checkpoint"]
            after = {key: last[key] for key in ("checkpoint_id", "thread_id", "checkpoint_ns")}

    # -- writes -----------------------------------------------------------------------------------------

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store a checkpoint (replacing one with the same key); its parent is the config's checkpoint_id."""
        configurable = config["configurable"]
        thread_id = str(configurable["thread_id"])
        checkpoint_ns = configurable.get("checkpoint_ns", "")
        type_, blob = self.serde.dumps_typed(checkpoint)
        full_metadata = cast(dict[str, Any], get_checkpoint_metadata(config, metadata))
        entries, paths = metadata_index(full_metadata)
        run_id = full_metadata.get("run_id")
        await self._query(
            queries.UPSERT_CHECKPOINT,
            "w",
            thread_id=thread_id,
            checkpoint_ns=checkpoint_ns,
            checkpoint_id=checkpoint["id"],
            values={
                "parent_checkpoint_id": configurable.get("checkpoint_id"),
                "type": type_,
                "checkpoint": blob,
                "metadata": json.dumps(full_metadata, ensure_ascii=False),
                "metadata_entries": entries,
                "metadata_paths": paths,
                "run_id": None if run_id is None else str(run_id),
            },
        )
        return {"configurable": {"thread_id": thread_id, "checkpoint_ns": checkpoint_ns, "checkpoint_id": checkpoint["id"]}}

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store a task's writes for the config's checkpoint; see the module docstring for overwrites."""
        if not writes:
            return
        configurable = config["configurable"]
        rows = []
        for idx, (channel, value) in enumerate(writes):
            type_, blob = self.serde.dumps_typed(value)
            rows.append(
                {
                    "idx": WRITES_IDX_MAP.get(channel, idx),
                    "values": {"task_path": task_path, "channel": channel, "type": type_, "value": blob},
                }
            )
        replace = all(channel in WRITES_IDX_MAP for channel, _ in writes)
        await self._query(
            queries.REPLACE_WRITES if replace else queries.INSERT_WRITES,
            "w",
            thread_id=str(configurable["thread_id"]),
            checkpoint_ns=str(configurable.get("checkpoint_ns", "")),
            checkpoint_id=str(configurable["checkpoint_id"]),
            task_id=task_id,
            rows=sorted(rows, key=lambda row: int(row["idx"])),
        )

    async def adelete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint and write of a thread, in all namespaces."""
        await self._query(queries.DELETE_THREADS, "w", thread_ids=[str(thread_id)])

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints whose metadata ``run_id`` is one of ``run_ids``, with their writes."""
        if run_ids:
            await self._query(queries.DELETE_FOR_RUNS, "w", run_ids=sorted({str(run_id) for run_id in run_ids}))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint and write of a thread to another, in one transaction.

        Checkpoints keep their ids (and so their order and parents); same-key ones on the target are replaced.
        """
        parameters = {"source_thread_id": str(source_thread_id), "target_thread_id": str(target_thread_id)}

        async def work(tx: AsyncManagedTransaction) -> None:
            await (await tx.run(queries.COPY_THREAD_CHECKPOINTS, parameters)).consume()
            await (await tx.run(queries.COPY_THREAD_WRITES, parameters)).consume()

        if parameters["source_thread_id"] != parameters["target_thread_id"]:
            await self._write(work)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Prune threads: ``"keep_latest"`` keeps only the newest checkpoint (and its writes) of each
        namespace, ``"delete"`` removes everything.

        Like LangGraph's warning says, ``keep_latest`` drops the ancestors a ``DeltaChannel`` would replay;
        don't prune threads of graphs that use one.
        """
        if strategy not in ("keep_latest", "delete"):
            raise InvalidQueryError(f"unknown prune strategy {strategy!r}: use 'keep_latest' or 'delete'")
        if not thread_ids:
            return
        statement = queries.PRUNE_KEEP_LATEST if strategy == "keep_latest" else queries.DELETE_THREADS
        await self._query(statement, "w", thread_ids=sorted({str(thread_id) for thread_id in thread_ids}))

    async def aprune_older_than(self, older_than: datetime) -> int:
        """Delete every checkpoint made before ``older_than`` (aware), with its writes, except the newest of
        each (thread, namespace); one transaction. Returns how many checkpoints were deleted.

        Ages come from the ids (see :mod:`mnemoflow.memory.checkpoint_ids`). As with ``aprune``, don't prune threads
        of graphs that use a ``DeltaChannel``.
        """
        rows = await self._query(queries.PRUNE_OLDER_THAN, "w", cutoff=checkpoint_id_floor(older_than))
        return int(rows[0]["deleted"])

    def get_next_version(self, current: str | None, channel: None) -> str:
        """``<32-digit counter>.<random>``: increasing, and unique across concurrent writers (as the SQLite saver)."""
        # str() also reads the int versions a checkpoint written by another saver may carry
        current_v = 0 if current is None else int(str(current).split(".")[0])
        return f"{current_v + 1:032}.{random.random():016}"

    # -- the sync API is not offered ------------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        raise UnsupportedError(_ASYNC_ONLY.format("get_tuple"))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        raise UnsupportedError(_ASYNC_ONLY.format("list"))

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        raise UnsupportedError(_ASYNC_ONLY.format("put"))

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        raise UnsupportedError(_ASYNC_ONLY.format("put_writes"))

    def delete_thread(self, thread_id: str) -> None:
        raise UnsupportedError(_ASYNC_ONLY.format("delete_thread"))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        raise UnsupportedError(_ASYNC_ONLY.format("delete_for_runs"))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        raise UnsupportedError(_ASYNC_ONLY.format("copy_thread"))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        raise UnsupportedError(_ASYNC_ONLY.format("prune"))
