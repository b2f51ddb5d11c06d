"""ComoRAG: a three-layer index of a long text and question answering by probing cycles.

See ``/shared/reference/comorag.md`` for the mechanism; :mod:`nodes.comorag.model` for what is stored.
"""

from nodes.comorag import model

__all__ = ["model"]
