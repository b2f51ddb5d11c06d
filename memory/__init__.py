"""The memory layer: record models, the GraphStore contract, the Neo4j and SQLite backends, embedders.

Records, names and the contracts load with the package; the backends, embedders and checkpointers (and their
drivers) load when first used.
"""

import typing

from mnemoflow import lazy
from mnemoflow.memory.names import REGISTRY, KindSpec, NameRegistry, validate_identifier, validate_namespace
from mnemoflow.memory.protocol import SCHEMA_VERSION, Embedder, GraphStore
from mnemoflow.memory.records import (
    Direction,
    JsonScalar,
    Link,
    NamespaceSummary,
    NeighbourPage,
    NodeRecord,
    RelationshipRecord,
    ScoredNode,
    Subgraph,
    stable_id,
)

if typing.TYPE_CHECKING:
    from mnemoflow.memory.checkpoints import open_checkpointer
    from mnemoflow.memory.embeddings import HashingEmbedder, LocalEmbedder, OpenAIEmbedder, embedder_from_settings
    from mnemoflow.memory.factory import store_from_settings
    from mnemoflow.memory.langgraph_store import MnemoflowStore, open_langgraph_store
    from mnemoflow.memory.neo4j.checkpoints import Neo4jCheckpointSaver
    from mnemoflow.memory.neo4j.store import Neo4jStore
    from mnemoflow.memory.sqlite.store import SQLiteStore

__getattr__, __dir__ = lazy.members(
    __name__,
    {
        "open_checkpointer": "mnemoflow.memory.checkpoints",
        "HashingEmbedder": "mnemoflow.memory.embeddings",
        "LocalEmbedder": "mnemoflow.memory.embeddings",
        "OpenAIEmbedder": "mnemoflow.memory.embeddings",
        "embedder_from_settings": "mnemoflow.memory.embeddings",
        "store_from_settings": "mnemoflow.memory.factory",
        "MnemoflowStore": "mnemoflow.memory.langgraph_store",
        "open_langgraph_store": "mnemoflow.memory.langgraph_store",
        "Neo4jCheckpointSaver": "mnemoflow.memory.neo4j.checkpoints",
        "Neo4jStore": "mnemoflow.memory.neo4j.store",
        "SQLiteStore": "mnemoflow.memory.sqlite.store",
    },
)

__all__ = [
    "REGISTRY",
    "SCHEMA_VERSION",
    "Direction",
    "Embedder",
    "GraphStore",
    "HashingEmbedder",
    "JsonScalar",
    "KindSpec",
    "Link",
    "LocalEmbedder",
    "MnemoflowStore",
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
    "open_langgraph_store",
    "stable_id",
    "store_from_settings",
    "validate_identifier",
    "validate_namespace",
]
