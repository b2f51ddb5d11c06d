"""Budgets that fit the library graphs to the local small model, shared by the demo and the evaluation.

A capable endpoint runs the graphs as their files say. The local server's 135M model reads about 200 prompt
tokens/s and writes 20 to 40 tokens/s on 2 cores, so on it the demo and ``mnemoflow eval`` set these node
configurations (with :func:`~mnemoflow.graphs.with_node_config`) and inputs instead; both running the same ones
is what lets the evaluation's figures stand for what the demo shows.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SMALL_MODEL_BUDGETS", "SMALL_MODEL_INPUTS", "SMALL_MODEL_RETRIEVAL"]

SMALL_MODEL_RETRIEVAL: dict[str, Any] = {
    "ver_top_k": 4,
    "sem_top_k": 2,
    "epi_top_k": 2,
    "ver_tokens": 600,
    "sem_tokens": 200,
    "epi_tokens": 200,
}
SMALL_MODEL_BUDGETS: dict[str, dict[str, dict[str, Any]]] = {
    "comorag-ingest": {"semantic": {"max_levels": 2, "max_tokens": 100}, "episodes": {"max_tokens": 100}},
    "comorag-qa": {
        "retrieve": SMALL_MODEL_RETRIEVAL,
        "probe_worker": SMALL_MODEL_RETRIEVAL,
        "answer": {"ver_tokens": 600, "sem_tokens": 200, "epi_tokens": 200, "history_tokens": 150},
    },
}
"""On the local model: the summaries at the paper's 100 tokens, two levels of them, a sixth of the question-time
contexts and (below) one probing cycle, so a run ends in minutes, not an hour."""
SMALL_MODEL_INPUTS: dict[str, dict[str, Any]] = {"comorag-ingest": {"kg": False}, "comorag-qa": {"max_cycles": 1}}
"""No knowledge graph (the 135M model extracted 0 entities and 0 facts from the story's 12 chunks, in 60% of the
indexing time), and one probing cycle."""
