"""Task Memory Engine: a task forest per conversation, TRIM intents and revision propagation (``tme.*``)."""

from mnemoflow.nodes.tme import agents as _agents  # noqa: F401  (registers the offline handlers)
from mnemoflow.nodes.tme import turn as _turn  # noqa: F401  (registers the tme.* nodes)
from mnemoflow.nodes.tme.forest import Forest, ForestError, TaskNode, slot_key
from mnemoflow.nodes.tme.memory import Conversation, SessionConflictError, load_conversation

__all__ = ["Conversation", "Forest", "ForestError", "SessionConflictError", "TaskNode", "load_conversation", "slot_key"]
