"""L2MAC: long outputs built instruction by instruction over a versioned file store (``l2mac.*``)."""

from mnemoflow.nodes.l2mac import control as _control  # noqa: F401  (registers the l2mac.* nodes)
from mnemoflow.nodes.l2mac import offline as _offline  # noqa: F401  (registers the offline handlers)
from mnemoflow.nodes.l2mac.control import L2macState
from mnemoflow.nodes.l2mac.files import Project, load_project

__all__ = ["L2macState", "Project", "load_project"]
