"""TME against a full-history agent: does the task memory keep the model off values the user has replaced?

The paper's claim is that an agent answering from a task memory stops acting on values the user changed ("Rome
instead of Paris"), where an agent sending the whole chat keeps them in front of the model. The data are the
paper's four conversations (``data/tme/scenarios.yaml``: trip planning, cooking, meeting scheduling, a shopping
cart), one item per user turn, in order, so each system builds its conversation turn by turn:

- ``tme``: the library ``tme-turn`` graph, one run per turn, in a session per scenario; the model decomposes,
  classifies (TRIM), and answers from the prompt the graph synthesizes. Nothing is scripted.
- ``full_history``: a linear chat agent, one call per turn: TME's answer system text, every earlier user message
  with the agent's own reply, then the new message, with the reply-length cap TME's answer step has.

Both sample at the paper's temperature, 0.3 (the graph's default for every TME call; :data:`TEMPERATURE` for the
baseline), so replies are not cached and two runs differ unless the model server honours a seed.

Per turn, against the values the scenario says are replaced by then (its ``facts``):

- ``stale_in_prompt``: 1 when a replaced value is in the answer prompt sent, outside the user's current message
  and outside the lines that show a checked step's earlier values as replaced (TME: the answer step's messages,
  rebuilt from the run's ``prompt`` as the step builds them; the baseline: its whole chat);
- ``stale_in_answer``: 1 when the answer repeats a replaced value as current (:func:`stale_in_answer`);
- ``classification_agreement`` (TME only; the baseline does not classify): how far the classified operations
  match the scenario's (:func:`classification_agreement`).

The stale scores exist only on turns where something has been replaced (``stale_in_answer`` not on a turn that
only removed something: its confirmation names what it removed), so their means are rates over those turns. The
main score of a turn is ``1 - stale_in_answer``, 1 on a turn without it; the harness averages it over every turn,
and :meth:`TmeEvaluation.summarize` adds ``score_on_replaced_turns``, over the turns that can be stale only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from mnemoflow.evaluation.harness import Attempt, Bench, EvalDataError, EvalOptions, Evaluation, Item, Outcome, mean
from mnemoflow.nodes.tme.agents import ANSWER_SYSTEM, Decomposition, Operation, answer_messages
from mnemoflow.nodes.tme.forest import Forest, slot_key
from mnemoflow.nodes.tme.measure import stale_facts
from mnemoflow.nodes.tme.turn import apply_operations

if TYPE_CHECKING:
    from mnemoflow.graphs.loader import LoadedGraph
    from mnemoflow.llm.gateway import Message

__all__ = [
    "EVALUATION",
    "Exchange",
    "Fact",
    "Replaced",
    "ScenarioData",
    "TmeEvaluation",
    "TurnCase",
    "TurnData",
    "classification_agreement",
    "full_history_messages",
    "load_scenarios",
    "mentions",
    "stale_in_answer",
    "stale_in_prompt",
    "turn_cases",
]

DATA_FILE = "scenarios.yaml"
TME, FULL_HISTORY = "tme", "full_history"
TEMPERATURE = 0.3
"""The baseline's sampling temperature: the paper's, which is also the ``tme-turn`` graph's default."""
ANSWER_DETAIL_CHARS = 2000
"""An answer is kept in the result up to this long (a small model may run on to its cap); the values it matched
are listed whole."""


# -- the data --------------------------------------------------------------------------------------------------


def _spellings(value: Any) -> Any:
    """A fact is one value or a list: the value, then other spellings an answer may use ("June 10", "six apples")."""
    if isinstance(value, str):
        return (value,)
    return tuple(value) if isinstance(value, list) else value


Spellings = Annotated[
    tuple[Annotated[str, Field(min_length=1, max_length=200, pattern=r"\S")], ...],
    BeforeValidator(_spellings),
    Field(min_length=1),
]


class TurnData(BaseModel):
    """One user turn as the data file writes it."""

    model_config = ConfigDict(extra="forbid")

    utterance: str = Field(min_length=1, max_length=2000, pattern=r"\S")
    decomposition: Decomposition
    """What the decompose step should give."""
    operations: list[Operation] = Field(min_length=1)
    """What the TRIM classification should say."""
    stale: list[str] = Field(default_factory=list)
    """The steps the revision propagation should mark stale."""
    facts: dict[str, Spellings | None] = Field(default_factory=dict)
    """The values the user states or changes in this turn, by step; None: the user removes the step."""
    answer: str = Field(min_length=1)
    """A reference reply."""


class ScenarioData(BaseModel):
    """One conversation."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,39}$")
    """Also the TME session id and the items' group."""
    title: str = Field(min_length=1)
    stresses: str = ""
    turns: list[TurnData] = Field(min_length=1)


@dataclass(frozen=True)
class Fact:
    """A value the user gave a step, with the spellings an answer may use (the first is the value)."""

    slot: str
    spellings: tuple[str, ...]

    @property
    def value(self) -> str:
        return self.spellings[0]


@dataclass(frozen=True)
class Replaced:
    """A value the user replaced or removed, and what holds its step now."""

    slot: str
    old: tuple[str, ...]
    """The replaced value and its spellings."""
    new: tuple[str, ...] = ()
    """The step's current value and spellings; empty when the step was removed."""
    removed_now: bool = False
    """Removed in this very turn: the answer confirming the removal names it, which is not acting on it."""

    @property
    def value(self) -> str:
        return self.old[0]


@dataclass(frozen=True)
class TurnCase:
    """One item: a turn of a scenario with what it expects and what is current and replaced after it."""

    scenario: str
    number: int
    utterance: str
    decomposition: Decomposition
    operations: tuple[Operation, ...]
    stale: tuple[str, ...]
    reference: str
    current: tuple[Fact, ...]
    replaced: tuple[Replaced, ...]

    @property
    def item_id(self) -> str:
        return _item_id(self.scenario, self.number)


def _item_id(scenario: str, number: int) -> str:
    return f"{scenario}-{number:02d}"


def _read(source: Path | Traversable) -> Any:
    if source.name.endswith(".json"):
        parse: Any = json.loads
    elif source.name.endswith((".yaml", ".yml")):
        parse = yaml.safe_load
    else:
        raise EvalDataError(f"{source}: TME scenarios are a .yaml, .yml or .json file")
    try:
        return parse(source.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise EvalDataError(f"{source}: no such file") from exc
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        raise EvalDataError(f"{source}: not readable as {source.name.rsplit('.', 1)[-1].upper()}: {exc}") from exc


def _where(scenario: str, loc: Sequence[int | str]) -> tuple[str, str]:
    """A pydantic error location inside a scenario as (the item it is in, the field path within it)."""
    if len(loc) >= 2 and loc[0] == "turns" and isinstance(loc[1], int):
        number = loc[1] + 1
        return f"item {_item_id(scenario, number)} (turn {number})", ".".join(str(part) for part in loc[2:]) or "the turn"
    return "the scenario", ".".join(str(part) for part in loc) or "the scenario"


def load_scenarios(source: Path | Traversable | None = None) -> list[ScenarioData]:
    """Every scenario of ``source`` (a file, or a folder holding ``scenarios.yaml``; default: the bundled one),
    checked whole; :class:`EvalDataError` names the file, the scenario and the turn (item) of each problem."""
    source = source if source is not None else resources.files("mnemoflow.evaluation").joinpath("data", "tme", DATA_FILE)
    if isinstance(source, Path) and source.is_dir():
        source = source / DATA_FILE
    document = _read(source)
    raw = document.get("scenarios") if isinstance(document, dict) else None
    if not isinstance(raw, list) or not raw:
        raise EvalDataError(f"{source}: expected a mapping with a non-empty list 'scenarios'")
    scenarios: list[ScenarioData] = []
    for index, entry in enumerate(raw):
        name = str(entry.get("name")) if isinstance(entry, dict) and entry.get("name") else f"#{index + 1}"
        try:
            scenario = ScenarioData.model_validate(entry)
        except ValidationError as exc:
            problems = []
            for error in exc.errors():
                item, path = _where(name, error["loc"])
                problems.append(f"  {item}: {path}: {error['msg']}")
            raise EvalDataError(f"{source}: scenario {name!r}:\n" + "\n".join(problems)) from exc
        if scenario.name in {earlier.name for earlier in scenarios}:
            raise EvalDataError(f"{source}: scenario {name!r} (#{index + 1}): the name is used twice (it is the session id)")
        try:
            _check_operations(scenario)
            turn_cases(scenario)
        except ValueError as exc:
            raise EvalDataError(f"{source}: scenario {scenario.name!r}, {exc}") from exc
        scenarios.append(scenario)
    return scenarios


def _check_operations(scenario: ScenarioData) -> None:
    """The expected operations must apply, turn after turn, to the forest they build: an expectation the
    mechanism could not meet would count against it."""
    forest = Forest()
    for number, turn in enumerate(scenario.turns, start=1):
        forest, _, errors = apply_operations(forest, list(turn.operations), number)
        if errors:
            raise ValueError(
                f"item {_item_id(scenario.name, number)} (turn {number}): the operations do not apply: {'; '.join(errors)}"
            )


def mentions(text: str, spelling: str) -> bool:
    """Whether ``text`` names ``spelling``: case-insensitive, as a whole phrase (not "June 1" in "June 10"), the rule
    of the mechanism's own stale-fact measure."""
    return re.search(rf"(?<!\w){re.escape(spelling)}(?!\w)", text, re.IGNORECASE) is not None


def turn_cases(scenario: ScenarioData) -> list[TurnCase]:
    """The scenario's turns with what is current and what has been replaced after each, from the turns' facts.

    A value is replaced once its step holds another value or was removed, unless some step holds it again (a
    revert brings it back). Raises ``ValueError`` naming the item for a removal of a step that holds nothing, or a
    current spelling containing a replaced one (naming the current value would count as naming the replaced one).
    """
    holding: dict[str, Fact] = {}
    earlier: dict[str, list[tuple[str, ...]]] = {}
    cases: list[TurnCase] = []
    for number, turn in enumerate(scenario.turns, start=1):
        where = f"item {_item_id(scenario.name, number)} (turn {number})"
        removed_now: dict[str, tuple[str, ...]] = {}
        for slot, spellings in turn.facts.items():
            key = slot_key(slot)
            if not key:
                raise ValueError(f"{where}: facts: a step needs a name")
            held = holding.pop(key, None)
            if held is not None:
                earlier.setdefault(key, []).append(held.spellings)
            if spellings is None:
                if held is None:
                    raise ValueError(f"{where}: facts: {slot!r} is removed but holds no value")
                removed_now[key] = held.spellings
            else:
                holding[key] = Fact(slot, spellings)
        current_values = {fact.value.lower() for fact in holding.values()}
        replaced: dict[str, Replaced] = {}
        for key, values in earlier.items():
            for old in values:
                if old[0].lower() in current_values or old[0].lower() in replaced:
                    continue
                new = holding[key].spellings if key in holding else ()
                replaced[old[0].lower()] = Replaced(key, old, new, removed_now.get(key) == old)
        for fact in holding.values():
            for gone in replaced.values():
                clash = [(now, then) for now in fact.spellings for then in gone.old if mentions(now, then)]
                if clash:
                    now, then = clash[0]
                    raise ValueError(f"{where}: facts: the current {now!r} ({fact.slot}) contains the replaced {then!r}")
        cases.append(
            TurnCase(
                scenario=scenario.name,
                number=number,
                utterance=turn.utterance,
                decomposition=turn.decomposition,
                operations=tuple(turn.operations),
                stale=tuple(turn.stale),
                reference=turn.answer,
                current=tuple(holding.values()),
                replaced=tuple(replaced.values()),
            )
        )
    return cases


# -- the scores ------------------------------------------------------------------------------------------------


def stale_in_prompt(messages: Iterable[Message], replaced: Iterable[Replaced], utterance: str) -> list[str]:
    """The replaced values (by their first spelling) that a prompt holds outside the user's current message, with
    the mechanism's own measure (``stale_facts``) over every message sent."""
    text = "\n".join(str(message.get("content", "")) for message in messages)
    values = list(replaced)
    found = set(stale_facts(text, [spelling for fact in values for spelling in fact.old], utterance))
    return [fact.value for fact in values if found.intersection(fact.old)]


def stale_in_answer(answer: str, replaced: Iterable[Replaced]) -> list[str]:
    """The replaced values an answer repeats as current.

    The rule: the answer names a spelling of a replaced value and no spelling of what replaced it ("Rome instead
    of Paris" confirms the change; "Paris" alone acts on the old plan). A removed value has no replacement, so
    naming it counts, except in the turn that removes it, whose confirmation ("removed the sourdough") names it.
    """
    stale = []
    for fact in replaced:
        if fact.removed_now or not any(mentions(answer, spelling) for spelling in fact.old):
            continue
        if not any(mentions(answer, spelling) for spelling in fact.new):
            stale.append(fact.value)
    return stale


def _words(slot: str) -> set[str]:
    return set(slot_key(slot).split()) - {"a", "an", "the", "of", "to", "for", "and", "my", "our"}


def _same_step(given: str, wanted: str, *, loose: bool) -> bool:
    return bool(_words(given) & _words(wanted)) if loose else slot_key(given) == slot_key(wanted)


def classification_agreement(classified: Sequence[Operation], expected: Sequence[Operation]) -> float:
    """F1 of the classified operations against the expected ones, matched one to one by intent and step.

    A step matches by its key, else by a shared content word ("dates" for "travel dates"): a capable model names
    steps in its own words, and the forest is keyed by those. Values are not compared (a phrasing, not a
    decision). A ``new`` task root that the expected steps name as their parent is neither credited nor held
    against the classification: the classifier is told to add it, and the forest adds it when a step names it.
    No operations expected and none given agree fully.
    """
    implied = {slot_key(op.parent) for op in expected if op.intent == "new" and op.parent} - {
        slot_key(op.slot) for op in expected
    }
    classified = [op for op in classified if not (op.intent == "new" and op.parent is None and slot_key(op.slot) in implied)]
    if not classified and not expected:
        return 1.0
    wanted, given = list(expected), list(classified)
    matched = 0
    for loose in (False, True):
        for want in list(wanted):
            hit = next((got for got in given if got.intent == want.intent and _same_step(got.slot, want.slot, loose=loose)), None)
            if hit is not None:
                given.remove(hit)
                wanted.remove(want)
                matched += 1
    return 2 * matched / (len(classified) + len(expected))


def _operation_text(operation: Operation) -> str:
    value = f" = {operation.value}" if operation.value is not None else ""
    needs = f" (needs {', '.join(operation.depends_on)})" if operation.depends_on else ""
    return f"{operation.intent} {operation.slot}{value}{needs}"


# -- the evaluation --------------------------------------------------------------------------------------------


Exchange = tuple[str, str | None]
"""A user message and the agent's reply; None when the call failed (the message stays in the chat, unanswered)."""


@dataclass
class _Run:
    """What the evaluation keeps between items: the graph, the baseline's chats, the answer cap."""

    graph: LoadedGraph | None = None
    chats: dict[str, list[Exchange]] = field(default_factory=dict)
    """The baseline's chat per scenario (it has no store)."""
    answer_tokens: int | None = None


def _answerable(case: TurnCase) -> bool:
    """Whether the answer can repeat a replaced value: something was replaced, and not only removed in this turn
    (whose confirmation names what it removed, see :func:`stale_in_answer`)."""
    return any(not fact.removed_now for fact in case.replaced)


def full_history_messages(history: Sequence[Exchange], utterance: str) -> list[Message]:
    """The baseline's request: TME's answer system text, every earlier exchange verbatim, the new message."""
    messages: list[Message] = [{"role": "system", "content": ANSWER_SYSTEM}]
    for said, replied in history:
        messages.append({"role": "user", "content": said})
        if replied is not None:
            messages.append({"role": "assistant", "content": replied})
    messages.append({"role": "user", "content": utterance})
    return messages


class TmeEvaluation(Evaluation):
    """The ``tme-turn`` graph against a full-history chat agent on the four scenarios, turn by turn."""

    mechanism = "tme"
    systems = (TME, FULL_HISTORY)
    score_name = "1 - stale-answer rate"

    def __init__(self, options: EvalOptions) -> None:
        super().__init__(options)
        self._run = _Run()
        self._scenarios: list[ScenarioData] = []

    def load(self) -> list[Item]:
        self._scenarios = load_scenarios(self.options.data)
        return [Item(case.item_id, case, group=case.scenario) for scenario in self._scenarios for case in turn_cases(scenario)]

    async def prepare(self, bench: Bench, system: str) -> None:
        from mnemoflow.graphs import load_graph

        self._run.answer_tokens = bench.parts.settings.llm.max_reply_tokens
        if system == TME:
            self._run.graph = load_graph("tme-turn")

    async def attempt(self, bench: Bench, system: str, item: Item) -> Outcome:
        case: TurnCase = item.data
        if system == TME:
            return await self._tme(bench, case)
        return await self._full_history(bench, case)

    async def _tme(self, bench: Bench, case: TurnCase) -> Outcome:
        assert self._run.graph is not None, "prepare() loads the graph"
        result = await bench.run(self._run.graph, {"session": case.scenario, "utterance": case.utterance}, system=TME)
        state = result.state
        prompt, answer = str(state.get("prompt", "")), str(state.get("response", ""))
        classified = [Operation.model_validate(operation) for operation in state.get("operations", [])]
        agreement = classification_agreement(classified, case.operations)
        detail = {
            "utterance": case.utterance,
            "classified": [_operation_text(operation) for operation in classified],
            "expected": [_operation_text(operation) for operation in case.operations],
            "stale_marked": list(state.get("stale", [])),
            "stale_expected": list(case.stale),
            "errors": list(state.get("errors", [])),
            "prompt": prompt,
        }
        return self._outcome(case, answer_messages(prompt), answer, detail, {"classification_agreement": agreement})

    async def _full_history(self, bench: Bench, case: TurnCase) -> Outcome:
        chat = self._run.chats.setdefault(case.scenario, [])
        messages = full_history_messages(chat, case.utterance)
        reply: str | None = None
        try:
            reply = (await bench.parts.llm.text(messages, temperature=TEMPERATURE)).strip()
        finally:
            chat.append((case.utterance, reply))
        detail = {"utterance": case.utterance, "history_turns": len(chat) - 1}
        return self._outcome(case, messages, reply, detail, {})

    def _outcome(
        self, case: TurnCase, sent: list[Message], answer: str, detail: dict[str, Any], scores: dict[str, float]
    ) -> Outcome:
        detail = {**detail, "answer": answer[:ANSWER_DETAIL_CHARS], "reference": case.reference}
        if not case.replaced:
            return Outcome(1.0, scores, detail)
        in_prompt = stale_in_prompt(sent, case.replaced, case.utterance)
        detail |= {
            "replaced": [f"{fact.value} -> {fact.new[0] if fact.new else '(removed)'}" for fact in case.replaced],
            "stale_values_in_prompt": in_prompt,
        }
        scores = {**scores, "stale_in_prompt": float(bool(in_prompt))}
        if not _answerable(case):
            return Outcome(1.0, scores, detail)
        in_answer = stale_in_answer(answer, case.replaced)
        detail["stale_values_in_answer"] = in_answer
        return Outcome(1.0 - float(bool(in_answer)), {**scores, "stale_in_answer": float(bool(in_answer))}, detail)

    def failure(self, item: Item, system: str) -> Outcome:
        """A failed turn counts as the worst on every score it would have had: stale in prompt and answer (a
        lower-is-better score at 0 would reward the failure), no agreement."""
        case: TurnCase = item.data
        scores = {"classification_agreement": 0.0} if system == TME else {}
        if case.replaced:
            scores["stale_in_prompt"] = 1.0
        if _answerable(case):
            scores["stale_in_answer"] = 1.0
        return Outcome(0.0, scores)

    def score(self, system: str, attempts: list[Attempt]) -> float:
        """1 - the stale-answer rate over the turns where an answer can repeat a replaced value; before any value
        was replaced (the first turns, a quick run) nothing can be stale, and the score is 1."""
        replaced = [attempt for attempt in attempts if "stale_in_answer" in attempt.outcome.scores]
        return mean([attempt.outcome.score for attempt in replaced]) if replaced else 1.0

    def summarize(self, system: str, attempts: list[Attempt]) -> dict[str, Any]:
        """Each scenario's scores, and the mean over every turn beside the main score's."""
        replaced = [attempt for attempt in attempts if "stale_in_answer" in attempt.outcome.scores]
        by_scenario: dict[str, dict[str, float]] = {}
        for name in dict.fromkeys(attempt.item.group for attempt in attempts):
            mine = [attempt for attempt in attempts if attempt.item.group == name]
            keys = sorted({key for attempt in mine for key in attempt.outcome.scores})
            by_scenario[name] = {"score": round(mean([a.outcome.score for a in mine]), 4)} | {
                key: round(mean([a.outcome.scores[key] for a in mine if key in a.outcome.scores]), 4) for key in keys
            }
        every_turn = round(mean([attempt.outcome.score for attempt in attempts]), 4)
        return {"replaced_turns": len(replaced), "score_all_turns": every_turn, "by_scenario": by_scenario}

    def describe(self) -> dict[str, Any]:
        cases = [case for scenario in self._scenarios for case in turn_cases(scenario)]
        return {
            "file": str(self.options.data or f"bundled data/tme/{DATA_FILE}"),
            "scenarios": {scenario.name: len(scenario.turns) for scenario in self._scenarios},
            "turns": len(cases),
            "turns_with_replaced_values": sum(bool(case.replaced) for case in cases),
            "turns_scored_for_stale_answers": sum(_answerable(case) for case in cases),
            "systems": {
                TME: "the library tme-turn graph (decompose, classify, apply, synthesize, answer; no re-derivation), "
                "one session per scenario, temperature 0.3",
                FULL_HISTORY: "one call per turn: TME's answer system text, every earlier user message and the agent's "
                f"own reply, then the new message, temperature {TEMPERATURE}",
            },
            "answer_max_tokens": self._run.answer_tokens,
            "score": "per turn 1 - stale_in_answer (1 on turns where no replaced value can be repeated yet); the "
            "system's score averages the scores.replaced_turns turns where one can (something was replaced, and not "
            "only removed in that very turn), scores.score_all_turns every turn",
            "stale_in_answer": "1 when the answer names a replaced value (case-insensitive, whole phrase) and none of "
            "what replaced it; a value removed in the same turn is exempt",
            "stale_in_prompt": "1 when a replaced value is in the prompt sent, outside the current message and the "
            "lines showing a checked step's earlier values",
            "classification_agreement": "TME only: F1 of classified against expected operations, matched by intent "
            "and step (same key, else a shared content word)",
            "failed_turns": "count as stale in prompt and answer, with 0 agreement",
        }


EVALUATION = TmeEvaluation
