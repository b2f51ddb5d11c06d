"""The memory layer: record models, the GraphStore contract, the Neo4j and SQLite backends, embedders."""

from memory.checkpoints import open_checkpointer
from memory.embeddings import HashingEmbedder, LocalEmbedder, OpenAIEmbedder, embedder_from_settings
from memory.factory import store_from_settings
from memory.names import REGISTRY, KindSpec, NameRegistry, validate_identifier, validate_namespace
from memory.neo4j.checkpoints import Neo4jCheckpointSaver
from memory.neo4j.store import Neo4jStore
from memory.protocol import SCHEMA_VERSION, Embedder, GraphStore
from memory.records import (
    Direction,
    JsonScalar,
    NamespaceSummary,
    NeighbourPage,
    NodeRecord,
    RelationshipRecord,
    ScoredNode,
    Subgraph,
    stable_id,
)
from memory.sqlite.store import SQLiteStore

__all__ = [
    "REGISTRY",
    "SCHEMA_VERSION",
    "Direction",
    "Embedder",
    "GraphStore",
    "HashingEmbedder",
    "JsonScalar",
    "KindSpec",
    "LocalEmbedder",
    "NameRegistry",
    "NamespaceSummary",
    "NeighbourPage",
    "Neo4jCheckpointSaver",
    "Neo4jStore",
    "NodeRecord",
    "OpenAIEmbedder",
    "RelationshipRecord",
    "SQLiteStore",
    "ScoredNode",
    "Subgraph",
    "embedder_from_settings",
    "open_checkpointer",
    "stable_id",
    "store_from_settings",
    "validate_identifier",
    "validate_namespace",
]
