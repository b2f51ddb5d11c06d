"""Prefect flows: run a graph with each node a task, ingest a text, maintain memory on a schedule.

Deploy them with ``prefect deploy --all`` from the repository root (see ``prefect.yaml`` and the README).
"""

from mnemoflow.flows.ingest import ingest
from mnemoflow.flows.maintain import maintain_memory
from mnemoflow.flows.run import run_graph

__all__ = ["ingest", "maintain_memory", "run_graph"]
