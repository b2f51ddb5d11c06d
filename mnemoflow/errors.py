"""The exception tree of mnemoflow.

Every error mnemoflow raises on purpose derives from :class:`MnemoflowError`; leaves that describe bad
input also derive from the matching builtin, so ``except ValueError`` keeps working for callers who do not
know mnemoflow::

    MnemoflowError
    ├── ConfigError (ValueError)             a setting or CLI argument is invalid
    ├── EmbeddingError                       an embedder failed or returned vectors of the wrong shape
    ├── GraphSpecError (ValueError)          a graph file is invalid: every problem, with file, line and column
    ├── RegistrationError (ValueError)       a node, router or state model is registered wrongly
    ├── NodeError                            a node or router misbehaved while a graph ran
    ├── LLMError                             the language model could not give a usable answer
    │   ├── LLMUnavailableError (ConnectionError)  transport faults outlasted the retries
    │   ├── LLMTimeoutError (TimeoutError)   the call's total deadline passed
    │   ├── LLMRequestError (ValueError)     the server refused the request (a 4xx other than 429)
    │   ├── LLMOutputError (ValueError)      the reply never validated; carries the raw replies
    │   └── ToolArgumentError (ValueError)   a tool call's arguments are not a valid JSON object for the tool
    └── StoreError                           anything the memory store reports
        ├── StoreUnavailableError (ConnectionError)   the database cannot be reached or went away
        ├── SchemaError                      the stored schema does not match this code (version, model)
        ├── InvalidNameError (ValueError)    a label, relationship type or property key is not allowed
        ├── InvalidNamespaceError (ValueError)  a namespace is empty or malformed
        ├── InvalidRecordError (ValueError)  a record's properties cannot be stored faithfully
        ├── InvalidQueryError (ValueError)   a read's argument (k, depth, direction, ids) is out of range
        ├── EmbeddingDimensionError (ValueError)  a vector's length differs from the index it targets
        ├── MissingEndpointError (LookupError)    a relationship names a node that does not exist
        └── ConflictError (ValueError)       an upsert would change what an existing id is

Foreign errors (neo4j, sqlite3, openai) are translated at the edge of each backend and re-raised
``from`` the original, so nothing above the memory layer sees driver types.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConfigError",
    "ConflictError",
    "EmbeddingDimensionError",
    "EmbeddingError",
    "GraphSpecError",
    "InvalidNameError",
    "InvalidNamespaceError",
    "InvalidQueryError",
    "InvalidRecordError",
    "LLMError",
    "LLMOutputError",
    "LLMRequestError",
    "LLMTimeoutError",
    "LLMUnavailableError",
    "MissingEndpointError",
    "MnemoflowError",
    "NodeError",
    "RegistrationError",
    "SchemaError",
    "StoreError",
    "StoreUnavailableError",
    "ToolArgumentError",
]


class MnemoflowError(Exception):
    """Root of every error mnemoflow raises on purpose."""


class ConfigError(MnemoflowError, ValueError):
    """Raised when a setting, an environment variable or a CLI argument is invalid."""


class EmbeddingError(MnemoflowError):
    """Raised when an embedder fails or returns vectors of an unexpected shape."""


class GraphSpecError(MnemoflowError, ValueError):
    """Raised when a graph file is invalid; ``problems`` lists every problem found, each with its place."""

    def __init__(self, problems: list[Any]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(problem) for problem in problems))


class RegistrationError(MnemoflowError, ValueError):
    """Raised when a node, router or state model is registered with a bad name, fields or signature."""


class NodeError(MnemoflowError):
    """Raised when a node writes a field it did not declare, or a router returns an undeclared outcome."""


class LLMError(MnemoflowError):
    """Raised when the language model could not give a usable answer."""


class LLMUnavailableError(LLMError, ConnectionError):
    """Raised when 429s, 5xx, timeouts or dropped connections outlast the gateway's retries."""


class LLMTimeoutError(LLMError, TimeoutError):
    """Raised when a call, retries included, passes its total deadline."""


class LLMRequestError(LLMError, ValueError):
    """Raised at once when the server refuses a request with a 4xx other than 429 (its message included)."""


class LLMOutputError(LLMError, ValueError):
    """Raised when a reply still does not validate after the re-ask; ``raw_replies`` holds what came back."""

    def __init__(self, message: str, raw_replies: list[str]) -> None:
        self.raw_replies = raw_replies
        super().__init__(message)


class ToolArgumentError(LLMError, ValueError):
    """Raised by ``Tool.parse`` when a call's arguments are not JSON, not an object, or do not validate (model-readable)."""


class StoreError(MnemoflowError):
    """Raised for any failure reported by a memory store."""


class StoreUnavailableError(StoreError, ConnectionError):
    """Raised when the database cannot be reached, or stopped answering and the driver's retries ran out."""


class SchemaError(StoreError):
    """Raised when the stored schema (version, embedding model or dimension) does not match this code."""


class InvalidNameError(StoreError, ValueError):
    """Raised when a label, relationship type or property key is unregistered or not a safe identifier."""


class InvalidNamespaceError(StoreError, ValueError):
    """Raised when a namespace is empty, too long or contains control characters."""


class InvalidRecordError(StoreError, ValueError):
    """Raised when a record's properties cannot be stored and read back faithfully (NaN, non-JSON values)."""


class InvalidQueryError(StoreError, ValueError):
    """Raised when an argument of a read (k, depth, direction, ids, filter values) is out of range."""


class EmbeddingDimensionError(StoreError, ValueError):
    """Raised when a vector's length differs from the dimension of the index it is written to or searched in."""


class MissingEndpointError(StoreError, LookupError):
    """Raised when a relationship names a source or target node that does not exist in its namespace."""


class ConflictError(StoreError, ValueError):
    """Raised when an upsert would change what an existing id is: a node's kind, a relationship's type or ends."""
