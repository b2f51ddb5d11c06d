"""mnemoflow's kernel: settings, logging, the exception tree and the CLI.

Only the exception tree is re-exported here, so ``import mnemoflow`` stays cheap; settings and logging are
imported from their modules.
"""

from mnemoflow.errors import (
    ConfigError,
    ConflictError,
    EmbeddingDimensionError,
    EmbeddingError,
    GraphSpecError,
    InvalidNameError,
    InvalidNamespaceError,
    InvalidQueryError,
    InvalidRecordError,
    LLMError,
    LLMOutputError,
    LLMRequestError,
    LLMTimeoutError,
    LLMUnavailableError,
    MissingEndpointError,
    MnemoflowError,
    NodeError,
    RegistrationError,
    SchemaError,
    StoreError,
    StoreUnavailableError,
)

__version__ = "0.1.0"

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
    "__version__",
]
