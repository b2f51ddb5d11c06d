"""Prefect flows: run a graph with each node a task, ingest a text, maintain memory on a schedule.

Deploy them with ``prefect deploy --all`` from the repository root (see ``prefect.yaml`` and the README). The
flows (and Prefect) load when first used.
"""

import typing

from mnemoflow import lazy

if typing.TYPE_CHECKING:
    from mnemoflow.flows.ingest import ingest
    from mnemoflow.flows.maintain import maintain_memory
    from mnemoflow.flows.run import run_graph

__getattr__, __dir__ = lazy.members(
    __name__,
    {"ingest": "mnemoflow.flows.ingest", "maintain_memory": "mnemoflow.flows.maintain", "run_graph": "mnemoflow.flows.run"},
)

__all__ = ["ingest", "maintain_memory", "run_graph"]
