"""The TME evaluation: its data (the four scenarios, refused whole when malformed), its scores, and both systems
run by the harness against the scripted model over HTTP (TME with the scenario's own classification, so every
score has a known right value). The real-model run is the harness's quick test (``tests/test_eval.py``)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml

from mnemoflow.errors import ConfigError
from mnemoflow.evaluation import evaluation_class
from mnemoflow.evaluation.harness import EvalDataError, EvalOptions, evaluate
from mnemoflow.evaluation.tme import (
    EVALUATION,
    Replaced,
    classification_agreement,
    full_history_messages,
    load_scenarios,
    stale_in_answer,
    stale_in_prompt,
    turn_cases,
)
from mnemoflow.nodes.tme.agents import ANSWER_SYSTEM, DECOMPOSE_SYSTEM, Operation
from mnemoflow.settings import LLMSettings, OpenAISettings, Settings
from tests.support.openai_server import Rule, ScriptedOpenAIServer
from tests.support.tme_scenarios import TRIP, role_of, script_scenario

BUNDLED = Path(__file__).resolve().parents[1] / "bench" / "evaluation" / "data" / "tme" / "scenarios.yaml"


def bundled() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(BUNDLED.read_text())
    return document


def op(intent: str, slot: str, value: str | None = None) -> Operation:
    return Operation(intent=intent, slot=slot, value=value)  # type: ignore[arg-type]


def scripted_settings(server: ScriptedOpenAIServer) -> Settings:
    return Settings(
        openai=OpenAISettings(base_url=server.base_url, api_key="test"),  # type: ignore[arg-type]
        llm=LLMSettings(model="scripted", initial_backoff=0.0, max_backoff=0.01),
    )


# -- the data --------------------------------------------------------------------------------------------------


def test_the_bundled_scenarios_are_the_papers_four_and_ours_one_item_per_turn_in_order() -> None:
    evaluation = evaluation_class("tme")(EvalOptions())
    items = evaluation.load()
    scenarios = load_scenarios()
    assert type(evaluation) is EVALUATION
    assert [scenario.name for scenario in scenarios] == ["trip", "cooking", "meeting", "cart", "two-tasks", "dinner"]
    assert all(len(scenario.turns) >= 4 for scenario in scenarios)
    # two tasks with a step of one name; a check of a step whose value was replaced
    two = {(o.task, o.slot) for t in scenarios[4].turns for o in t.operations if o.intent == "check"}
    assert two == {("plan a trip", "date"), ("schedule a meeting", "date")}
    assert [o.slot for o in scenarios[5].turns[-1].operations if o.intent == "check"] == ["day", "guests"]
    assert [item.id for item in items] == [f"{s.name}-{n:02d}" for s in scenarios for n in range(1, len(s.turns) + 1)]
    assert [item.group for item in items] == [s.name for s in scenarios for _ in s.turns]
    # the scenarios need every intent, and each has turns after a value was replaced (where staleness is measured)
    intents = set(get_args(Operation.model_fields["intent"].annotation))
    assert {o.intent for s in scenarios for t in s.turns for o in t.operations} == intents
    for scenario in scenarios:
        assert any(case.replaced and not all(f.removed_now for f in case.replaced) for case in turn_cases(scenario)), (
            scenario.name
        )
    quick = evaluation_class("tme")(EvalOptions(quick=True))
    assert [item.id for item in quick.select(quick.load())] == ["trip-01", "trip-02", "trip-03"]
    described = evaluation.describe()
    assert described["turns"] == len(items) and described["scenarios"] == {s.name: len(s.turns) for s in scenarios}
    assert described["turns_with_replaced_values"] == sum(bool(item.data.replaced) for item in items)


def test_a_folder_or_a_json_file_holds_the_same_scenarios(tmp_path: Path) -> None:
    (tmp_path / "scenarios.yaml").write_text(BUNDLED.read_text())
    (tmp_path / "copy.json").write_text(json.dumps(bundled()))
    ids = [item.id for item in EVALUATION(EvalOptions()).load()]
    for source in (tmp_path, tmp_path / "copy.json"):
        assert [item.id for item in EVALUATION(EvalOptions(data=source)).load()] == ids
        assert [case.replaced for s in load_scenarios(source) for case in turn_cases(s)] == [
            case.replaced for s in load_scenarios() for case in turn_cases(s)
        ]


def test_current_and_replaced_values_follow_the_facts_through_revert_removal_and_restore() -> None:
    by_id = {case.item_id: case for scenario in load_scenarios() for case in turn_cases(scenario)}
    assert by_id["trip-04"].replaced == ()
    assert [(f.value, f.new[0]) for f in by_id["trip-06"].replaced] == [("June 10-14", "June 17-21"), ("Paris", "Rome")]
    assert [(f.value, f.new[0]) for f in by_id["trip-07"].replaced] == [("June 10-14", "June 17-21"), ("Rome", "Paris")]
    assert "Paris" in {fact.value for fact in by_id["trip-07"].current}  # reverted: current again, not replaced
    assert by_id["cart-03"].replaced == (Replaced("bread", ("sourdough",), (), removed_now=True),)
    assert by_id["cart-04"].replaced == ()  # restored
    reset = {fact.value: fact.removed_now for fact in by_id["cart-09"].replaced}
    assert reset["6 apples"] and reset["coffee beans"] and not reset["3 apples"] and not reset["oat milk"]


def write(tmp_path: Path, document: Any, name: str = "scenarios.yaml") -> Path:
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document, sort_keys=False))
    return path


def broken(change: Any) -> Any:
    document = bundled()
    change(document)
    return document


def turn(document: dict[str, Any], scenario: int, number: int) -> dict[str, Any]:
    found: dict[str, Any] = document["scenarios"][scenario]["turns"][number - 1]
    return found


MALFORMED = {
    "not YAML": ("scenarios: [\n  - name: trip\n    turns: {", ["line"]),
    "no scenarios": ({"turns": []}, ["non-empty list 'scenarios'"]),
    "an unknown intent": (
        broken(lambda d: turn(d, 1, 3)["operations"][0].update(intent="append")),
        ["scenario 'cooking'", "item cooking-03 (turn 3)", "operations.0.intent"],
    ),
    "a misspelt key": (
        broken(lambda d: turn(d, 2, 2).update(utterence=turn(d, 2, 2).pop("utterance"))),
        ["item meeting-02 (turn 2)", "utterance: Field required", "utterence: Extra inputs"],
    ),
    "an empty utterance": (broken(lambda d: turn(d, 0, 5).update(utterance="  ")), ["item trip-05 (turn 5)", "utterance"]),
    "no operations": (broken(lambda d: turn(d, 3, 1).update(operations=[])), ["item cart-01 (turn 1)", "operations"]),
    "a bad scenario name": (
        broken(lambda d: d["scenarios"][1].update(name="Cooking Night")),
        ["scenario 'Cooking Night'", "name"],
    ),
    "a name used twice": (broken(lambda d: d["scenarios"][3].update(name="trip")), ["scenario 'trip' (#4)", "used twice"]),
    "an operation that cannot apply": (
        broken(lambda d: turn(d, 3, 6)["operations"][0].update(slot="pears")),
        ["scenario 'cart'", "item cart-06 (turn 6)", "do not apply", "'pears'"],
    ),
    "a removal of nothing": (
        broken(lambda d: turn(d, 1, 4).update(facts={"garlic": None})),
        ["item cooking-04 (turn 4)", "'garlic' is removed but holds no value"],
    ),
    "a current value holding a replaced one": (
        broken(lambda d: turn(d, 0, 6).update(facts={"destination": ["Rome", "Rome, not Paris"]})),
        ["item trip-06 (turn 6)", "'Rome, not Paris'", "replaced 'Paris'"],
    ),
    "an empty spelling": (broken(lambda d: turn(d, 2, 5).update(facts={"date": []})), ["item meeting-05 (turn 5)", "facts.date"]),
}


@pytest.mark.parametrize("case", MALFORMED, ids=str)
def test_malformed_scenarios_are_refused_naming_the_file_and_the_item(tmp_path: Path, case: str) -> None:
    document, expected = MALFORMED[case]
    path = write(tmp_path, document)
    with pytest.raises(EvalDataError) as refused:
        EVALUATION(EvalOptions(data=path)).load()
    message = str(refused.value)
    assert message.startswith(str(path)), message
    for part in expected:
        assert part in message, message


@pytest.mark.parametrize(("name", "message"), [("scenarios.txt", ".yaml, .yml or .json"), ("missing.yaml", "no such file")])
def test_a_file_of_another_kind_or_none_is_refused(tmp_path: Path, name: str, message: str) -> None:
    if name != "missing.yaml":
        write(tmp_path, bundled(), name)
    with pytest.raises(EvalDataError, match=message):
        EVALUATION(EvalOptions(data=tmp_path / name)).load()
    assert isinstance(EvalDataError("x"), ConfigError)


async def test_a_problem_in_the_last_turn_stops_the_evaluation_before_any_model_call(tmp_path: Path) -> None:
    path = write(tmp_path, broken(lambda d: turn(d, 3, 9)["operations"][0].update(intent="reset")))
    with ScriptedOpenAIServer() as server:
        server.script(text="ok")
        evaluation = EVALUATION(EvalOptions(data=path))
        with pytest.raises(EvalDataError, match="item cart-09"):
            await evaluate(evaluation, evaluation.select(evaluation.load()), scripted_settings(server), tmp_path / "work")
        assert server.request_count == 0


# -- the scores ------------------------------------------------------------------------------------------------

DATES = Replaced("travel dates", ("June 10-14", "June 10", "June 14"), ("June 17-21", "June 17", "June 21"))
PARIS = Replaced("destination", ("Paris",), ("Rome",))
BREAD = Replaced("bread", ("sourdough",), ())


@pytest.mark.parametrize(
    ("answer", "replaced", "stale"),
    [
        ("Your hotel in Paris is booked.", [PARIS], ["Paris"]),
        ("ROME instead of paris, noted.", [PARIS], []),  # confirming the change names both
        ("A Parisian-style bistro in Rome.", [PARIS], []),  # whole phrases only
        ("You fly out on June 10 and come back June 14.", [DATES, PARIS], ["June 10-14"]),
        ("You fly out on June 17 (not June 10).", [DATES], []),
        ("From June 100 onwards.", [DATES], []),
        ("I added sourdough.", [BREAD], ["sourdough"]),  # removed earlier: no replacement to name
        ("Removed the sourdough.", [Replaced("bread", ("sourdough",), (), removed_now=True)], []),
        ("Nothing to say.", [DATES, PARIS, BREAD], []),
    ],
)
def test_an_answer_is_stale_when_it_names_a_replaced_value_and_not_its_replacement(
    answer: str, replaced: list[Replaced], stale: list[str]
) -> None:
    assert stale_in_answer(answer, replaced) == stale


def test_no_reference_answer_counts_as_stale_but_the_same_answers_a_turn_late_do() -> None:
    """The rule spares right answers (which name old values beside new ones) yet catches replies out of date."""
    cases = [case for scenario in load_scenarios() for case in turn_cases(scenario)]
    assert all(stale_in_answer(case.reference, case.replaced) == [] for case in cases)
    late = [
        (case.item_id, stale_in_answer(earlier.reference, case.replaced))
        for earlier, case in zip(cases, cases[1:], strict=False)
        if earlier.scenario == case.scenario and {f.value for f in case.replaced} - {f.value for f in earlier.replaced}
    ]
    assert ("trip-06", ["Paris"]) in late and ("trip-07", ["Rome"]) in late and ("cooking-05", ["celery"]) in late


def test_a_prompt_is_stale_when_a_replaced_value_is_outside_the_current_message() -> None:
    utterance = "Change of plan, let's go to Rome instead of Paris."
    clean = [
        {"role": "system", "content": ANSWER_SYSTEM},
        {"role": "user", "content": f"- destination: Rome\n\nUser: {utterance}"},
    ]
    assert stale_in_prompt(clean, [PARIS, DATES], utterance) == []
    leaky = [
        *clean[:1],
        {"role": "user", "content": "Two nights from June 14."},
        {"role": "assistant", "content": "Paris it is."},
        clean[1],
    ]
    assert stale_in_prompt(leaky, [PARIS, DATES], utterance) == ["Paris", "June 10-14"]


def test_the_full_history_chat_holds_every_earlier_exchange_and_keeps_a_message_whose_reply_failed() -> None:
    messages = full_history_messages([("Paris.", "Noted."), ("Rome.", None)], "Summary?")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "user"]
    assert messages[0]["content"] == ANSWER_SYSTEM and [m["content"] for m in messages[1:]] == [
        "Paris.",
        "Noted.",
        "Rome.",
        "Summary?",
    ]


ROME_UNDER_TRIP = Operation(intent="new", slot="destination", value="Rome", parent="plan a trip")


@pytest.mark.parametrize(
    ("classified", "expected", "agreement"),
    [
        ([op("update", "Travel Dates.", "June 17")], [op("update", "travel dates", "June 17-21")], 1.0),
        ([op("update", "dates")], [op("update", "travel dates")], 1.0),  # the model's own words for the step
        ([op("new", "travel dates")], [op("update", "travel dates")], 0.0),  # the wrong intent
        ([op("update", "hotel")], [op("update", "travel dates")], 0.0),
        ([], [op("check", "soup")], 0.0),
        ([], [], 1.0),
        ([op("check", "soup"), op("check", "carrots")], [op("check", "soup")], 2 / 3),  # one too many
        ([op("check", "soup"), op("check", "soup")], [op("check", "soup")], 2 / 3),  # matched one to one
        ([op("check", "trip"), op("check", "plan a trip")], [op("check", "plan a trip"), op("check", "trip plan")], 1.0),
        ([op("new", "Plan a trip"), ROME_UNDER_TRIP], [ROME_UNDER_TRIP], 1.0),  # the task root the step names
        ([op("new", "holiday"), ROME_UNDER_TRIP], [ROME_UNDER_TRIP], 2 / 3),  # another root is one too many
    ],
)
def test_classification_agreement_is_f1_over_operations_matched_by_intent_and_step(
    classified: list[Operation], expected: list[Operation], agreement: float
) -> None:
    assert classification_agreement(classified, expected) == pytest.approx(agreement)


# -- both systems through the harness --------------------------------------------------------------------------

STALE_REPLY = "Booked: Paris, June 10-14."
"""What the scripted full-history agent always answers: stale once the dates (turn 5) or the city (turn 6) change."""


async def run_trip(
    tmp_path: Path, turns: int, *rules: Rule, baseline: Rule | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The first ``turns`` trip turns, TME's calls scripted with the scenario's own replies, the baseline's by
    ``baseline`` (by default :data:`STALE_REPLY` to every message)."""
    with ScriptedOpenAIServer() as server:
        if rules:
            server.script(*rules)
        script_scenario(server, TRIP)
        server.script(baseline or Rule(system=ANSWER_SYSTEM[:30], text=STALE_REPLY))  # after TME's answer rules
        evaluation = EVALUATION(EvalOptions(limit=turns))
        result = await evaluate(evaluation, evaluation.select(evaluation.load()), scripted_settings(server), tmp_path)
        requests = [r for r in server.requests if r["path"].endswith("/chat/completions")]
    return result, requests


def entries(result: dict[str, Any], system: str) -> dict[str, dict[str, Any]]:
    return {entry["item"]: entry for entry in result["per_item"] if entry["system"] == system}


async def test_both_systems_on_the_trip_scored_against_known_right_answers(tmp_path: Path) -> None:
    result, requests = await run_trip(tmp_path, 7)
    tme, baseline = entries(result, "tme"), entries(result, "full_history")
    for entry in tme.values():  # the session carried on: the revert of turn 7 found turn 6's value
        assert entry["detail"]["errors"] == [] and entry["detail"]["classified"] == entry["detail"]["expected"], entry
        assert entry["scores"]["classification_agreement"] == 1.0 and entry["calls"] == 3
    scored = ["trip-05", "trip-06", "trip-07"]
    for item in scored:
        assert tme[item]["scores"] | {"classification_agreement": 0} == {
            "classification_agreement": 0,
            "stale_in_prompt": 0.0,
            "stale_in_answer": 0.0,
        }
        assert baseline[item]["scores"] == {"stale_in_prompt": 1.0, "stale_in_answer": 1.0} and baseline[item]["score"] == 0.0
    for item in ("trip-01", "trip-04"):
        assert "stale_in_answer" not in tme[item]["scores"] and baseline[item]["scores"] == {} and baseline[item]["score"] == 1.0
    assert baseline["trip-06"]["detail"]["stale_values_in_answer"] == ["June 10-14", "Paris"]
    assert baseline["trip-07"]["detail"]["stale_values_in_answer"] == ["June 10-14"]  # Paris is current again
    assert "Rome" not in tme["trip-07"]["detail"]["prompt"] and "Paris" in tme["trip-07"]["detail"]["prompt"]

    systems = result["systems"]
    assert systems["tme"]["score"] == 1.0 and systems["tme"]["scores"]["score_all_turns"] == 1.0
    assert (
        systems["full_history"]["score"] == 0.0  # stale in every turn where it could be
        and systems["full_history"]["scores"]["score_all_turns"] == pytest.approx(4 / 7, abs=1e-4)
    )
    assert systems["full_history"]["scores"]["replaced_turns"] == len(scored)
    assert "classification_agreement" not in systems["full_history"]["scores"]
    assert systems["full_history"]["scores"]["by_scenario"]["trip"]["stale_in_prompt"] == 1.0
    assert result["data"]["answer_max_tokens"] == LLMSettings().max_reply_tokens

    # one call a turn for the baseline, each holding the whole chat so far, with the same reply cap as TME's answers
    chats = [
        r["body"]
        for r in requests
        if role_of(r) == "answer" and not r["body"]["messages"][-1]["content"].startswith("Task memory")
    ]
    tme_answers = [
        r["body"] for r in requests if role_of(r) == "answer" and r["body"]["messages"][-1]["content"].startswith("Task memory")
    ]
    assert [len(body["messages"]) for body in chats] == [2 * number for number in range(1, 8)]
    assert chats[-1]["messages"][-2] == {"role": "assistant", "content": STALE_REPLY}
    assert {body["max_tokens"] for body in chats} == {body["max_tokens"] for body in tme_answers}


async def test_a_failed_turn_scores_the_worst_on_every_score_it_would_have_had(tmp_path: Path) -> None:
    unreadable = Rule(system=DECOMPOSE_SYSTEM[:30], user=re.compile("Change of plan|not valid"), text="no JSON here")
    refused = Rule(system=ANSWER_SYSTEM[:30], user=re.compile(r"\A(?!Change of plan)"), text=STALE_REPLY)  # else a 400
    result, _ = await run_trip(tmp_path, 6, unreadable, baseline=refused)
    tme, baseline = entries(result, "tme"), entries(result, "full_history")
    assert "LLMOutputError" in tme["trip-06"]["error"] and "LLMRequestError" in baseline["trip-06"]["error"]
    assert tme["trip-06"]["detail"] == baseline["trip-06"]["detail"] == {"failed": True}
    assert tme["trip-06"]["score"] == baseline["trip-06"]["score"] == 0.0
    assert tme["trip-06"]["scores"] == {"classification_agreement": 0.0, "stale_in_prompt": 1.0, "stale_in_answer": 1.0}
    assert baseline["trip-06"]["scores"] == {"stale_in_prompt": 1.0, "stale_in_answer": 1.0}
    assert tme["trip-05"]["score"] == 1.0 and "error" not in tme["trip-05"] and "error" not in baseline["trip-05"]
    assert result["systems"]["tme"]["failed"] == result["systems"]["full_history"]["failed"] == 1
