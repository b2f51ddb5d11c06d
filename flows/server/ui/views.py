"""What the UI shows, as plain JSON-ready dicts: graphs and memory records, read from the library and the store (runs:
:mod:`~mnemoflow.flows.server.ui.runs`).

Pages and APIs both build on these functions, so a page and its live-update API never disagree. Bad input
(an unknown graph, run, record or namespace, a page out of range) raises :class:`UIError` with the HTTP status
to answer; store errors are translated by :func:`store_errors`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import yaml
from pydantic import BaseModel

from mnemoflow.errors import (
    EmbeddingError,
    InvalidNameError,
    InvalidNamespaceError,
    InvalidQueryError,
    MnemoflowError,
    StoreUnavailableError,
)
from mnemoflow.graphs import LoadedGraph, library_graphs, load_graph, to_mermaid
from mnemoflow.memory.protocol import Embedder, GraphStore
from mnemoflow.memory.records import NodeRecord, RelationshipRecord
from mnemoflow.nodes.builtins import load_builtin_nodes
from mnemoflow.nodes.registry import REGISTRY, import_node_modules
from mnemoflow.settings import Settings

__all__ = [
    "MAX_OFFSET",
    "UIError",
    "get_many",
    "graph_detail",
    "graph_names",
    "local_links",
    "record_url",
    "graph_summaries",
    "namespaces",
    "neighbours",
    "node_json",
    "record",
    "recent_records",
    "search",
    "store_errors",
]

MAX_OFFSET = 1_000_000_000
"""The largest ``offset`` a page may ask for (a bound keeps every number inside the stores' 64-bit integers)."""



class UIError(MnemoflowError):
    """Raised by the UI when a request cannot be answered; ``status`` is the HTTP status to answer with."""

    code = "ui"

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@contextmanager
def store_errors() -> Iterator[None]:
    """Translate store errors into :class:`UIError`: bad arguments are 422, an unreachable store 503."""
    try:
        yield
    except (InvalidQueryError, InvalidNamespaceError, InvalidNameError) as exc:
        raise UIError(422, str(exc)) from exc
    except (StoreUnavailableError, EmbeddingError) as exc:
        raise UIError(503, str(exc)) from exc


# -- graphs ----------------------------------------------------------------------------------------------


def _library() -> dict[str, Path]:
    return {path.stem: path for path in library_graphs()}


def _register_nodes(settings: Settings) -> None:
    """Make sure the built-in nodes and the project's own (``MNEMOFLOW_NODE_MODULES``) are registered."""
    load_builtin_nodes()
    try:
        import_node_modules(settings.node_module_names)
    except MnemoflowError as exc:
        raise UIError(500, str(exc)) from exc


@lru_cache(maxsize=64)
def _load(path: Path, modified: float) -> LoadedGraph:
    return load_graph(path)


def _loaded(name: str, settings: Settings) -> LoadedGraph:
    path = _library().get(name)
    if path is None:
        raise UIError(404, f"no graph named {name!r} in the library")
    _register_nodes(settings)
    try:
        return _load(path, path.stat().st_mtime)
    except MnemoflowError as exc:
        raise UIError(500, f"graph {name!r} does not load: {exc}") from exc


def _description(path: Path) -> str:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return " ".join(str(data.get("description", "")).split()) if isinstance(data, dict) else ""


def graph_names() -> set[str]:
    """The names of the library's graphs."""
    return set(_library())


def graph_summaries() -> list[dict[str, Any]]:
    """Every library graph: name and description, by name."""
    return [{"name": name, "description": _description(path)} for name, path in sorted(_library().items())]


def _config_fields(model: type[BaseModel]) -> list[dict[str, Any]]:
    fields = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        type_name = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
        default = None if info.is_required() else info.get_default(call_default_factory=True)
        fields.append(
            {
                "name": info.alias or name,
                "type": type_name,
                "required": info.is_required(),
                "default": default if isinstance(default, str | int | float | bool | list | dict | None) else repr(default),
                "description": info.description or "",
            }
        )
    return fields


def _first_line(doc: str) -> str:
    return doc.strip().splitlines()[0] if doc.strip() else ""


def graph_detail(name: str, settings: Settings, *, visited: list[str] | None = None) -> dict[str, Any]:
    """A library graph: its Mermaid diagram and, per node, what it reads and writes and its config."""
    loaded = _loaded(name, settings)
    spec = loaded.spec
    library = _library()
    steps = []
    for node_name, node in spec.nodes.items():
        step: dict[str, Any] = {"name": node_name, "description": node.description}
        if node.use is not None:
            definition = REGISTRY.nodes.get(node.use)
            step.update(
                use=node.use,
                reads=sorted(definition.reads) if definition else [],
                writes=sorted(definition.writes) if definition else [],
                doc=_first_line(definition.doc) if definition else "",
                config=dict(node.with_),
                config_fields=_config_fields(definition.config) if definition else [],
            )
        else:
            sub = loaded.subgraphs.get(node_name)
            target = sub.spec.name if sub else str(node.graph)
            step.update(graph=target, in_library=target in library, reads=[], writes=[], config={}, config_fields=[])
        step["retry"] = node.retry.model_dump() if node.retry else None
        step["timeout"] = node.timeout
        steps.append(step)
    routers = []
    for route in spec.routes:
        router = REGISTRY.routers.get(route.router)
        routers.append(
            {
                "from": route.from_,
                "router": route.router,
                "reads": sorted(router.reads) if router else [],
                "outcomes": dict(route.outcomes),
                "config": dict(route.with_),
                "doc": _first_line(router.doc) if router else "",
            }
        )
    return {
        "name": spec.name,
        "version": spec.version,
        "description": " ".join(spec.description.split()),
        "state": spec.state,
        "input": list(spec.input),
        "max_steps": spec.max_steps,
        "mermaid": to_mermaid(loaded, visited=visited or ()),
        "nodes": steps,
        "routes": routers,
        "fanouts": [{"from": f.from_, "over": f.over, "item": f.item, "to": f.to} for f in spec.fanouts],
    }


def local_links(links: list[dict[str, str]]) -> list[dict[str, str]]:
    """Only links to this server's own pages (a path, not ``//host`` or a scheme)."""
    return [link for link in links if link.get("url", "").startswith("/") and not link["url"].startswith("//")]


# -- memory ----------------------------------------------------------------------------------------------


READ_BATCH = 200
"""Records read per ``get_nodes`` call by :func:`get_many`."""


def record_url(namespace: str, node_id: str) -> str:
    """A record's page in the memory explorer."""
    return "/memory/record?" + urlencode({"namespace": namespace, "id": node_id})


async def get_many(store: GraphStore, namespace: str, ids: Sequence[str]) -> list[NodeRecord | None]:
    """The records of ``ids`` in order (None where missing), read ``READ_BATCH`` at a time."""
    found: list[NodeRecord | None] = []
    with store_errors():
        for start in range(0, len(ids), READ_BATCH):
            found += await store.get_nodes(namespace, ids[start : start + READ_BATCH])
    return found


def node_json(node: NodeRecord) -> dict[str, Any]:
    """A record as JSON, without its embedding (only whether it has one)."""
    data = node.model_dump(mode="json", exclude={"embedding"})
    data["embedded"] = node.embedding is not None
    return data


def _relationship_json(relationship: RelationshipRecord) -> dict[str, Any]:
    return relationship.model_dump(mode="json")


async def namespaces(store: GraphStore) -> list[dict[str, Any]]:
    """Every namespace holding nodes, by name, with its node count."""
    with store_errors():
        return [summary.model_dump() for summary in await store.namespaces()]


async def _check_namespace(store: GraphStore, namespace: str) -> None:
    with store_errors():
        known = {summary.name for summary in await store.namespaces()}
    if namespace not in known:
        raise UIError(404, f"namespace {namespace!r} holds no records")


async def recent_records(
    store: GraphStore, namespace: str, *, kind: str | None, limit: int, offset: int
) -> list[dict[str, Any]]:
    """One page of a namespace's records, newest first."""
    await _check_namespace(store, namespace)
    with store_errors():
        return [node_json(node) for node in await store.list_nodes(namespace, kind=kind, limit=limit, offset=offset)]


async def search(
    store: GraphStore, embedder: Embedder, namespace: str, query: str, *, mode: str, kind: str | None, k: int
) -> list[dict[str, Any]]:
    """Keyword (BM25) or vector (cosine, over one embedded kind) search of a namespace, best first."""
    await _check_namespace(store, namespace)
    if not query.strip():
        raise UIError(422, "give words to search for")
    with store_errors():
        if mode == "keyword":
            hits = await store.keyword_search(namespace, query, k=k, kinds=[kind] if kind else None)
        elif mode == "vector":
            embedded = [spec.name for spec in store.registry.kinds if spec.embedded]
            if kind is None or kind not in embedded:
                raise UIError(422, f"vector search needs an embedded kind: one of {', '.join(embedded) or '(none)'}")
            [vector] = await embedder.embed([query])
            hits = await store.vector_search(namespace, vector, kind=kind, k=k)
        else:
            raise UIError(422, f"mode {mode!r} is not 'keyword' or 'vector'")
    found = []
    for hit in hits:
        node = node_json(hit.node)
        if mode == "vector":  # hits come without their vectors, but a vector is how they were found
            node["embedded"] = True
        found.append({"score": hit.score, "node": node})
    return found


async def record(store: GraphStore, namespace: str, node_id: str) -> dict[str, Any]:
    """One record, with the number of relationships touching it and the mechanism views about it."""
    page = await neighbours(store, namespace, node_id, limit=1, offset=0)
    node: dict[str, Any] = page["node"]
    node["relationships"] = page["total"]
    from mnemoflow.flows.server.ui import mechanisms  # they read through this module's helpers

    node["links"] = local_links(mechanisms.record_links(node))
    return node


async def neighbours(store: GraphStore, namespace: str, node_id: str, *, limit: int, offset: int) -> dict[str, Any]:
    """One page of a record's relationships and the records at their other ends; 404 when the record does not exist."""
    with store_errors():
        page = await store.neighbours(namespace, node_id, limit=limit, offset=offset)
    if page.node is None:
        raise UIError(404, f"no record {node_id!r} in namespace {namespace!r}")
    return {
        "node": node_json(page.node),
        "relationships": [_relationship_json(relationship) for relationship in page.relationships],
        "nodes": [node_json(node) for node in page.nodes],
        "total": page.total,
        "offset": page.offset,
        "limit": page.limit,
    }
