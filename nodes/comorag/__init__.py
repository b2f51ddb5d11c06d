"""ComoRAG: a three-layer index of a long text and question answering by probing cycles (``comorag.*``).

:mod:`mnemoflow.nodes.comorag.model` says what is stored, :mod:`mnemoflow.nodes.comorag.ingest` how a book is
indexed and :mod:`mnemoflow.nodes.comorag.qa` how a question is answered.
"""
