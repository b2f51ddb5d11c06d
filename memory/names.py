"""The registry of node kinds (labels) and relationship types, and the rules for names and namespaces.

Labels and relationship types are the only text a backend may splice into a query, so every name is
checked twice: it must be a plain identifier, and it must be registered. Mechanisms extend the registry
when they are imported (``REGISTRY.register_kind("Chunk", embedded=True)``).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from mnemoflow.errors import InvalidNameError, InvalidNamespaceError

__all__ = [
    "REGISTRY",
    "KindSpec",
    "NameRegistry",
    "validate_identifier",
    "validate_namespace",
]

_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,62}")
_RESERVED = frozenset({"MfNode", "MfMeta"})
MAX_NAMESPACE_LENGTH = 200


def validate_identifier(name: object, *, what: str = "name") -> str:
    """Return ``name`` if it is a plain identifier (a letter, then letters, digits or ``_``; 63 at most)."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise InvalidNameError(
            f"{what} {name!r} is not allowed: use a letter followed by letters, digits or '_' (63 characters at most)"
        )
    return name


def validate_namespace(namespace: object) -> str:
    """Return ``namespace`` if it is a non-blank string of printable characters, 200 at most."""
    if not isinstance(namespace, str) or not namespace.strip():
        raise InvalidNamespaceError(f"namespace {namespace!r} is empty: every record and every read needs a namespace")
    if len(namespace) > MAX_NAMESPACE_LENGTH:
        raise InvalidNamespaceError(
            f"namespace {namespace[:40]!r}... is {len(namespace)} characters long; the limit is {MAX_NAMESPACE_LENGTH}"
        )
    if any(not character.isprintable() for character in namespace):
        raise InvalidNamespaceError(f"namespace {namespace!r} contains control characters")
    return namespace


@dataclass(frozen=True)
class KindSpec:
    """A registered node kind."""

    name: str
    """The label written to the database."""
    embedded: bool = False
    """Whether nodes of this kind carry embeddings; such kinds get a vector index."""
    description: str = ""


class NameRegistry:
    """Node kinds and relationship types a store may write; thread-safe, extended at import time."""

    def __init__(self) -> None:
        self._kinds: dict[str, KindSpec] = {}
        self._relationship_types: set[str] = set()
        self._lock = threading.Lock()

    def register_kind(self, name: str, *, embedded: bool = False, description: str = "") -> KindSpec:
        """Register a node kind; registering the same name again with other options is an error."""
        validate_identifier(name, what="node kind")
        if name in _RESERVED:
            raise InvalidNameError(f"node kind {name!r} is reserved by mnemoflow; choose another name")
        spec = KindSpec(name, embedded, description)
        with self._lock:
            existing = self._kinds.get(name)
            if existing is not None and (existing.embedded != embedded):
                raise InvalidNameError(
                    f"node kind {name!r} is already registered with embedded={existing.embedded}; "
                    f"cannot register it again with embedded={embedded}"
                )
            self._kinds.setdefault(name, spec)
            return self._kinds[name]

    def register_relationship(self, name: str) -> str:
        """Register a relationship type (conventionally UPPER_SNAKE_CASE)."""
        validate_identifier(name, what="relationship type")
        with self._lock:
            self._relationship_types.add(name)
        return name

    def kind(self, name: object) -> KindSpec:
        """Return the spec of a registered kind, or raise :class:`InvalidNameError` naming the known ones."""
        validate_identifier(name, what="node kind")
        assert isinstance(name, str)
        spec = self._kinds.get(name)
        if spec is None:
            raise InvalidNameError(
                f"node kind {name!r} is not registered; known kinds: {', '.join(sorted(self._kinds)) or 'none'}. "
                "Register it with REGISTRY.register_kind()"
            )
        return spec

    def relationship_type(self, name: object) -> str:
        """Return a registered relationship type, or raise :class:`InvalidNameError`."""
        validate_identifier(name, what="relationship type")
        assert isinstance(name, str)
        if name not in self._relationship_types:
            raise InvalidNameError(
                f"relationship type {name!r} is not registered; known types: "
                f"{', '.join(sorted(self._relationship_types)) or 'none'}. Register it with REGISTRY.register_relationship()"
            )
        return name

    def relationship_types(self, names: Iterable[object]) -> list[str]:
        """Validate several relationship types at once."""
        return [self.relationship_type(name) for name in names]

    @property
    def kinds(self) -> list[KindSpec]:
        """All registered kinds, sorted by name."""
        with self._lock:
            return sorted(self._kinds.values(), key=lambda spec: spec.name)

    @property
    def relationship_type_names(self) -> list[str]:
        """All registered relationship types, sorted."""
        with self._lock:
            return sorted(self._relationship_types)


REGISTRY = NameRegistry()
"""The default registry; the memory layer's own kinds are registered below, mechanisms add theirs."""

REGISTRY.register_kind("Document", description="A source text, e.g. a book or a file.")
REGISTRY.register_kind("Chunk", embedded=True, description="A passage of a document, in reading order.")
REGISTRY.register_kind("Run", description="One run of a graph: its graph, thread, status and trace.")
REGISTRY.register_kind(
    "StoreItem", embedded=True, description="An item of a LangGraph application's long-term memory (MnemoflowStore)."
)
REGISTRY.register_relationship("PART_OF")
REGISTRY.register_relationship("NEXT")
