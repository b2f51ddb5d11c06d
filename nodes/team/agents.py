"""The team's nodes: solve, the environment step, critique, the routers and the final check
(``graphs/library/team.yaml``). The environment itself (checks, rewards, observations) is ``environment.py``."""

from __future__ import annotations

import re
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from mnemoflow.llm import offline_handler
from mnemoflow.llm.gateway import Message as ChatMessage
from mnemoflow.nodes.context import RunContext
from mnemoflow.nodes.registry import NoConfig, node, router, state_model
from mnemoflow.nodes.team.environment import Check, Step, step, verdict

__all__ = ["Critique", "Message", "TeamState"]

ROLES = ("solver", "critic")


class Message(BaseModel):
    """One utterance of the team: who said it, to whom, in which round."""

    model_config = ConfigDict(frozen=True)

    speaker: str
    addressee: str
    text: str
    round: int


@state_model("team.TeamState")
class TeamState(BaseModel):
    """A task for the team and what it did with it."""

    task: str = Field(min_length=1)
    expected: str = ""
    """What the environment looks for in the solution (case-insensitive), when no ``goal`` is set; with neither,
    no action reaches a goal and the final check passes any non-empty solution."""
    goal: Check | None = None
    """A declarative check of the solution (number, exact, choice, contains_all, regex, json_equals) that the
    environment applies to every action; it takes the place of ``expected``."""
    memory: dict[str, str] = Field(default_factory=dict)
    """Text handed to each role (solver, critic) before it acts; empty without a memory around the team."""
    max_rounds: int = Field(2, ge=1, le=10)
    messages: list[Message] = Field(default_factory=list)
    steps: list[Step] = Field(default_factory=list)
    """The solver's proposals as environment steps: action, observation, reward, in order."""
    round: int = 0
    solution: str = ""
    approved: bool = False
    """Whether the critic approved the last solution it saw (it does not see one that reached the goal)."""
    success: bool = False
    feedback: str = ""
    """The environment's verdict, in words."""


class Critique(BaseModel):
    REPLY_TOKENS: ClassVar[int] = 400
    model_config = ConfigDict(extra="forbid")

    approve: bool
    feedback: str = Field("", max_length=2000)


SOLVER_SYSTEM = "You are the solver of a two-agent team. Solve the task; when the critic objects, revise. Reply with the solution only."
CRITIC_SYSTEM = 'You are the critic of a two-agent team. Check the solver\'s solution against the task. Reply with JSON {"approve": true|false, "feedback": "..."}.'


def _with_memory(system: str, memory: str) -> str:
    return f"{system}\n\nFrom earlier tasks:\n{memory}" if memory.strip() else system


def _observed(steps: list[Step]) -> str:
    lines = "\n".join(f"Step {s.number}: {s.action or '(empty)'}\nObservation: {s.observation}" for s in steps)
    return f"\n\nThe steps so far and what the environment observed:\n{lines}" if steps else ""


def solver_messages(state: TeamState) -> list[ChatMessage]:
    last = next((m.text for m in reversed(state.messages) if m.speaker == "critic"), "")
    user = f"Task: {state.task}{_observed(state.steps)}" + (
        f"\n\nYour last solution: {state.solution}\nThe critic says: {last}" if last else ""
    )
    return [{"role": "system", "content": _with_memory(SOLVER_SYSTEM, state.memory.get("solver", ""))}, {"role": "user", "content": user}]


def critic_messages(state: TeamState) -> list[ChatMessage]:
    user = f"Task: {state.task}{_observed(state.steps)}\n\nSolution: {state.solution}"
    return [{"role": "system", "content": _with_memory(CRITIC_SYSTEM, state.memory.get("critic", ""))}, {"role": "user", "content": user}]


@node("team.solve", state=TeamState, reads={"task", "memory", "messages", "steps", "solution"}, writes={"solution", "messages"})
async def solve(state: TeamState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """The solver proposes (or revises) a solution and tells the critic."""
    solution = (await context.llm.text(solver_messages(state))).strip()
    said = Message(speaker="solver", addressee="critic", text=solution, round=state.round)
    return {"solution": solution, "messages": [*state.messages, said]}


@node("team.act", state=TeamState, reads={"solution", "steps", "round", "expected", "goal"}, writes={"steps"})
async def act(state: TeamState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """The environment observes the proposal: an observation and a reward."""
    return {"steps": [*state.steps, step(state.solution, state.round, state.steps, state.expected, state.goal)]}


@router("team.observed", state=TeamState, reads={"steps"}, outcomes={"done", "critique"})
def observed(state: TeamState, config: NoConfig) -> str:
    """The episode ends when the last step reached the goal; else the critic reviews it."""
    return "done" if state.steps and state.steps[-1].done else "critique"


@node(
    "team.critique",
    state=TeamState,
    reads={"task", "memory", "messages", "steps", "solution", "round"},
    writes={"approved", "messages", "round"},
)
async def critique(state: TeamState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """The critic approves or objects, and tells the solver."""
    reply = await context.llm.structured(critic_messages(state), Critique)
    text = reply.feedback or ("Approved." if reply.approve else "Not yet right.")
    said = Message(speaker="critic", addressee="solver", text=text, round=state.round)
    return {"approved": reply.approve, "messages": [*state.messages, said], "round": state.round + 1}


@router("team.next", state=TeamState, reads={"approved", "round", "max_rounds", "expected", "goal"}, outcomes={"revise", "check"})
def next_step(state: TeamState, config: NoConfig) -> str:
    """Another round while rounds remain and the critic objects or a goal is still unreached."""
    unreached = state.goal is not None or bool(state.expected)  # the critic runs only after a step that missed it
    return "revise" if state.round < state.max_rounds and (unreached or not state.approved) else "check"


@node("team.check", state=TeamState, reads={"solution", "expected", "goal"}, writes={"success", "feedback"})
async def check(state: TeamState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """The environment's verdict on the final solution: success and feedback."""
    final = verdict(state.solution, state.expected, state.goal)
    return {"success": final.success, "feedback": final.feedback}


@offline_handler(Critique)
def _offline_critique(messages: list[ChatMessage]) -> Critique:
    solution = re.search(r"Solution: (.*)\Z", str(messages[-1].get("content", "")), re.DOTALL)
    return Critique(approve=bool(solution and solution.group(1).strip()), feedback="")
