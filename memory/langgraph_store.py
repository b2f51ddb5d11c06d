"""LangGraph's ``BaseStore`` on the GraphStore contract: mnemoflow's SQLite or Neo4j store as a LangGraph application's
long-term memory (``graph.compile(store=...)``, ``get_store()`` in a node, ``create_react_agent(store=...)``).

Items are ordinary records (kind ``StoreItem``, see :mod:`mnemoflow.memory.langgraph_items`), visible in the UI's
memory explorer and swept by the maintenance flow's ``delete_expired``. The store batches like LangGraph's own async
stores: concurrent ``aput``/``aget``/``asearch`` calls of one event-loop tick become one ``abatch``, whose puts are
one ``upsert_nodes`` and whose deletes one ``delete_nodes``; the sync methods run on the store's loop from another
thread (LangGraph runs sync nodes in threads). See ``docs/langgraph-store.md``.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from langgraph.store.base import (
    GetOp,
    IndexConfig,
    InvalidNamespaceError,
    ListNamespacesOp,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
    validate_op_namespace,
)
from langgraph.store.base.batch import AsyncBatchedBaseStore

from mnemoflow.errors import ConfigError, InvalidQueryError, UsageError
from mnemoflow.memory.batches import MAX_K, MAX_PAGE
from mnemoflow.memory.langgraph_items import (
    KIND,
    expires_at,
    index_text,
    is_expired,
    item_from_record,
    item_id,
    item_record,
    matches_filter,
    matches_namespace,
    prefix_where,
    value_where,
)
from mnemoflow.memory.names import validate_namespace
from mnemoflow.memory.protocol import Embedder, GraphStore
from mnemoflow.memory.records import JsonScalar, NodeRecord, encode_properties
from mnemoflow.settings import Settings

__all__ = ["MnemoflowStore", "open_langgraph_store"]

_INDEX_KEYS = frozenset({"dims", "fields"})


class MnemoflowStore(AsyncBatchedBaseStore):
    """A LangGraph store whose items live in one namespace of a :class:`GraphStore`.

    ``namespace`` is the mnemoflow namespace (tenant) every item lives in; LangGraph's tuple namespaces live inside
    it, so two stores on different namespaces never see each other's items. Vector search needs ``embedder``: the
    items' vectors come from it, the store's own embedder, so one store never mixes models. ``index`` is LangGraph's
    ``IndexConfig`` without ``embed``: ``fields`` (default ``["$"]``, the whole value) and an optional ``dims``
    checked against the embedder. With no embedder a query is ignored and a search lists, as InMemoryStore without
    an index does. ``ttl`` is LangGraph's ``TTLConfig`` (minutes); expired items are never returned, even before a
    sweep. Create it inside the event loop that uses ``store`` (its sync methods are refused on that loop's thread).

    Example::

        async with open_langgraph_store(Settings.load(), index_fields=["text"]) as store:
            graph = builder.compile(store=store)
    """

    supports_ttl = True

    def __init__(
        self,
        store: GraphStore,
        *,
        namespace: str,
        embedder: Embedder | None = None,
        index: IndexConfig | None = None,
        ttl: TTLConfig | None = None,
    ) -> None:
        self._task = None  # checked before the batching task starts, so a refused store leaves no task behind
        self.namespace = validate_namespace(namespace)
        self.index_fields = _index_fields(index, embedder)
        """Field paths embedded by default; None when the store has no vector search."""
        try:
            super().__init__()
        except RuntimeError as exc:
            raise UsageError(
                "MnemoflowStore must be created inside a running event loop (the one that uses its GraphStore): "
                "use `async with open_langgraph_store(...)` or create it in an async function"
            ) from exc
        self.store = store
        self.embedder = embedder
        self.index_config = index
        self.ttl_config = ttl

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """Run ``ops`` and return their results in input order.

        As LangGraph's stores do, the reads (gets, searches, namespace listings) see the store as it was before the
        batch, and the puts come last, deduplicated last-wins per (namespace, key); a put of ``None`` deletes.
        Refreshing the TTLs of what was read is one more upsert.
        """
        ops = list(ops)
        for op in ops:
            validate_op_namespace(op)
            if isinstance(op, PutOp):
                _check_put(op)
            elif not isinstance(op, GetOp | SearchOp | ListNamespacesOp):
                raise InvalidQueryError(f"unknown store operation {type(op).__name__}: expected GetOp, SearchOp, PutOp or ListNamespacesOp")
        now = time.time()
        results: list[Result] = [None] * len(ops)
        refresh: set[str] = set()
        gets = [(position, op) for position, op in enumerate(ops) if isinstance(op, GetOp)]
        if gets:
            records = await self.store.get_nodes(self.namespace, [item_id(op.namespace, op.key) for _, op in gets])
            for (position, op), record in zip(gets, records, strict=True):
                if record is not None and not is_expired(record, now):
                    results[position] = item_from_record(record)
                    _note_refresh(refresh, record, op.refresh_ttl)
        searches = [(position, op) for position, op in enumerate(ops) if isinstance(op, SearchOp)]
        vectors = await self._query_vectors([op for _, op in searches])
        for position, op in searches:
            results[position] = await self._search(op, vectors.get(op.query or ""), now, refresh)
        for position, op in enumerate(ops):
            if isinstance(op, ListNamespacesOp):
                results[position] = await self._list_namespaces(op, now)
        if refresh:
            await self._refresh(sorted(refresh), now)
        puts = [op for op in ops if isinstance(op, PutOp)]
        if puts:
            await self._write(puts, now)
        return results

    async def sweep_ttl(self) -> int:
        """Delete the expired records now, as LangGraph's stores' ``sweep_ttl``; returns how many went.

        This is ``GraphStore.delete_expired``, which the maintenance flow runs: it sweeps every expired record of
        the store, in every namespace.
        """
        return await self.store.delete_expired(time.time())

    # -- reads -----------------------------------------------------------------------------------------------

    async def _query_vectors(self, searches: Sequence[SearchOp]) -> dict[str, list[float]]:
        """One embedder call for the distinct queries of the batch's searches (none without vector search)."""
        if self.embedder is None:
            return {}
        queries = sorted({op.query for op in searches if op.query})
        if not queries:
            return {}
        return dict(zip(queries, await self.embedder.embed(queries), strict=True))

    async def _search(self, op: SearchOp, vector: list[float] | None, now: float, refresh: set[str]) -> list[SearchItem]:
        if isinstance(op.limit, bool) or not isinstance(op.limit, int) or op.limit < 0:
            raise InvalidQueryError(f"search limit={op.limit!r} must be an integer of 0 or more")
        if isinstance(op.offset, bool) or not isinstance(op.offset, int) or op.offset < 0:
            raise InvalidQueryError(f"search offset={op.offset!r} must be an integer of 0 or more")
        if op.limit == 0:
            return []
        where = {**prefix_where(op.namespace_prefix), **value_where(op.filter)}
        wanted = op.offset + op.limit
        if vector is None:
            found: list[tuple[NodeRecord, float | None]] = [
                (record, None) for record in await self._listed(where, op.filter, now, wanted)
            ]
        else:
            found = await self._ranked(vector, where, op.filter, now, wanted)
        page = found[op.offset : wanted]
        for record, _ in page:
            _note_refresh(refresh, record, op.refresh_ttl)
        items = []
        for record, score in page:
            item = item_from_record(record)
            items.append(SearchItem(item.namespace, item.key, item.value, item.created_at, item.updated_at, score))
        return items

    async def _ranked(
        self, vector: list[float], where: dict[str, JsonScalar], filter: dict[str, Any] | None, now: float, wanted: int
    ) -> list[tuple[NodeRecord, float | None]]:
        """The items best first by cosine, widening the vector search until ``wanted`` pass the filter or the prefix
        has no more vectors; then, as InMemoryStore does, the items without a vector after them, scored ``None``."""
        k = min(MAX_K, max(wanted, 10) * (4 if filter else 1))
        while True:
            hits = await self.store.vector_search(self.namespace, vector, kind=KIND, k=k, filters=where or None)
            ranked: list[tuple[NodeRecord, float | None]] = [
                (hit.node, hit.score)
                for hit in hits
                if not is_expired(hit.node, now) and matches_filter(hit.node.properties.get("value") or {}, filter)
            ]
            exhausted = len(hits) < k
            if len(ranked) >= wanted or exhausted or k == MAX_K:
                break
            k = min(MAX_K, k * 4)
        if exhausted and len(ranked) < wanted:
            with_vectors = {hit.node.id for hit in hits}
            rest = await self._listed(where, filter, now, wanted - len(ranked), skip=with_vectors)
            ranked += [(record, None) for record in rest]
        return ranked

    async def _listed(
        self,
        where: dict[str, JsonScalar],
        filter: dict[str, Any] | None,
        now: float,
        wanted: int,
        *,
        skip: set[str] | frozenset[str] = frozenset(),
    ) -> list[NodeRecord]:
        """Up to ``wanted`` live items under the prefix that pass the filter, newest first (as LangGraph's SQLite and
        Postgres stores order a search without a query), read page by page."""
        page_size = min(MAX_PAGE, max(2 * wanted, 50))
        found: list[NodeRecord] = []
        offset = 0
        while len(found) < wanted:
            page = await self.store.list_nodes(self.namespace, kind=KIND, where=where or None, limit=page_size, offset=offset)
            offset += len(page)
            found += [
                record
                for record in page
                if record.id not in skip and not is_expired(record, now) and matches_filter(record.properties.get("value") or {}, filter)
            ]
            if len(page) < page_size:
                break
        return found[:wanted]

    async def _list_namespaces(self, op: ListNamespacesOp, now: float) -> list[tuple[str, ...]]:
        """The distinct namespaces of the live items matching every condition, cut to ``max_depth``, sorted, paged.

        Reads every item under the first prefix condition (O(items): there is no namespace table to ask).
        """
        if op.max_depth is not None and (isinstance(op.max_depth, bool) or not isinstance(op.max_depth, int) or op.max_depth < 1):
            raise InvalidQueryError(f"list_namespaces max_depth={op.max_depth!r} must be a positive integer or None")
        if op.limit < 0 or op.offset < 0:
            raise InvalidQueryError(f"list_namespaces limit={op.limit!r} and offset={op.offset!r} must be 0 or more")
        conditions = tuple(op.match_conditions or ())
        prefixes = [condition.path for condition in conditions if condition.match_type == "prefix"]
        where = prefix_where(prefixes[0], wildcards=True) if prefixes else {}
        namespaces: set[tuple[str, ...]] = set()
        offset = 0
        while True:
            page = await self.store.list_nodes(self.namespace, kind=KIND, where=where or None, limit=MAX_PAGE, offset=offset)
            offset += len(page)
            for record in page:
                path = tuple(record.properties.get("path") or ())
                if path and not is_expired(record, now) and all(matches_namespace(c, path) for c in conditions):
                    namespaces.add(path if op.max_depth is None else path[: op.max_depth])
            if len(page) < MAX_PAGE:
                break
        return sorted(namespaces)[op.offset : op.offset + op.limit]

    # -- writes ----------------------------------------------------------------------------------------------

    async def _refresh(self, ids: list[str], now: float) -> None:
        """Move the expiry of the items read to ``now`` plus their TTL: one read of the full records (vectors kept),
        one upsert."""
        records = [record for record in await self.store.get_nodes(self.namespace, ids) if record is not None]
        refreshed = [
            record.model_copy(
                update={"properties": {**record.properties, "expires_at": expires_at(now, record.properties["ttl_minutes"])}}
            )
            for record in records
            if not is_expired(record, now)
        ]
        if refreshed:
            await self.store.upsert_nodes(refreshed)

    async def _write(self, puts: list[PutOp], now: float) -> None:
        """The batch's puts, last-wins per (namespace, key): one embedder call, one upsert, one delete."""
        latest = {(op.namespace, op.key): op for op in puts}
        deletes = [item_id(op.namespace, op.key) for op in latest.values() if op.value is None]
        kept = [op for op in latest.values() if op.value is not None]
        texts = [self._indexed_text(op) for op in kept]
        embedded = [position for position, text in enumerate(texts) if text and self.embedder is not None]
        vectors: list[list[float] | None] = [None] * len(kept)
        if embedded:
            assert self.embedder is not None
            for position, vector in zip(embedded, await self.embedder.embed([texts[p] for p in embedded]), strict=True):
                vectors[position] = vector
        records = [
            item_record(
                self.namespace,
                op.namespace,
                op.key,
                op.value or {},
                text=text,
                embedding=vector,
                ttl_minutes=op.ttl,
                now=now,
            )
            for op, text, vector in zip(kept, texts, vectors, strict=True)
        ]
        if deletes:
            await self.store.delete_nodes(self.namespace, deletes)
        if records:
            await self.store.upsert_nodes(records)

    def _indexed_text(self, op: PutOp) -> str:
        """The text embedded for a put: its ``index`` fields, else the store's; none for ``index=False`` or a store
        without vector search (LangGraph ignores ``index`` there)."""
        if op.index is False or self.index_fields is None or op.value is None:
            return ""
        return index_text(op.value, self.index_fields if op.index is None else op.index)


@asynccontextmanager
async def open_langgraph_store(
    settings: Settings | None = None,
    *,
    namespace: str = "langgraph",
    index_fields: list[str] | None = None,
    ttl: TTLConfig | None = None,
) -> AsyncIterator[MnemoflowStore]:
    """A :class:`MnemoflowStore` on the store and embedder the settings configure (``MNEMOFLOW_STORE_BACKEND``,
    ``NEO4J_URI``, ``MNEMOFLOW_EMBEDDING_PROVIDER``...; the environment's when ``settings`` is None), set up, closed
    on exit. Items are embedded by ``index_fields`` (default the whole value) and live in mnemoflow namespace
    ``namespace``."""
    from mnemoflow.memory.embeddings import embedder_from_settings
    from mnemoflow.memory.factory import store_from_settings

    settings = settings or Settings.load()
    embedder = embedder_from_settings(settings)
    store = store_from_settings(settings, embedder)
    try:
        await store.setup()
        langgraph_store = MnemoflowStore(
            store, namespace=namespace, embedder=embedder, index={"fields": index_fields or ["$"]}, ttl=ttl
        )
        try:
            yield langgraph_store
        finally:
            if langgraph_store._task is not None:
                langgraph_store._task.cancel()
    finally:
        await store.close()
        close = getattr(embedder, "close", None)
        if close is not None:
            await close()


def _index_fields(index: IndexConfig | None, embedder: Embedder | None) -> list[str] | None:
    """The default field paths to embed, checked against the embedder; None without vector search."""
    if index is None:
        return None if embedder is None else ["$"]
    unknown = sorted(set(index) - _INDEX_KEYS)
    if unknown:
        raise ConfigError(
            f"index option(s) {', '.join(map(repr, unknown))} are not supported by MnemoflowStore: it takes 'fields' "
            "and 'dims'; vectors come from its own embedder (pass embedder=...), so that one store never mixes models"
        )
    if embedder is None:
        raise ConfigError("MnemoflowStore: index= needs an embedder (embedder=...): it embeds the indexed fields")
    dims = index.get("dims")
    if dims is not None and dims != embedder.dimension:
        raise ConfigError(
            f"index dims={dims} differs from the embedder's dimension {embedder.dimension} (model {embedder.model!r}); "
            "leave dims out or configure the embedder with that dimension"
        )
    fields: object = index.get("fields") or ["$"]
    if not isinstance(fields, list) or not all(isinstance(field, str) and field for field in fields):
        raise ConfigError(f"index fields={fields!r} must be a list of field paths (like 'text' or 'a.b[*].c')")
    return list(fields)


def _check_put(op: PutOp) -> None:
    """Refuse a put LangGraph's stores would refuse, or whose value cannot be stored as JSON, naming where."""
    where = f"put {op.key!r} in {op.namespace!r}"
    if not op.namespace:
        raise InvalidNamespaceError(f"{where}: namespace cannot be empty")
    if not isinstance(op.key, str):
        raise InvalidQueryError(f"{where}: the key must be a string, got {type(op.key).__name__}")
    if op.value is not None:
        encode_properties(dict(op.value), where=f"{where}: value")
    if op.ttl is not None and (isinstance(op.ttl, bool) or not isinstance(op.ttl, int | float) or not math.isfinite(op.ttl) or op.ttl <= 0):
        raise InvalidQueryError(f"{where}: ttl={op.ttl!r} must be a positive number of minutes or None")
    index: object = op.index
    if index is not None and index is not False and not (isinstance(index, list) and all(isinstance(f, str) for f in index)):
        raise InvalidQueryError(f"{where}: index={op.index!r} must be False, None or a list of field paths")


def _note_refresh(refresh: set[str], record: NodeRecord, wanted: bool) -> None:
    """Remember a read item whose TTL the read refreshes (LangGraph: every read with ``refresh_ttl``)."""
    if wanted and isinstance(record.properties.get("ttl_minutes"), int | float):
        refresh.add(record.id)
