"""What a run's result is: the graph's declared ``output`` fields of its final state, with vectors left out.

Embeddings are state too (ComoRAG keeps a question's query vectors), and nobody reads 384 floats: wherever a
state is shown (the CLI, a Prefect result or artifact, the UI), a vector stands as ``<vector of 384 floats>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from mnemoflow.graphs.loader import LoadedGraph

__all__ = ["MIN_VECTOR_LENGTH", "output_values", "run_outputs", "without_vectors"]

MIN_VECTOR_LENGTH = 16
"""A list of at least this many floats is taken for a vector."""


def without_vectors(value: Any) -> Any:
    """``value`` as plain JSON-ready data (models dumped), every vector inside it replaced by a short marker."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, Mapping):
        return {str(key): without_vectors(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        if len(value) >= MIN_VECTOR_LENGTH and all(isinstance(item, float) for item in value):
            return f"<vector of {len(value)} floats>"
        return [without_vectors(item) for item in value]
    return value


def output_values(graph: LoadedGraph, state: Mapping[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    """The declared output fields of a final ``state`` of the state ``model`` (every field when the graph declares
    none), as they are; a field no step wrote has its default."""
    names = graph.spec.output or list(state)
    fields = model.model_fields
    return {
        name: state[name] if name in state else fields[name].get_default(call_default_factory=True)
        for name in names
        if name in state or name in fields
    }


def run_outputs(graph: LoadedGraph, state: Mapping[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    """:func:`output_values`, vectors out: a run's result."""
    return {name: without_vectors(value) for name, value in output_values(graph, state, model).items()}
