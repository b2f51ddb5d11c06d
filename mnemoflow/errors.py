"""The exception tree of mnemoflow.

Everything mnemoflow raises on purpose derives from :class:`MnemoflowError`; leaves that describe bad input also
derive from the matching builtin, so ``except ValueError`` keeps working for callers who do not know mnemoflow.
Every class has a stable ``code`` (shown after its name below) for logs, APIs and scripts; messages may change,
codes do not. Leaves defined beside the code that raises them give their module::

    MnemoflowError                              mnemoflow
    ├── ConfigError (ValueError)                config        a setting, environment variable, CLI argument or run input is invalid
    │   ├── PreconditionError                   precondition  what a run needs is missing (a book not indexed in its namespace)
    │   └── EvalDataError                       eval-data     evaluation.harness: an evaluation's data file is malformed
    ├── UsageError (ValueError)                 usage         a function was called with arguments it cannot take (a caller's bug)
    ├── UnsupportedError (NotImplementedError)  unsupported   an object does not offer this operation (a sync method of an async saver)
    ├── EmbeddingError                          embedding     an embedder failed or returned vectors of the wrong shape
    ├── GraphSpecError (ValueError)             graph-spec    a graph file is invalid: every problem, with file, line and column
    ├── RegistrationError (ValueError)          registration  a node, router, state model or tool is registered wrongly
    ├── NodeError                               node          a node or router misbehaved while a graph ran
    ├── SandboxError (RuntimeError)             sandbox       git or the sandbox failed around untrusted code (not the code itself)
    ├── LLMError                                llm           the language model could not give a usable answer
    │   ├── TransientError                      llm-transient a retryable transport fault (429, 5xx, timeout); the gateway retries it
    │   ├── LLMUnavailableError (ConnectionError)  llm-unavailable  transport faults outlasted the retries
    │   ├── LLMTimeoutError (TimeoutError)      llm-timeout   the call's total deadline passed
    │   ├── LLMRequestError (ValueError)        llm-request   the server refused the request (a 4xx other than 429)
    │   ├── ReplyFormatError (ValueError)       llm-reply-format  a reply holds no JSON value (the gateway asks again)
    │   ├── LLMOutputError (ValueError)         llm-output    the reply never validated; carries the raw replies
    │   └── ToolArgumentError (ValueError)      llm-tool-arguments  a tool call's arguments are not a valid JSON object for the tool
    ├── StoreError                              store         anything the memory store reports
    │   ├── StoreUnavailableError (ConnectionError)  store-unavailable  the database cannot be reached or went away
    │   ├── SchemaError                         store-schema  the stored schema does not match this code (version, model)
    │   ├── InvalidNameError (ValueError)       invalid-name  a label, relationship type or property key is not allowed
    │   ├── InvalidNamespaceError (ValueError)  invalid-namespace  a namespace is empty or malformed
    │   ├── InvalidRecordError (ValueError)     invalid-record  a record's properties cannot be stored faithfully
    │   ├── InvalidQueryError (ValueError)      invalid-query  a read's argument (k, depth, direction, ids) is out of range
    │   ├── EmbeddingDimensionError (ValueError)  embedding-dimension  a vector's length differs from the index it targets
    │   ├── MissingEndpointError (LookupError)  missing-endpoint  a relationship names a node that does not exist
    │   └── ConflictError (ValueError)          conflict      an upsert would change what an existing id is, or a claim was taken
    ├── HookRejected (ValueError)               hook-rejected     flows.server.hooks.providers: a webhook delivery is refused
    ├── TriggerUnavailable                      trigger-unavailable  flows.server.hooks.trigger: Prefect cannot take the run now
    ├── TriggerRefused                          trigger-refused   flows.server.hooks.trigger: Prefect refused the run's parameters
    ├── LaunchError                             launch            flows.server.launcher: a start, resume or fork from the UI is refused
    ├── UIError                                 ui                flows.server.ui.views: a page or API request cannot be answered
    └── RescheduleLimitError                    reschedule-limit  flows.run: a run whose worker died was rescheduled more often than MNEMOFLOW_PREFECT_MAX_RESCHEDULES allows

Mechanisms' own leaves, with their parents::

    ForestError (MnemoflowError)                tme-forest            nodes.tme.forest: a task-forest change is refused
    SessionConflictError (ConflictError)        tme-session-conflict  nodes.tme: another turn was saved first, max_attempts times in a row
    PathError (ToolArgumentError)               l2mac-path            nodes.l2mac.files: a path is malformed or outside the project
    MissingFileError (ToolArgumentError, KeyError)     l2mac-missing-file  nodes.l2mac.files: no such file or version
    FileTooLargeError (ToolArgumentError)       l2mac-file-too-large  nodes.l2mac.files: more than a file may hold

Foreign errors (neo4j, sqlite3, openai) are translated at the edge of each backend and re-raised ``from`` the
original, so nothing above the memory layer sees driver types.
"""

from __future__ import annotations

from typing import Any, ClassVar

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
    "PreconditionError",
    "RegistrationError",
    "ReplyFormatError",
    "SandboxError",
    "SchemaError",
    "StoreError",
    "StoreUnavailableError",
    "ToolArgumentError",
    "TransientError",
    "UnsupportedError",
    "UsageError",
]

class MnemoflowError(Exception):
    """Root of every error mnemoflow raises on purpose; ``code`` names its kind, stably."""

    code: ClassVar[str] = "mnemoflow"


class ConfigError(MnemoflowError, ValueError):
    """Raised when a setting, an environment variable, a CLI argument or a run's input is invalid."""

    code = "config"


class PreconditionError(ConfigError):
    """Raised before a run's first step when what it needs is not there (a graph's ``requires:``), naming what
    is missing and what exists."""

    code = "precondition"


class UsageError(MnemoflowError, ValueError):
    """Raised when a function is called with arguments it cannot take, or an object is used outside its context."""

    code = "usage"


class UnsupportedError(MnemoflowError, NotImplementedError):
    """Raised by an operation an object does not offer (the Neo4j checkpointer's synchronous methods)."""

    code = "unsupported"


class EmbeddingError(MnemoflowError):
    """Raised when an embedder fails or returns vectors of an unexpected shape."""

    code = "embedding"


class GraphSpecError(MnemoflowError, ValueError):
    """Raised when a graph file is invalid; ``problems`` lists every problem found, each with its place."""

    code = "graph-spec"

    def __init__(self, problems: list[Any]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(problem) for problem in problems))


class RegistrationError(MnemoflowError, ValueError):
    """Raised when a node, router, state model or tool is registered with a bad name, fields or signature."""

    code = "registration"


class NodeError(MnemoflowError):
    """Raised when a node or router misbehaves while a graph runs: a write it did not declare, an undeclared
    outcome, records it wrote that are gone."""

    code = "node"


class SandboxError(MnemoflowError, RuntimeError):
    """Raised when git or the sandbox fails around untrusted code (a worktree that cannot be made or diffed);
    failures of the code itself are results, not errors."""

    code = "sandbox"


class LLMError(MnemoflowError):
    """Raised when the language model could not give a usable answer."""

    code = "llm"


class TransientError(LLMError):
    """Raised by a backend for a fault worth retrying (429, 5xx, a timeout, a dropped connection); the gateway
    retries it and raises :class:`LLMUnavailableError` when the retries run out. ``retry_after`` is the server's
    ``Retry-After``, in seconds, when it sent one."""

    code = "llm-transient"

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class LLMUnavailableError(LLMError, ConnectionError):
    """Raised when 429s, 5xx, timeouts or dropped connections outlast the gateway's retries."""

    code = "llm-unavailable"


class LLMTimeoutError(LLMError, TimeoutError):
    """Raised when a call, retries included, passes its total deadline."""

    code = "llm-timeout"


class LLMRequestError(LLMError, ValueError):
    """Raised at once when the server refuses a request with a 4xx other than 429 (its message included)."""

    code = "llm-request"


class ReplyFormatError(LLMError, ValueError):
    """Raised when a reply holds no JSON value where one was asked for; the gateway asks again once."""

    code = "llm-reply-format"


class LLMOutputError(LLMError, ValueError):
    """Raised when a reply still does not validate after the re-ask; ``raw_replies`` holds what came back."""

    code = "llm-output"

    def __init__(self, message: str, raw_replies: list[str]) -> None:
        self.raw_replies = raw_replies
        super().__init__(message)


class ToolArgumentError(LLMError, ValueError):
    """Raised by ``Tool.parse`` when a call's arguments are not JSON, not an object, or do not validate (model-readable)."""

    code = "llm-tool-arguments"


class StoreError(MnemoflowError):
    """Raised for any failure reported by a memory store."""

    code = "store"


class StoreUnavailableError(StoreError, ConnectionError):
    """Raised when the database cannot be reached, or stopped answering and the driver's retries ran out."""

    code = "store-unavailable"


class SchemaError(StoreError):
    """Raised when the stored schema (version, embedding model or dimension) does not match this code."""

    code = "store-schema"


class InvalidNameError(StoreError, ValueError):
    """Raised when a label, relationship type or property key is unregistered or not a safe identifier."""

    code = "invalid-name"


class InvalidNamespaceError(StoreError, ValueError):
    """Raised when a namespace is empty, too long or contains control characters."""

    code = "invalid-namespace"


class InvalidRecordError(StoreError, ValueError):
    """Raised when a record's properties cannot be stored and read back faithfully (NaN, non-JSON values)."""

    code = "invalid-record"


class InvalidQueryError(StoreError, ValueError):
    """Raised when an argument of a read (k, depth, direction, ids, filter values) is out of range."""

    code = "invalid-query"


class EmbeddingDimensionError(StoreError, ValueError):
    """Raised when a vector's length differs from the dimension of the index it is written to or searched in."""

    code = "embedding-dimension"


class MissingEndpointError(StoreError, LookupError):
    """Raised when a relationship names a source or target node that does not exist in its namespace."""

    code = "missing-endpoint"


class ConflictError(StoreError, ValueError):
    """Raised when an upsert would change what an existing id is (a node's kind, a relationship's type or ends),
    or a record claimed as new already exists."""

    code = "conflict"
