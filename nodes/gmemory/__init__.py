"""G-Memory: hierarchical memory for multi-agent teams: insights, queries and interactions (``gmemory.*``)."""

from nodes.gmemory import evolve as _evolve  # noqa: F401  (registers the evolution nodes)
from nodes.gmemory import model as _model  # noqa: F401  (registers the kinds)
from nodes.gmemory import retrieve as _retrieve  # noqa: F401  (registers the retrieval nodes)
from nodes.gmemory import state as _state  # noqa: F401  (registers the state)
from nodes.gmemory.state import TaskState

__all__ = ["TaskState"]
