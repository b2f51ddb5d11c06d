"""The state of an L2MAC run (graph ``l2mac``): the plan, the current instruction's context, every check that ran.

What outlives the run is in the store (:mod:`mnemoflow.nodes.l2mac.model`): the instruction registry and the files.
The state holds the control unit's working memory: the context of the current instruction and the counters that
bound it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from mnemoflow.nodes.registry import state_model

__all__ = ["L2macState", "Message"]

Message = dict[str, Any]
"""One chat message as the OpenAI API shapes it (role, content, tool calls)."""


@state_model("l2mac.L2macState")
class L2macState(BaseModel):
    """One L2MAC run: the plan, the current instruction's context, and every check that ran."""

    task: str = Field(min_length=1)
    """What to build; every instruction's fresh context starts with it."""
    instructions: list[str] = Field(default_factory=list)
    """The instruction registry; given as input it is used as is, otherwise the model plans it."""
    context_window: int = Field(16_000, ge=500)
    """The model's context window, in tokens as :func:`mnemoflow.nodes.tokens.count_tokens` counts them."""
    temperature: float = Field(0.0, ge=0, le=2)
    """The base sampling temperature; a detected loop raises it for a while."""
    k: int = 0
    """The current instruction (0-based)."""
    attempt: int = 0
    """Restarts of the current instruction after its context overflowed."""
    turn: int = 0
    """Model calls in the current attempt."""
    messages: list[Message] = Field(default_factory=list)
    """The current context."""
    summaries: list[str] = Field(default_factory=list)
    """One per completed instruction: what it built, for the instructions after it."""
    progress: str = ""
    """The summary of the current instruction's progress before its last restart."""
    sampling_temperature: float = 0.0
    """The temperature of the next model call: the base one, raised on a loop and decaying back after."""
    loops: int = 0
    """Turns on which a loop was detected."""
    context_tokens: int = 0
    """Tokens the current context and the step tools' schemas take."""
    peak_context_tokens: int = 0
    """The largest context sent to the model so far, in tokens."""
    outcome: Literal["", "complete", "fix", "continue"] = ""
    """What the last turn's tool calls came to: the step is complete, the checks failed, or carry on."""
    checks: list[dict[str, Any]] = Field(default_factory=list)
    """Every run of the checks: instruction, attempt, turn, passed, timed_out, counts, syntax and static errors, the
    checker."""
    tool_errors: list[str] = Field(default_factory=list)
    """Every tool error returned to the model, in order."""
    restarts: int = 0
    """Restarts after a context overflow, over the whole run."""
    files: list[str] = Field(default_factory=list)
    """The paths of the project's files when the run finished."""
    status: Literal["", "done"] = ""
    """``done`` once every instruction is complete."""
