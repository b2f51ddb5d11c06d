"""The team's environment: declarative checks of an answer, and the step each solver proposal makes in it.

A task may carry a goal, a declarative check of the answer (:data:`Check`: a number, an exact text, a choice
among options, required parts, a pattern or a JSON value), or the older ``expected`` (a substring). Each solver
proposal is an action the environment observes (:func:`step`): reward 1 when the goal is reached (the episode is
done), -1 when the action changes nothing (empty, or the same as an earlier action once case, spacing, outer
quotes and a final period are set aside: the reference environment's "Nothing happens"), 0 otherwise. The
observation says which, in words, and never what the goal expects, so the team cannot copy it. Without a goal
nothing can be reached: a new action gets 0 and the team runs its rounds, as before there were steps.

:func:`verdict` is the environment's final word on the team's last solution (``success``, ``feedback``); unlike
an observation, the feedback names what was expected, for whoever learns from the finished task.
"""

from __future__ import annotations

import json
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

from mnemoflow.llm.parsing import extract_json

__all__ = [
    "Check",
    "ChoiceCheck",
    "ContainsAllCheck",
    "ExactCheck",
    "JsonEqualsCheck",
    "NumberCheck",
    "RegexCheck",
    "Step",
    "Verdict",
    "normalized",
    "same_json",
    "step",
    "verdict",
]


class Verdict(BaseModel):
    """What the environment says of an answer."""

    success: bool
    feedback: str


class _Check(BaseModel, ABC):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def verdict(self, answer: str) -> Verdict:
        """Success or not, with feedback naming what was expected and what was found, so whoever learns from the
        finished task can see what went wrong."""
        passed, found = self._judge(answer)
        if passed:
            return Verdict(success=True, feedback="The answer meets the goal.")
        return Verdict(success=False, feedback=f"The answer does not meet the goal: expected {self.describe()}, {found}.")

    @abstractmethod
    def describe(self) -> str:
        """What the check expects, in words."""

    @abstractmethod
    def _judge(self, answer: str) -> tuple[bool, str]:
        """Whether ``answer`` passes, and what was found in it (``got ...``)."""


_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_QUOTES = "\"'`“”‘’"


def _bare(answer: str) -> str:
    """The answer without outer spaces and quotes, its inner spaces collapsed."""
    return " ".join(answer.split()).strip(_QUOTES + " ")


def _shown(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


class NumberCheck(_Check):
    """The last number in the answer is within ``tolerance`` of ``value``: a worked answer ends on its result, so
    the numbers of the working before it do not count."""

    kind: Literal["number"]
    value: float
    tolerance: float = Field(0.0, ge=0)

    @field_validator("value")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    def describe(self) -> str:
        number = f"{self.value:g}"
        return f"the number {number}" + (f" (within {self.tolerance:g})" if self.tolerance else "")

    def _judge(self, answer: str) -> tuple[bool, str]:
        numbers = _NUMBER.findall(answer)
        if not numbers:
            return False, "got no number"
        last = float(numbers[-1].replace(",", ""))
        return abs(last - self.value) <= self.tolerance, f"got {last:g}"


class ExactCheck(_Check):
    """The answer is ``value``, outer spaces, quotes and one final period aside (and case, unless ``case_sensitive``)."""

    kind: Literal["exact"]
    value: str = Field(min_length=1)
    case_sensitive: bool = False

    def describe(self) -> str:
        return f"exactly {self.value!r}" + (" (case counts)" if self.case_sensitive else "")

    def _judge(self, answer: str) -> tuple[bool, str]:
        given = _bare(answer)
        given = given[:-1].rstrip(_QUOTES + " ") if given.endswith(".") and not self.value.endswith(".") else given
        same = given == self.value if self.case_sensitive else given.casefold() == self.value.casefold()
        return same, f"got {_shown(given)}"


class ChoiceCheck(_Check):
    """The answer names ``value`` and no other of ``options`` (whole words, case aside)."""

    kind: Literal["choice"]
    value: str = Field(min_length=1)
    options: list[str] = Field(min_length=2)

    @model_validator(mode="after")
    def _value_among_options(self) -> ChoiceCheck:
        folded = [option.casefold() for option in self.options]
        if len(set(folded)) != len(folded):
            raise ValueError("options repeat")
        if self.value.casefold() not in folded:
            raise ValueError(f"value {self.value!r} is not one of the options")
        return self

    def describe(self) -> str:
        return f"{self.value!r} and no other of {', '.join(self.options)}"

    def _judge(self, answer: str) -> tuple[bool, str]:
        named = [o for o in self.options if re.search(rf"(?<!\w){re.escape(o)}(?!\w)", answer, re.IGNORECASE)]
        right = [o.casefold() for o in named] == [self.value.casefold()]
        return right, f"got {', '.join(named)}" if named else "got none of them"


class ContainsAllCheck(_Check):
    """The answer contains every one of ``values`` (case aside)."""

    kind: Literal["contains_all"]
    values: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)

    def describe(self) -> str:
        return "all of " + ", ".join(repr(value) for value in self.values)

    def _judge(self, answer: str) -> tuple[bool, str]:
        missing = [value for value in self.values if value.casefold() not in answer.casefold()]
        return not missing, "missing " + ", ".join(repr(value) for value in missing)


class RegexCheck(_Check):
    """The whole answer, outer spaces and quotes aside, matches ``pattern``."""

    kind: Literal["regex"]
    pattern: str = Field(min_length=1)
    ignore_case: bool = False

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from exc
        return pattern

    def describe(self) -> str:
        return f"text matching /{self.pattern}/"

    def _judge(self, answer: str) -> tuple[bool, str]:
        given = _bare(answer)
        matched = re.fullmatch(self.pattern, given, re.IGNORECASE if self.ignore_case else 0) is not None
        return matched, f"got {_shown(given)}"


class JsonEqualsCheck(_Check):
    """The first JSON value in the answer (bare, fenced or amid prose) equals ``value``, types included (``1`` is
    not ``true``, ``"1"`` is not ``1``; ``2`` and ``2.0`` are the same number)."""

    kind: Literal["json_equals"]
    value: JsonValue

    def describe(self) -> str:
        return f"the JSON {json.dumps(self.value)}"

    def _judge(self, answer: str) -> tuple[bool, str]:
        try:
            given = extract_json(answer)
        except ValueError:
            return False, f"got no JSON value in {_shown(answer.strip())}"
        return same_json(given, self.value), f"got {_shown(json.dumps(given))}"


def same_json(left: Any, right: Any) -> bool:
    """Equality of two JSON values where a boolean is never a number (Python says ``True == 1``)."""
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left == right
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(same_json(a, b) for a, b in zip(left, right, strict=True))
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(same_json(left[key], right[key]) for key in left)
    return type(left) is type(right) and left == right


Check = Annotated[
    NumberCheck | ExactCheck | ChoiceCheck | ContainsAllCheck | RegexCheck | JsonEqualsCheck, Field(discriminator="kind")
]
"""An environment check, chosen by its ``kind``."""


# -- steps ----------------------------------------------------------------------------------------------------------


class Step(BaseModel):
    """One action of the team in its environment, what the environment observed and the reward."""

    model_config = ConfigDict(frozen=True)

    number: int = Field(ge=1)
    """The step's place in the episode, from 1."""
    round: int = Field(ge=0)
    """The team round the action was proposed in; the round's messages belong to this step."""
    action: str
    observation: str
    reward: int = Field(ge=-1, le=1)
    """1: the goal is reached (the episode is done); -1: nothing happens (empty or repeated); 0: otherwise."""

    @property
    def done(self) -> bool:
        """Whether the step reached the goal and ended the episode."""
        return self.reward == 1


REACHED = "The goal is reached."
NOT_REACHED = "The goal is not reached yet."
NO_GOAL = "The action is taken; no goal is set to check it against."


def normalized(action: str) -> str:
    """The action as the environment compares it: case, spacing, outer quotes and one final period set aside."""
    text = " ".join(action.casefold().split()).strip(_QUOTES + " ")
    return text[:-1].rstrip(_QUOTES + " ") if text.endswith(".") else text


def verdict(solution: str, expected: str, goal: Check | None) -> Verdict:
    """The environment's word on ``solution``: by ``goal`` when set, else it must hold ``expected`` (case aside;
    any non-empty solution when ``expected`` is empty)."""
    if goal is not None:
        return goal.verdict(solution)
    found = bool(solution.strip()) and (not expected or expected.lower() in solution.lower())
    feedback = "The solution meets the goal." if found else f"The solution does not reach the goal ({expected!r} missing)."
    return Verdict(success=found, feedback=feedback)


def step(action: str, round_: int, earlier: Sequence[Step], expected: str, goal: Check | None) -> Step:
    """The environment observes ``action``, the team's next step after ``earlier``."""
    number = len(earlier) + 1
    key = normalized(action)
    repeated = next((s for s in earlier if normalized(s.action) == key), None) if key else None
    if not key:
        observation, reward = "Nothing happens: the action is empty.", -1
    elif repeated is not None:
        observation, reward = f"Nothing happens: the action repeats step {repeated.number}.", -1
    elif goal is None and not expected:
        observation, reward = NO_GOAL, 0
    elif verdict(action, expected, goal).success:
        observation, reward = REACHED, 1
    else:
        observation, reward = NOT_REACHED, 0
    return Step(number=number, round=round_, action=action, observation=observation, reward=reward)
