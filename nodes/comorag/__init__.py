"""ComoRAG: a three-layer index of a long text and question answering by probing cycles (``comorag.*``).

- :mod:`~mnemoflow.nodes.comorag.model`: what is stored (the index of a book, the workspace of a question);
- :mod:`~mnemoflow.nodes.comorag.state`: the state of the ingestion graph and of the question graph;
- :mod:`~mnemoflow.nodes.comorag.agents`: what is said to the model and heard back, at index and question time;
- :mod:`~mnemoflow.nodes.comorag.ingest`: the nodes that index a book, with :mod:`~mnemoflow.nodes.comorag.chunking`,
  :mod:`~mnemoflow.nodes.comorag.clustering` and :mod:`~mnemoflow.nodes.comorag.knowledge`;
- :mod:`~mnemoflow.nodes.comorag.qa`: the nodes that answer a question, with
  :mod:`~mnemoflow.nodes.comorag.retrieval` (tri-layer retrieval, with :mod:`~mnemoflow.nodes.comorag.pagerank`,
  the veridical layer's graph) and :mod:`~mnemoflow.nodes.comorag.workspace` (the question's records).
"""
