"""G-Memory: hierarchical memory for multi-agent teams: insights, queries and interactions (``gmemory.*``)."""

from mnemoflow.nodes.gmemory import evolve as _evolve  # noqa: F401  (registers the evolution nodes)
from mnemoflow.nodes.gmemory import model as _model  # noqa: F401  (registers the kinds)
from mnemoflow.nodes.gmemory import retrieve as _retrieve  # noqa: F401  (registers the retrieval nodes)
from mnemoflow.nodes.gmemory import state as _state  # noqa: F401  (registers the state)
from mnemoflow.nodes.gmemory.state import TaskState

__all__ = ["TaskState"]
