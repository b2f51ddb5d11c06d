"""Schema versions: set-up records the version, is idempotent, and refuses a store from a newer mnemoflow."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from neo4j import AsyncGraphDatabase

from mnemoflow.errors import SchemaError
from mnemoflow.memory import SCHEMA_VERSION
from mnemoflow.memory.protocol import GraphStore
from tests.conformance.helpers import chunk
from tests.conftest import neo4j_auth, new_store


async def test_setup_records_the_version_and_is_idempotent(store: GraphStore, namespace: str) -> None:
    assert await store.schema_version() == SCHEMA_VERSION
    await store.upsert_nodes([chunk(namespace, "kept")])
    await store.setup()
    await store.setup()
    assert await store.schema_version() == SCHEMA_VERSION
    assert await store.count_nodes(namespace) == 1


async def test_store_from_a_newer_mnemoflow_is_refused(
    store: GraphStore, backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    newer = SCHEMA_VERSION + 1
    uri = None
    if backend == "neo4j":
        uri = request.getfixturevalue("empty_neo4j")
        async with AsyncGraphDatabase.driver(uri, auth=neo4j_auth()) as driver:
            await driver.execute_query("MATCH (m:MfMeta {key: 'schema'}) SET m.schema_version = $v", v=newer)
    else:
        with sqlite3.connect(tmp_path / "memory.db") as connection:
            connection.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(newer)])
    reopened = new_store(backend, neo4j_uri=uri, sqlite_path=tmp_path / "memory.db")
    try:
        with pytest.raises(SchemaError, match=f"schema version {newer}.*upgrade mnemoflow"):
            await reopened.setup()
    finally:
        await reopened.close()


async def test_version_is_zero_before_setup(tmp_path: Path) -> None:
    fresh = new_store("sqlite", sqlite_path=tmp_path / "fresh.db")
    try:
        assert await fresh.schema_version() == 0
    finally:
        await fresh.close()
