"""State values made fit to show: JSON-safe, and bounded however large the value is.

A run's record keeps its input, its outputs and, per step, the state fields the step wrote; a state may hold a
book's text, hundreds of records or a question's query vectors. :func:`preview` keeps what a reader needs and
replaces the rest by a marker, a one-key (or two-key) object the UI renders as a note:

``{"$vector": n}``
    a list or tuple of ``n`` numbers, at least :data:`VECTOR_MIN` of them (an embedding: nobody reads 384 floats).
``{"$text": "the first 500 characters", "$chars": n}``
    a string of ``n`` characters, longer than the limit (:data:`TEXT_CHARS`).
``{"$more": n}``
    the last item of a list whose first :data:`LIST_ITEMS` items are shown: ``n`` more were left out.
``"$more": n``
    a key of a mapping whose first :data:`DICT_KEYS` keys are shown: ``n`` more keys were left out.
``{"$deep": "TypeName"}``
    a list, mapping or model nested deeper than :data:`MAX_DEPTH` levels.
``{"$omitted": n}``
    (:func:`preview_bounded` only) the whole value, whose shortest preview still took ``n`` characters of JSON.

Pydantic models are dumped as JSON (``model_dump(mode="json")``) and shown like mappings; a float that JSON
cannot carry (NaN, infinity) and any other object is shown as its ``str()``, bounded like a string. State field
names never start with ``$``, so a marker cannot be taken for a field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

__all__ = ["DICT_KEYS", "LIST_ITEMS", "MAX_DEPTH", "TEXT_CHARS", "VECTOR_MIN", "json_chars", "preview", "preview_bounded"]

TEXT_CHARS = 500
"""A longer string is cut to this many characters."""
LIST_ITEMS = 20
"""A longer list shows this many items."""
DICT_KEYS = 40
"""A mapping with more keys shows this many."""
MAX_DEPTH = 6
"""Lists, mappings and models nested deeper are shown as their type's name."""
VECTOR_MIN = 32
"""A list of at least this many numbers is taken for a vector."""


@dataclass(frozen=True, slots=True)
class _Limits:
    """How much of a value a preview keeps."""

    text_chars: int = TEXT_CHARS
    list_items: int = LIST_ITEMS
    dict_keys: int = DICT_KEYS
    max_depth: int = MAX_DEPTH


_SHRINKING = (_Limits(), _Limits(200, 10, 20, 4), _Limits(80, 5, 10, 3), _Limits(30, 2, 5, 2))
"""The limits :func:`preview_bounded` tries in turn until the preview fits."""


def preview(value: Any) -> Any:
    """``value`` as JSON values, bounded for display; what was left out is marked (see the module docstring)."""
    return _preview(value, _SHRINKING[0], 0)


def preview_bounded(value: Any, max_chars: int, *, frame: int = 0) -> Any:
    """:func:`preview` of ``value`` whose JSON takes at most about ``max_chars`` characters.

    A preview too long is made again with shorter strings, fewer items and less depth; when even the shortest is
    too long, the value is ``{"$omitted": n}`` (``n`` the shortest preview's length). ``frame`` is how many levels
    of the value are a frame around the data (a table of fields, say) rather than data: they do not count towards
    the depth limit.
    """
    shown: Any = None
    for limits in _SHRINKING:
        shown = _preview(value, limits, -frame)
        size = json_chars(shown)
        if size <= max_chars:
            return shown
    return {"$omitted": size}


def json_chars(value: Any) -> int:
    """Length of ``value``'s JSON as the stores write it (compact, not ASCII-escaped)."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def _preview(value: Any, limits: _Limits, depth: int) -> Any:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return _text(value, limits)
    if isinstance(value, BaseModel | Mapping | list | tuple | set | frozenset):
        if depth >= limits.max_depth:
            return {"$deep": type(value).__name__}
        if isinstance(value, BaseModel):
            return _mapping(value.model_dump(mode="json"), limits, depth)
        if isinstance(value, Mapping):
            return _mapping(value, limits, depth)
        return _sequence(list(value), limits, depth)
    return _text(str(value), limits)


def _text(text: str, limits: _Limits) -> Any:
    return text if len(text) <= limits.text_chars else {"$text": text[: limits.text_chars], "$chars": len(text)}


def _mapping(mapping: Mapping[Any, Any], limits: _Limits, depth: int) -> dict[str, Any]:
    shown = {str(key): _preview(item, limits, depth + 1) for key, item in list(mapping.items())[: limits.dict_keys]}
    if len(mapping) > limits.dict_keys:
        shown["$more"] = len(mapping) - limits.dict_keys
    return shown


def _sequence(items: list[Any], limits: _Limits, depth: int) -> Any:
    if len(items) >= VECTOR_MIN and all(isinstance(item, int | float) and not isinstance(item, bool) for item in items):
        return {"$vector": len(items)}
    shown: list[Any] = [_preview(item, limits, depth + 1) for item in items[: limits.list_items]]
    if len(items) > limits.list_items:
        shown.append({"$more": len(items) - limits.list_items})
    return shown
