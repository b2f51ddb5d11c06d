"""Variants of the shipped graphs for tests and benchmarks: the same file with some text replaced."""

from __future__ import annotations

from pathlib import Path

from mnemoflow.graphs import LoadedGraph, load_graph

__all__ = ["library_variant"]


def library_variant(name: str, folder: Path, replace: dict[str, str] | None = None) -> LoadedGraph:
    """The library graph ``name``, or a copy of its file in ``folder`` with each ``old`` text replaced by ``new``
    (smaller limits, another config); an ``old`` text the file does not hold is an error, not a silent no-op."""
    if not replace:
        return load_graph(name)
    text = Path(load_graph(name).path).read_text(encoding="utf-8")
    for old, new in replace.items():
        if old not in text:
            raise ValueError(f"graph {name!r} has no text {old!r} to replace")
        text = text.replace(old, new)
    path = folder / f"{name}-variant.yaml"
    path.write_text(text, encoding="utf-8")
    return load_graph(path)
