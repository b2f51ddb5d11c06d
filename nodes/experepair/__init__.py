"""ExpeRepair: program repair with episodic demonstrations and semantic insights (``experepair.*``)."""

from mnemoflow.nodes.experepair import agents as _agents  # noqa: F401  (registers the offline handlers)
from mnemoflow.nodes.experepair import memory as _memory  # noqa: F401  (registers the record kinds)
from mnemoflow.nodes.experepair import repair as _repair  # noqa: F401  (registers the experepair.* nodes)
from mnemoflow.nodes.experepair.repair import RepairState

__all__ = ["RepairState"]
