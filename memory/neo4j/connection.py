"""One driver to a Neo4j server: managed transactions, with driver errors translated to mnemoflow's.

Retries of transient faults belong to the driver's managed transactions (``execute_query``,
``execute_read``/``execute_write``), bounded by ``max_transaction_retry_time``; callers do not retry again.
A single read statement is the exception: it runs as an auto-commit query, whose RUN and PULL go out together
in one round trip (a managed transaction adds BEGIN and COMMIT), and is not retried; a read that fails has
written nothing, so the caller may simply ask again. A pooled connection idle for longer than
``liveness_check_timeout`` is checked before it is used, so one the server dropped meanwhile is replaced instead
of failing the read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal, TypeVar

import neo4j
from neo4j import AsyncGraphDatabase, AsyncManagedTransaction
from neo4j import exceptions as neo4j_errors

from mnemoflow.errors import ConfigError, MnemoflowError, StoreError, StoreUnavailableError
from mnemoflow.redaction import redact_urls

__all__ = ["Neo4jConnection"]

T = TypeVar("T")


class Neo4jConnection:
    """The driver, its database, and error translation that names the server and ``NEO4J_URI``."""

    def __init__(
        self,
        uri: str,
        *,
        auth: tuple[str, str] | None = None,
        database: str = "neo4j",
        max_transaction_retry_time: float = 30.0,
        connection_timeout: float = 10.0,
        liveness_check_timeout: float = 30.0,
    ) -> None:
        shown = redact_urls(uri)
        if shown != uri:  # refused before the driver, whose errors and warnings quote the URI whole
            raise ConfigError(
                f"NEO4J_URI {shown} carries credentials, which the Neo4j driver does not take there: put the user "
                "and password in NEO4J_USER and NEO4J_PASSWORD"
            )
        self.uri = uri
        self.database = database
        try:
            self.driver = AsyncGraphDatabase.driver(
                uri,
                auth=auth,
                max_transaction_retry_time=max_transaction_retry_time,
                connection_timeout=connection_timeout,
                liveness_check_timeout=liveness_check_timeout,
                # schema-less reads ("label does not exist yet") are normal here; don't log them as warnings
                notifications_min_severity="OFF",
            )
        except (neo4j_errors.ConfigurationError, ValueError) as exc:
            raise ConfigError(f"NEO4J_URI {uri} is not a URI the Neo4j driver takes: {exc}") from exc

    @contextmanager
    def translate(self) -> Iterator[None]:
        """Turn driver errors into mnemoflow's, naming the server and the setting that points at it; each message is
        redacted whole, since the driver's text may quote the URI too."""
        try:
            yield
        except MnemoflowError:
            raise
        except neo4j_errors.AuthError as exc:
            raise StoreUnavailableError(
                redact_urls(
                    f"Neo4j at {self.uri} (NEO4J_URI) refused the credentials; check NEO4J_USER and NEO4J_PASSWORD: {exc}"
                )
            ) from exc
        except (neo4j_errors.ServiceUnavailable, neo4j_errors.SessionExpired, OSError) as exc:
            raise StoreUnavailableError(redact_urls(f"cannot reach Neo4j at {self.uri} (NEO4J_URI): {exc}")) from exc
        except neo4j_errors.Neo4jError as exc:
            raise StoreError(redact_urls(f"Neo4j at {self.uri} answered {exc.code}: {exc.message}")) from exc
        except neo4j_errors.DriverError as exc:
            raise StoreError(redact_urls(f"Neo4j driver error talking to {self.uri}: {exc}")) from exc

    async def verify(self) -> None:
        """Fail fast, with a clear error, when the server cannot be reached."""
        with self.translate():
            await self.driver.verify_connectivity()

    async def query(self, statement: str, routing: Literal["r", "w"] = "r", /, **parameters: Any) -> list[dict[str, Any]]:
        """One statement, the rows as plain dicts (``dict(record)``: ``record.data()`` walks every value again).

        A write (``"w"``) runs in its own managed transaction, retried by the driver; a read in one round trip
        (see the module docstring), chained to the writes by the same bookmarks.
        """
        with self.translate():
            if routing == "w":
                result = await self.driver.execute_query(
                    statement, parameters, database_=self.database, routing_=neo4j.RoutingControl.WRITE
                )
                return [dict(record) for record in result.records]
            async with self.driver.session(
                database=self.database,
                default_access_mode=neo4j.READ_ACCESS,
                bookmark_manager=self.driver.execute_query_bookmark_manager,
            ) as session:
                rows = await session.run(statement, parameters)
                return [dict(record) async for record in rows]

    async def write(self, work: Callable[[AsyncManagedTransaction], Awaitable[T]]) -> T:
        """Several statements in one managed write transaction: all or nothing."""
        with self.translate():
            async with self.driver.session(database=self.database) as session:
                return await session.execute_write(work)

    async def read(self, work: Callable[[AsyncManagedTransaction], Awaitable[T]]) -> T:
        """Several statements in one managed read transaction."""
        with self.translate():
            async with self.driver.session(database=self.database) as session:
                return await session.execute_read(work)

    async def close(self) -> None:
        await self.driver.close()
