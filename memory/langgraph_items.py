"""How a LangGraph store item is kept as a mnemoflow record, and the checks LangGraph's stores apply in Python.

Each item is one ``StoreItem`` node in the mnemoflow namespace the store was opened on. Its id is
``stable_id("StoreItem", [labels...], key)``: the namespace tuple stays a list inside the hashed JSON, so
``("a", "b")`` key ``"c"`` and ``("a",)`` key ``"b/c"`` never share an id. Properties:

- ``path``: the namespace tuple as a JSON list; ``ns_0`` .. ``ns_{n-1}``: its labels, one property each, so that a
  prefix is an equality filter the store runs in its query; ``ns_depth``: the number of labels.
- ``key``: the item's key; ``value``: the item's dict, any JSON; ``v_<key>``: each of its top-level strings and
  numbers under an identifier key, so that a search filter's plain equalities run in the store's query too.
- ``expires_at`` (Unix epoch seconds) and ``ttl_minutes`` when a TTL applies: ``GraphStore.delete_expired`` sweeps
  them, and every read skips an expired item before a sweep.

``text`` is the indexed fields' text (else a short JSON of the value): what keyword search and the UI show.
``embedding`` is one vector of the indexed fields' text joined. ``created_at``/``updated_at`` are the record's.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from langgraph.store.base import Item, MatchCondition, get_text_at_path, tokenize_path

from mnemoflow.errors import InvalidQueryError, InvalidRecordError
from mnemoflow.memory.records import JsonScalar, NodeRecord, stable_id

__all__ = [
    "KIND",
    "TEXT_CHARS",
    "expires_at",
    "index_text",
    "item_from_record",
    "item_id",
    "item_record",
    "is_expired",
    "matches_filter",
    "matches_namespace",
    "prefix_where",
    "value_where",
]

KIND = "StoreItem"
"""The kind of an item's record (registered with the memory layer's own kinds in :mod:`~mnemoflow.memory.names`)."""
TEXT_CHARS = 2000
"""Most characters of an item's ``text`` (the JSON of a value without indexed text is cut here)."""
_OPERATORS = frozenset({"$eq", "$ne", "$gt", "$gte", "$lt", "$lte"})
_VALUE_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,60}")
"""A value's key kept as a ``v_<key>`` property: an identifier the store accepts once prefixed (63 characters)."""


def item_id(namespace: Sequence[str], key: str) -> str:
    """The record id of the item at ``namespace``/``key``."""
    return stable_id(KIND, list(namespace), key)


def prefix_where(prefix: Sequence[str], *, wildcards: bool = False) -> dict[str, JsonScalar]:
    """The equality filters that keep the items under ``prefix``; with ``wildcards`` a label ``"*"`` matches any
    label (as in ``list_namespaces``), else it is literal (as in ``search``)."""
    return {f"ns_{position}": label for position, label in enumerate(prefix) if not (wildcards and label == "*")}


def value_where(filter: Mapping[str, Any] | None) -> dict[str, JsonScalar]:
    """The equalities of ``filter`` the store can test itself (a top-level key, plain or ``{"$eq": ...}``, equal to a
    string or a number: :func:`item_record` keeps those of each value as ``v_<key>`` properties), so a search reads
    only the items that may pass; the whole filter is still applied to what it reads."""
    where: dict[str, JsonScalar] = {}
    for key, wanted in (filter or {}).items():
        operand = wanted["$eq"] if isinstance(wanted, dict) and list(wanted) == ["$eq"] else wanted
        if _searchable(key, operand):
            where[f"v_{key}"] = operand
    return where


def _searchable(key: object, value: object) -> bool:
    """Whether a top-level value is kept as a ``v_<key>`` property: an identifier key short enough for the prefix, a
    string or a number the stores compare exactly (never a boolean: JSON's true is not 1)."""
    if not isinstance(key, str) or not _VALUE_KEY.fullmatch(key):
        return False
    if isinstance(value, str):
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    return isinstance(value, float) and math.isfinite(value)


def index_text(value: Mapping[str, Any], fields: Sequence[str]) -> str:
    """The text of ``value`` at each field path (LangGraph's path syntax: ``a.b``, ``arr[*].x``, ``$``), joined by
    newlines in field order; empty when no field is present."""
    texts: list[str] = []
    for field in fields:
        texts += get_text_at_path(value, field if field == "$" else tokenize_path(field))
    return "\n".join(texts)


def expires_at(now: float, ttl_minutes: float) -> float:
    """The epoch second an item written or read at ``now`` expires with a TTL of ``ttl_minutes``."""
    return now + ttl_minutes * 60.0


def item_record(
    store_namespace: str,
    namespace: Sequence[str],
    key: str,
    value: Mapping[str, Any],
    *,
    text: str,
    embedding: list[float] | None,
    ttl_minutes: float | None,
    now: float,
) -> NodeRecord:
    """The record of one put (see the module docstring for its properties)."""
    properties: dict[str, Any] = {
        "path": list(namespace),
        **{f"ns_{position}": label for position, label in enumerate(namespace)},
        "ns_depth": len(namespace),
        "key": key,
        "value": dict(value),
        **{f"v_{name}": item for name, item in value.items() if _searchable(name, item)},
    }
    if ttl_minutes is not None:
        properties["ttl_minutes"] = ttl_minutes
        properties["expires_at"] = expires_at(now, ttl_minutes)
    if not text:
        text = json.dumps(dict(value), ensure_ascii=False, sort_keys=True)[:TEXT_CHARS]
    return NodeRecord(
        id=item_id(namespace, key),
        namespace=store_namespace,
        kind=KIND,
        properties=properties,
        text=text,
        embedding=embedding,
    )


def item_from_record(record: NodeRecord) -> Item:
    """The LangGraph item a ``StoreItem`` record holds."""
    properties = record.properties
    path, key, value = properties.get("path"), properties.get("key"), properties.get("value")
    if record.kind != KIND or not isinstance(path, list) or not isinstance(key, str) or not isinstance(value, dict):
        raise InvalidRecordError(
            f"record {record.id!r} of kind {record.kind!r} in namespace {record.namespace!r} is not a LangGraph store "
            "item (a StoreItem with a path list, a key string and a value object)"
        )
    assert record.created_at is not None and record.updated_at is not None, "the store sets both timestamps"
    return Item(
        value=value, key=key, namespace=tuple(path), created_at=record.created_at, updated_at=record.updated_at
    )


def is_expired(record: NodeRecord, now: float) -> bool:
    """Whether the record's TTL has run out (as ``GraphStore.delete_expired`` sees it)."""
    expiry = record.properties.get("expires_at")
    return isinstance(expiry, int | float) and not isinstance(expiry, bool) and expiry <= now


def matches_namespace(condition: MatchCondition, namespace: tuple[str, ...]) -> bool:
    """Whether ``namespace`` starts (``prefix``) or ends (``suffix``) with the condition's path, ``"*"`` matching any
    label; as InMemoryStore matches."""
    path = tuple(condition.path)
    if len(namespace) < len(path):
        return False
    if condition.match_type == "prefix":
        pairs = zip(namespace, path, strict=False)
    elif condition.match_type == "suffix":
        pairs = zip(reversed(namespace), reversed(path), strict=False)
    else:
        raise InvalidQueryError(f"match type {condition.match_type!r} must be 'prefix' or 'suffix'")
    return all(wanted == "*" or label == wanted for label, wanted in pairs)


def matches_filter(value: Mapping[str, Any], filter: Mapping[str, Any] | None) -> bool:
    """Whether an item's value passes a search filter, with InMemoryStore's semantics: each top-level key equals the
    filter's value (dicts compared key by key, lists element by element), or passes every operator of a dict of
    ``$eq``, ``$ne``, ``$gt``, ``$gte``, ``$lt``, ``$lte``. Unlike InMemoryStore, an order comparison against a
    missing value or one of another type does not match (InMemoryStore raises); an unknown operator raises
    ``InvalidQueryError``."""
    return all(_compare(value.get(key), wanted, key) for key, wanted in (filter or {}).items())


def _compare(found: Any, wanted: Any, key: str) -> bool:
    if isinstance(wanted, dict):
        if any(isinstance(name, str) and name.startswith("$") for name in wanted):
            return all(_apply(found, operator, operand, key) for operator, operand in wanted.items())
        return isinstance(found, dict) and all(_compare(found.get(name), item, key) for name, item in wanted.items())
    if isinstance(wanted, list | tuple):
        return (
            isinstance(found, list | tuple)
            and len(found) == len(wanted)
            and all(_compare(left, right, key) for left, right in zip(found, wanted, strict=True))
        )
    return _equal(found, wanted)


def _equal(found: Any, wanted: Any) -> bool:
    """JSON's equality: as Python's, except that a boolean never equals a number (``true`` is not ``1``), as the
    stores compare them."""
    if isinstance(found, bool) != isinstance(wanted, bool) and (_is_number(found) or _is_number(wanted)):
        return False
    return bool(found == wanted)


def _apply(found: Any, operator: str, operand: Any, key: str) -> bool:
    if operator not in _OPERATORS:
        raise InvalidQueryError(
            f"filter on {key!r}: operator {operator!r} is not supported; use one of {', '.join(sorted(_OPERATORS))}"
        )
    if operator == "$eq":
        return _equal(found, operand)
    if operator == "$ne":
        return not _equal(found, operand)
    comparable = (_is_number(found) and _is_number(operand)) or (isinstance(found, str) and isinstance(operand, str))
    if not comparable:
        return False
    if operator == "$gt":
        return bool(found > operand)
    if operator == "$gte":
        return bool(found >= operand)
    if operator == "$lt":
        return bool(found < operand)
    return bool(found <= operand)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
