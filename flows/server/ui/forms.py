"""A graph's start form and a checkpoint's editable fields, read from the graph's state model.

The start form lists the graph's declared inputs first, then the state's other fields (a run may set them too:
``max_cycles``, ``options``...). Each field gets the widget its type asks for: a line for a short string or an
identifier, a text area for free text, number inputs, a checkbox, and JSON for lists, dicts and models. A fork edits
a checkpoint's values as exact JSON, field by field, so only values small enough to read and edit are offered.
"""

from __future__ import annotations

import ast
import enum
import inspect
import json
import textwrap
import types
from collections.abc import Mapping
from functools import lru_cache
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from annotated_types import MaxLen
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticSerializationError, to_jsonable_python

from mnemoflow.graphs.loader import LoadedGraph
from mnemoflow.nodes.registry import REGISTRY, Registry

__all__ = ["EDITABLE_JSON_BYTES", "SHORT_TEXT_CHARS", "FieldType", "editable_values", "field_type", "form_fields"]

FieldType = Literal["string", "text", "integer", "number", "boolean", "json"]

SHORT_TEXT_CHARS = 300
"""A string field bounded to at most this many characters (``max_length``) is a one-line input; others are text."""

EDITABLE_JSON_BYTES = 4096
"""A checkpoint value is offered for editing when its JSON is at most this many bytes (a vector or a book is not)."""


def _without_none(annotation: Any) -> tuple[Any, bool]:
    """``annotation`` without ``None`` in a union (``int | None`` is ``int``), and whether ``None`` was there."""
    if get_origin(annotation) in (Union, types.UnionType):
        members = [member for member in get_args(annotation) if member is not type(None)]
        if len(members) == 1:
            return members[0], len(members) < len(get_args(annotation))
    return annotation, False


def field_type(name: str, info: FieldInfo) -> FieldType:
    """The widget a state field needs: its annotation's type, ``None`` left out of a union.

    A string is ``string`` (one line) when it is an identifier (its name ends in ``id``) or bounded to
    :data:`SHORT_TEXT_CHARS`; else ``text``. A ``Literal`` or an enum of strings is a ``string``; anything that is not
    a plain scalar (lists, dicts, models, unions) is ``json``.
    """
    annotation, _ = _without_none(info.annotation)
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if annotation is bool:
        return "boolean"
    if annotation is int:
        return "integer"
    if annotation is float:
        return "number"
    if get_origin(annotation) is Literal or (isinstance(annotation, type) and issubclass(annotation, enum.Enum)):
        return "string"
    if annotation is str:
        bound = next((item.max_length for item in info.metadata if isinstance(item, MaxLen)), None)
        short = bound is not None and bound <= SHORT_TEXT_CHARS
        return "string" if short or name.lower().endswith("id") else "text"
    return "json"


@lru_cache(maxsize=64)
def _attribute_docstrings(model: type[BaseModel]) -> dict[str, str]:
    """The docstrings written under a model's fields (``text: str`` then ``\"\"\"The input text.\"\"\"``), by field,
    from the model's source and its bases'; empty when the source cannot be read."""
    found: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or cls is BaseModel:
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for statement, following in zip(body, body[1:], strict=False):
            if (
                isinstance(statement, ast.AnnAssign)
                and isinstance(statement.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                found[statement.target.id] = " ".join(following.value.value.split())
    return found


def _default(info: FieldInfo) -> Any:
    """A field's default as JSON; ``None`` for a required field or a default JSON cannot hold."""
    if info.is_required():
        return None
    try:
        return to_jsonable_python(info.get_default(call_default_factory=True))
    except PydanticSerializationError:
        return None


def form_fields(graph: LoadedGraph, registry: Registry = REGISTRY) -> list[dict[str, Any]]:
    """The fields of ``graph``'s start form: its declared inputs first (in the order the graph file gives them), then
    the state's other fields. Each: ``name``, ``type`` (:data:`FieldType`), ``required``, ``input`` (declared in the
    graph's ``input:``), ``default`` (JSON) and ``description``."""
    model = registry.states[graph.spec.state]
    declared = list(graph.spec.input)
    docstrings = _attribute_docstrings(model)
    order = [name for name in declared if name in model.model_fields]
    order += [name for name in model.model_fields if name not in order]
    fields = []
    for name in order:
        info = model.model_fields[name]
        fields.append(
            {
                "name": name,
                "type": field_type(name, info),
                "required": name in declared or info.is_required(),
                "input": name in declared,
                "default": _default(info),
                "description": info.description or docstrings.get(name, ""),
            }
        )
    return fields


def editable_values(values: Mapping[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    """The fields of a checkpoint's ``values`` a fork may edit, as their exact JSON: the state's fields whose JSON is
    at most :data:`EDITABLE_JSON_BYTES` bytes (a value JSON cannot hold is left out)."""
    editable: dict[str, Any] = {}
    for name, value in values.items():
        if name not in model.model_fields:
            continue
        try:
            exact = to_jsonable_python(value)
            size = len(json.dumps(exact, ensure_ascii=False, allow_nan=False).encode("utf-8"))
        except (PydanticSerializationError, ValueError, TypeError):
            continue
        if size <= EDITABLE_JSON_BYTES:
            editable[name] = exact
    return editable
