"""Build the store a run's settings ask for."""

from __future__ import annotations

from mnemoflow.memory.names import REGISTRY, NameRegistry
from mnemoflow.memory.neo4j.store import Neo4jStore
from mnemoflow.memory.protocol import Embedder, GraphStore
from mnemoflow.memory.sqlite.store import SQLiteStore
from mnemoflow.settings import Settings

__all__ = ["store_from_settings"]


def store_from_settings(settings: Settings, embedder: Embedder, *, registry: NameRegistry = REGISTRY) -> GraphStore:
    """A store for ``settings.store.backend``, recording ``embedder``'s model and dimension; call ``setup()`` next."""
    if settings.store.backend == "neo4j":
        neo4j = settings.neo4j
        auth = (neo4j.user, neo4j.password.get_secret_value()) if neo4j.password else None
        return Neo4jStore(
            neo4j.uri,
            auth=auth,
            database=neo4j.database,
            embedding_model=embedder.model,
            embedding_dimension=embedder.dimension,
            registry=registry,
            max_transaction_retry_time=neo4j.max_transaction_retry_time,
            connection_timeout=neo4j.connection_timeout,
            write_chunk_rows=settings.store.write_chunk_rows,
        )
    return SQLiteStore(
        settings.store.sqlite_path,
        embedding_model=embedder.model,
        embedding_dimension=embedder.dimension,
        registry=registry,
    )
