"""The state of a G-Memory task run: the team's state, plus what retrieval found and what evolution learned."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from mnemoflow.nodes.registry import state_model
from mnemoflow.nodes.team.agents import TeamState

__all__ = ["Candidate", "SelectedInsight", "TaskState", "Trajectory"]


class Candidate(BaseModel):
    """A past query retrieval considers."""

    id: str
    task: str
    status: str
    """``resolved`` or ``failed``."""
    similarity: float = 0.0
    """Cosine between its task and the new one."""
    relevance: float | None = None
    """The model's 1-10 rating, for the successes it rated."""
    key_steps: list[str] = Field(default_factory=list)
    fail_reason: str = ""


class SelectedInsight(BaseModel):
    id: str
    text: str
    support: int
    """How many of the related queries support it."""
    score: int


class Trajectory(BaseModel):
    """A past query's interaction, condensed by the model to what matters for the new task."""

    query_id: str
    task: str
    status: str
    key_steps: list[str] = Field(default_factory=list)
    utterances: list[str] = Field(default_factory=list)
    """``speaker -> addressee: message`` lines the model kept, in order."""


@state_model("gmemory.TaskState")
class TaskState(TeamState):
    """A team's task with G-Memory around it: retrieve -> act (the team) -> evolve."""

    task_key: str = ""
    """Names this task's query record; the run's thread id when empty (a resumed run keeps it)."""
    roles: list[str] = Field(default_factory=lambda: ["solver", "critic"])
    task_vector: list[float] = Field(default_factory=list)
    """The task's embedding, made once by retrieval and reused by every later step."""
    seeds: list[str] = Field(default_factory=list)
    related: list[str] = Field(default_factory=list)
    successes: list[Candidate] = Field(default_factory=list)
    failures: list[Candidate] = Field(default_factory=list)
    insights: list[SelectedInsight] = Field(default_factory=list)
    role_insights: dict[str, list[str]] = Field(default_factory=dict)
    trajectories: list[Trajectory] = Field(default_factory=list)
    query_id: str = ""
    key_steps: list[str] = Field(default_factory=list)
    fail_reason: str = ""
    evolution: dict[str, Any] = Field(default_factory=dict)
    """What evolution did: credits applied, insights pruned, revision or merge run, similarity links."""
