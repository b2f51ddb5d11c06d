"""The state of a G-Memory task run: the team's state, plus what retrieval found and what evolution learned."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from mnemoflow.nodes.registry import state_model
from mnemoflow.nodes.team.agents import TeamState

__all__ = ["Candidate", "SelectedInsight", "TaskState", "Trajectory"]


class Candidate(BaseModel):
    """A past query retrieval considers."""

    id: str
    """The query's record id."""
    task: str
    """The past task's text."""
    status: str
    """``resolved`` or ``failed``."""
    similarity: float = 0.0
    """Cosine between its task and the new one."""
    relevance: float | None = None
    """The model's 1-10 rating, for the successes it rated."""
    key_steps: list[str] = Field(default_factory=list)
    """How the past task was approached, one line per step."""
    fail_reason: str = ""
    """The likely mistake, for a failure."""


class SelectedInsight(BaseModel):
    """An insight retrieval hands the team."""

    id: str
    """The insight's record id."""
    text: str
    """The rule."""
    support: int
    """How many of the related queries support it."""
    score: int
    """Its score when it was read (the sum of its credits)."""
    via: Literal["support", "derived"] = "support"
    """How retrieval reached it: supported by a query found for the task, or only one ``DERIVED_FROM`` link away
    from such an insight (the insight graph's hop)."""


class Trajectory(BaseModel):
    """A past query's interaction, condensed by the model to what matters for the new task."""

    query_id: str
    """The past query's record id."""
    task: str
    """The past task's text."""
    status: str
    """``resolved`` or ``failed``."""
    key_steps: list[str] = Field(default_factory=list)
    """The past task's key steps, as stored."""
    utterances: list[str] = Field(default_factory=list)
    """``speaker -> addressee: message`` lines the model kept, in order."""


@state_model("gmemory.TaskState")
class TaskState(TeamState):
    """A team's task with G-Memory around it: retrieve -> act (the team) -> evolve."""

    task_key: str = ""
    """Names this task's query record; the run's thread id when empty (a resumed run keeps it)."""
    roles: list[str] = Field(default_factory=lambda: ["solver", "critic"])
    """The team's roles; each gets its own memory text."""
    task_vector: list[float] = Field(default_factory=list)
    """The task's embedding, made once by retrieval and reused by every later step."""
    seeds: list[str] = Field(default_factory=list)
    """Ids of the past queries most similar to the task (the vector search's hits)."""
    related: list[str] = Field(default_factory=list)
    """Ids of the seeds and the queries reached from them over ``SIMILAR`` links, seeds first."""
    successes: list[Candidate] = Field(default_factory=list)
    """Past resolved queries chosen for the team."""
    failures: list[Candidate] = Field(default_factory=list)
    """Past failed queries chosen for the team."""
    insights: list[SelectedInsight] = Field(default_factory=list)
    """Insights chosen for the team, by support then score; evolution credits these."""
    role_insights: dict[str, list[str]] = Field(default_factory=dict)
    """Per role, the insights rewritten for it (empty unless projection ran)."""
    trajectories: list[Trajectory] = Field(default_factory=list)
    """The chosen queries' interactions, condensed for the task."""
    query_id: str = ""
    """The id of the query this task was recorded as."""
    key_steps: list[str] = Field(default_factory=list)
    """This task's key steps, as the model summarized them."""
    fail_reason: str = ""
    """This task's likely mistake, when it failed."""
    evolution: dict[str, Any] = Field(default_factory=dict)
    """What evolution did: credits applied, insights pruned, revision or merge run, similarity links, the lesson
    learned."""
    errors: list[str] = Field(default_factory=list)
    """Model replies that could not be read, each with the node that asked and the fallback it took."""

    def with_evolution(self, step: str, report: Any) -> dict[str, Any]:
        """The state update that files ``report`` under ``step`` in :attr:`evolution`, keeping the other steps'."""
        return {"evolution": {**self.evolution, step: report}}
