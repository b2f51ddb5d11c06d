"""The state of one TME turn (graph ``tme-turn``): the utterance in, the updated forest and the reply out.

The forest, the decomposition, the operations and the changes travel as JSON (``Forest.as_json()``, the models'
``model_dump()``), the shapes the turn record stores.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from mnemoflow.nodes.registry import state_model

__all__ = ["TurnState"]


@state_model("tme.TurnState")
class TurnState(BaseModel):
    """One turn: the utterance in, the updated forest and the reply out."""

    session: str = Field(min_length=1, max_length=200)
    """The conversation's id: the same id continues the same task memory."""
    utterance: str
    """What the user said this turn."""
    turn: int = 0
    """Turns saved before this one (this is turn ``turn + 1``)."""
    attempt: int = 0
    """How many times the turn has started (``tme.load`` counts): more than one when another turn of the session
    was saved while an earlier attempt ran, and this one started over on the session's new state."""
    conflict: str = ""
    """Why the last attempt's save was refused (another turn of the session was saved first); empty once the turn
    starts over or is saved. While it is set, ``tme.after_persist`` sends the turn back to ``tme.load``."""
    forest: dict[str, Any] = Field(default_factory=dict)
    """The conversation's task forest: as loaded, then as this turn changed it."""
    decomposition: dict[str, Any] = Field(default_factory=dict)
    """The task and substeps the utterance names (a ``Decomposition``)."""
    operations: list[dict[str, Any]] = Field(default_factory=list)
    """The TRIM operations the classification gave, in order (each an ``Operation``)."""
    changes: list[dict[str, Any]] = Field(default_factory=list)
    """What each applied operation and re-derivation did (each a forest ``Change``)."""
    stale: list[str] = Field(default_factory=list)
    """Slots this turn marked stale (revision propagation)."""
    deferred: list[str] = Field(default_factory=list)
    """Slots still stale after the re-derivation (its cap, or a reply without them): re-derived on a later turn."""
    errors: list[str] = Field(default_factory=list)
    """Operations refused (a missing slot, a cycle) or a classification that could not be read."""
    prompt: str = ""
    """The answer prompt, built from the task memory's current values."""
    response: str = ""
    """The reply to the user."""
