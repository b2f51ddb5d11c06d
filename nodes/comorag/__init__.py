"""ComoRAG: a three-layer index of a long text and question answering by probing cycles.

See ``/shared/reference/comorag.md`` for the mechanism; :mod:`mnemoflow.nodes.comorag.model` for what is stored and
:mod:`mnemoflow.nodes.comorag.ingest` for how a book is indexed. Importing this package registers the ``comorag.*``
nodes and the offline model's answers to their schemas.
"""

from mnemoflow.nodes.comorag import ingest, model, qa

__all__ = ["ingest", "model", "qa"]
