"""ComoRAG's evaluation: its data set, what it refuses, how it scores, and how its three systems run.

The systems run here against the scripted OpenAI server on a small book, with an answer agent that answers only
from a later cycle's context: so the mechanism answers and its two baselines stay at an impasse, and each system's
calls show what it is. The quick evaluation on the real model runs in tests/test_eval.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mnemoflow.errors import ConfigError
from mnemoflow.evaluation import evaluation_class
from mnemoflow.evaluation.comorag import KINDS, ComoRAGEvaluation, Question, load_book, load_questions
from mnemoflow.evaluation.harness import EvalDataError, EvalOptions, Item, evaluate
from mnemoflow.evaluation.scoring import choice_letter, exact_match, normalize_answer, token_f1
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.settings import EvalSettings, LLMSettings, OpenAISettings, Settings
from tests.conftest import new_store
from tests.support.comorag_book import answer, script
from tests.support.openai_server import ScriptedOpenAIServer
from tests.test_comorag_qa import QUESTION, STEP0, ask, roles

MNEMOFLOW = str(Path(sys.executable).with_name("mnemoflow"))
BOOK_TEXT = """The Ferry

Anselm Roe was the ferryman of Carrow's Rest, and he carried salt and people across the river.

In the spring of the third year Corvin Ashe became the guardian of Tobin Orsk, because he held the pledge on the house.

Tobin sold the notebook to Jessamy Pell to pay the debt, so that the house would still be theirs.
"""
SMALL_SET = [
    {"id": "trade", "kind": "direct_fact", "question": "What was Anselm Roe's trade?", "answer": "ferryman",
     "aliases": ["the ferryman of Carrow's Rest"], "evidence": ["Anselm Roe was the ferryman of Carrow's Rest"]},
    {"id": "guardian", "kind": "multi_hop_temporal", "question": "Who was Tobin's guardian in the third year?",
     "answer": "Corvin Ashe"},
    {"id": "motive", "kind": "multiple_choice_motivation", "question": "Why did Tobin sell the notebook?",
     "options": {"A": "For money of his own.", "B": "To pay the debt on the house."}, "answer": "B"},
]  # fmt: skip


def write_set(folder: Path, entries: list[dict[str, Any]], name: str = "questions.json") -> Path:
    path = folder / name
    path.write_text(json.dumps(entries), encoding="utf-8")
    return path


def small_options(tmp_path: Path, **changes: Any) -> EvalOptions:
    book = tmp_path / "the-ferry.txt"
    book.write_text(BOOK_TEXT, encoding="utf-8")
    return EvalOptions(book=book, questions=write_set(tmp_path, SMALL_SET), **changes)


# -- the bundled data --------------------------------------------------------------------------------------------


def test_the_bundled_questions_load_with_a_third_of_each_kind_and_quick_takes_one_of_each() -> None:
    evaluation = evaluation_class("comorag")(EvalOptions())
    items = evaluation.load()
    kinds = Counter(item.group for item in items)
    assert len(items) >= 30 and set(kinds) == set(KINDS)
    assert all(len(items) // 4 <= count <= len(items) // 2 for count in kinds.values()), kinds
    assert len({item.id for item in items}) == len(items)
    questions: list[Question] = [item.data for item in items]
    assert all(question.evidence for question in questions)  # every answer is checkable against the story
    short = [question for question in questions if not question.options]
    assert all(1 <= len(question.answer.split()) <= 5 for question in short), [q.answer for q in short]  # EM and F1 mean something
    assert {item.group for item in ComoRAGEvaluation(EvalOptions(quick=True)).select(items)} == set(KINDS)
    assert load_book(None).id == "the-salt-road" and load_book(None).title == "The Salt Road"


# -- malformed data is refused, naming the file and the item -----------------------------------------------------

BAD_ENTRIES = [
    ({**SMALL_SET[0], "question": "  "}, "item 0 (id 'trade'): question: String should have at least 1 character"),
    ({**SMALL_SET[0], "kind": "opinion"}, "item 0 (id 'trade'): kind: Input should be 'direct_fact'"),
    ({**SMALL_SET[2], "answer": "C"}, "item 0 (id 'motive'): Value error, answer 'C' is not one of the option letters"),
    ({**SMALL_SET[0], "options": {"A": "x", "B": "y"}}, "options belong to 'multiple_choice_motivation' questions only"),
    ({**SMALL_SET[2], "options": {}}, "item 0 (id 'motive'): Value error, a multiple-choice question needs at least two"),
    ({**SMALL_SET[2], "options": {"a": "x", "B": "y"}, "answer": "B"}, "option keys must be single capital letters"),
    ({**SMALL_SET[2], "aliases": ["b"]}, "aliases are for short answers"),
    ({**SMALL_SET[0], "evidence": ["Anselm Roe was a blacksmith"]}, "item 0 (id 'trade'): evidence 0 is not in the book"),
    ({**SMALL_SET[0], "hint": "x"}, "item 0 (id 'trade'): hint: Extra inputs are not permitted"),
    ({**SMALL_SET[0], "aliases": [""]}, "item 0 (id 'trade'): aliases: Value error, holds an empty entry"),
    ({key: value for key, value in SMALL_SET[1].items() if key != "id"}, "item 0: id: Field required"),
    ("What was Anselm Roe's trade?", "item 0: Input should be a valid dictionary"),
]


@pytest.mark.parametrize(("entry", "message"), BAD_ENTRIES)
def test_a_malformed_question_is_refused_naming_the_file_and_the_item(
    tmp_path: Path, entry: Any, message: str
) -> None:
    options = small_options(tmp_path)
    bad = write_set(tmp_path, [entry], "bad.json")
    with pytest.raises(EvalDataError) as caught:
        ComoRAGEvaluation(EvalOptions(book=options.book, questions=bad)).load()
    assert str(caught.value).startswith(f"{bad}: 1 problem:") and message in str(caught.value)


def test_every_problem_is_named_at_once_and_a_repeated_id_names_both_items(tmp_path: Path) -> None:
    options = small_options(tmp_path)
    entries = [SMALL_SET[0], {**SMALL_SET[1], "answer": ""}, {**SMALL_SET[2], "id": "trade"}]
    bad = write_set(tmp_path, entries, "bad.json")
    with pytest.raises(EvalDataError) as caught:
        load_questions(bad, load_book(options.book))
    text = str(caught.value)
    assert text.startswith(f"{bad}: 2 problems:")
    assert "item 1 (id 'guardian'): answer: String should have at least 1 character" in text
    assert "item 2 (id 'trade'): id 'trade' is already used by item 0" in text


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("q.json", "[{", "not valid JSON"),
        ("q.yaml", "- id: [unclosed", "not valid YAML"),
        ("q.json", '{"questions": []}', "expected a list of questions, found dict"),
        ("q.json", "[]", "expected a list of questions, found an empty list"),
        ("q.json", b"\xff\xfe[]", "cannot read the questions as UTF-8 text"),
    ],
)
def test_a_questions_file_that_is_no_list_of_questions_is_refused(tmp_path: Path, name: str, content: Any, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(EvalDataError, match=message) as caught:
        load_questions(path, load_book(None))
    assert str(caught.value).startswith(str(path))


def test_questions_may_be_yaml(tmp_path: Path) -> None:
    import yaml

    options = small_options(tmp_path)
    path = tmp_path / "questions.yaml"
    path.write_text(yaml.safe_dump(SMALL_SET), encoding="utf-8")
    assert [q.id for q in load_questions(path, load_book(options.book))] == ["trade", "guardian", "motive"]


def test_a_missing_or_empty_book_and_a_missing_questions_file_are_refused(tmp_path: Path) -> None:
    with pytest.raises(EvalDataError, match=f"{tmp_path / 'none.txt'}: no such book file"):
        ComoRAGEvaluation(EvalOptions(book=tmp_path / "none.txt")).load()
    (tmp_path / "empty.txt").write_text(" \n\n", encoding="utf-8")
    with pytest.raises(EvalDataError, match="empty.txt: the book is empty"):
        ComoRAGEvaluation(EvalOptions(book=tmp_path / "empty.txt")).load()
    with pytest.raises(EvalDataError, match=f"{tmp_path / 'none.json'}: no such questions file"):
        ComoRAGEvaluation(EvalOptions(questions=tmp_path / "none.json")).load()


NO_MODEL = {"MNEMOFLOW_LLM_OFFLINE": "0", "MNEMOFLOW_LOCAL_SERVER_HOME": "/nonexistent/mnemoflow-model"}


@pytest.mark.subprocess
def test_the_command_refuses_bad_questions_before_it_looks_for_a_model(tmp_path: Path) -> None:
    bad = write_set(tmp_path, [SMALL_SET[0], {**SMALL_SET[2], "answer": "E"}], "bad.json")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MNEMOFLOW_", "OPENAI_"))}
    done = subprocess.run(
        [MNEMOFLOW, "eval", "comorag", "--questions", str(bad)],
        cwd=tmp_path, env={**env, **NO_MODEL}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0 and "bad.json" in done.stderr and "item 1 (id 'motive')" in done.stderr, done.stderr
    assert "local server" not in done.stderr and not (tmp_path / "bench").exists()  # it never reached for a model


# -- scoring -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("The Ferryman of Carrow’s Rest!", "ferryman of carrows rest"),
        ("  A   camel. ", "camel"),
        ("an ANSWER, the end", "answer end"),
        ("Theatre and anthem", "theatre and anthem"),  # articles are words, not prefixes
        ("*", ""),
    ],
)
def test_answers_are_normalised_as_squad_does(text: str, normal: str) -> None:
    assert normalize_answer(text) == normal


def test_exact_match_and_f1_take_the_best_reference() -> None:
    references = ["ferryman", "the ferryman of Carrow's Rest"]
    assert exact_match("The ferryman.", references) == 1.0
    assert exact_match("Ferryman of Carrows Rest", references) == 1.0
    assert exact_match("a blacksmith", references) == 0.0 and exact_match("", [""]) == 0.0
    assert token_f1("ferryman", references) == 1.0
    # "he was a ferryman": 3 tokens (he, was, ferryman), 1 shared with "ferryman": P 1/3, R 1 -> 0.5
    assert token_f1("he was a ferryman", ["ferryman"]) == pytest.approx(0.5)
    # against "ferryman of carrows rest" (4 tokens): 2 shared of 3 -> P 2/3, R 1/2 -> 4/7
    assert token_f1("ferryman carrows river", references) == pytest.approx(4 / 7)
    assert token_f1("*", references) == 0.0 and token_f1("blacksmith", references) == 0.0


OPTIONS = {"A": "Jessamy Pell promised him a place.", "B": "To pay the debt on the house.", "C": "He was told to.", "D": "Anger."}


@pytest.mark.parametrize(
    ("reply", "letter"),
    [
        ("[B]", "B"),
        ("B", "B"),
        ("C. The Pell's debt was a debt of honour", "C"),
        ("(D)", "D"),
        ("**A**", "A"),
        ("The answer is D.", "D"),
        ("Option: C", "C"),
        ("to pay the debt on the house", "B"),
        ("A drover's place on the caravans", None),  # the article, not option A
        ("[E]", None),
        ("*", None),
        ("To pay the debt on the house. He was told to.", None),  # two options quoted: no choice
    ],
)
def test_the_chosen_letter_is_read_however_it_is_written(reply: str, letter: str | None) -> None:
    assert choice_letter(reply, OPTIONS) == letter


def test_a_failed_attempt_scores_zero_on_every_score_its_item_has() -> None:
    evaluation = ComoRAGEvaluation(EvalOptions())
    items = {item.group: item for item in evaluation.load()}
    assert evaluation.failure(items["multiple_choice_motivation"], "rag").scores == {"mc_accuracy": 0.0}
    assert evaluation.failure(items["direct_fact"], "rag").scores == {"em": 0.0, "f1": 0.0}
    evaluation._judge = EvalSettings(judge_base_url="http://127.0.0.1:9/v1")
    failed = evaluation.failure(items["multi_hop_temporal"], "rag")
    assert failed.score == 0.0 and failed.scores == {"em": 0.0, "f1": 0.0, "judge": 0.0}


# -- the systems on the scripted server --------------------------------------------------------------------------

LATER_ANSWERS = {"What was Anselm Roe's trade?": "He ran the river ferry", "Who was Tobin's guardian in the third year?":
                 "Corvin Ashe", "Why did Tobin sell the notebook?": "[B]"}  # fmt: skip


def reply(body: dict[str, Any]) -> Any:
    """Every role of ingestion and question answering; the answer agent answers only with a later cycle's context."""
    system, user = body["messages"][0]["content"], body["messages"][-1]["content"]
    if "named entities from the given paragraph" in system:
        return {"named_entities": []}
    if "RDF" in system:
        return {"triples": []}
    if "narrative analyst" in system:
        return {"findings": ["Corvin Ashe held the pledge on the house."]}
    if "regulation agent" in system:
        return {"probes": ["Who held the pledge on the house?"]}
    if "integration agent" in system:
        return {"narrative": "Corvin Ashe held the pledge and became guardian."}
    if "careful reader" in system:
        asked = user.rsplit("Question: ", 1)[1].split("\n", 1)[0]
        final = LATER_ANSWERS[asked] if "### Historical Information" in user else "*"
        return {"analysis": "### Key Facts\n...", "final_answer": final}
    return "A summary of the passages."


def scripted_settings(server: ScriptedOpenAIServer, judge: ScriptedOpenAIServer | None = None) -> Settings:
    return Settings(
        openai=OpenAISettings(base_url=server.base_url, api_key="test"),  # type: ignore[arg-type]
        llm=LLMSettings(model="scripted", initial_backoff=0.0, max_backoff=0.01),
        eval=EvalSettings(judge_base_url=judge.base_url if judge else None, judge_model="judge"),
    )


ROLES = {"analyst": "cue", "careful reader": "answer", "regulation": "probe", "integration": "fuse", "grade answers": "judge"}


def role_of(request: dict[str, Any]) -> str:
    """The question-time role a request plays, by its system text ("index" for ingestion's calls)."""
    system = request["body"]["messages"][0]["content"]
    return next((name for marker, name in ROLES.items() if marker in system), "index")


async def test_the_mechanism_probes_past_an_impasse_its_baselines_stop_at_and_a_judge_scores_apart(tmp_path: Path) -> None:
    with ScriptedOpenAIServer() as server, ScriptedOpenAIServer() as judge:
        server.script(respond=reply)
        judge.script(respond=lambda body: {"correct": "ferry" in body["messages"][-1]["content"]})
        evaluation = ComoRAGEvaluation(small_options(tmp_path))
        result = await evaluate(evaluation, evaluation.load(), scripted_settings(server, judge), tmp_path / "work")
        sent, judged = server.request_count, [(role_of(request), request["body"]["model"]) for request in judge.requests]
        chats = [request for request in server.requests if request["path"].endswith("/chat/completions")]
    systems = result["systems"]
    assert systems["comorag"]["setup"]["calls"] > 0 and systems["rag"]["setup"] == systems["comorag_step0"]["setup"]
    assert systems["rag"]["setup"]["calls"] == 0  # one index, built once
    assert sent == sum(system["calls"] + system["setup"]["calls"] for system in systems.values())
    assert judged == [("judge", "judge")]  # the paraphrase only: an exact match and an impasse need no verdict
    per_item = {(entry["item"], entry["system"]): entry for entry in result["per_item"]}
    for item in ("trade", "guardian", "motive"):
        assert per_item[(item, "rag")]["calls"] == 1  # one retrieval (no facts: no filter call), one answer
        assert per_item[(item, "comorag_step0")]["calls"] == 4  # three cues, one answer
        assert per_item[(item, "comorag")]["calls"] > 4
        assert per_item[(item, "comorag")]["detail"]["cycles"] == 1 and per_item[(item, "comorag")]["detail"]["probes"] == 1
        assert per_item[(item, "rag")]["detail"]["answer"] == "*" and per_item[(item, "rag")]["score"] == 0.0
    assert per_item[("trade", "comorag")]["scores"] == {"em": 0.0, "f1": 0.0, "judge": 1.0}
    assert per_item[("trade", "comorag")]["score"] == 1.0  # the judge's verdict, not exact match
    assert per_item[("guardian", "comorag")]["scores"] == {"em": 1.0, "f1": 1.0, "judge": 1.0}
    assert per_item[("motive", "comorag")]["scores"] == {"mc_accuracy": 1.0}
    assert per_item[("motive", "comorag")]["detail"]["letter"] == "B"
    assert systems["comorag"]["score"] == 1.0 and systems["comorag"]["scores"]["answered"] == 1.0
    assert systems["rag"]["score"] == systems["comorag_step0"]["score"] == 0.0
    assert systems["rag"]["scores"]["accuracy_direct_fact"] == 0.0 and systems["comorag"]["scores"]["accuracy_direct_fact"] == 1.0
    assert [role_of(request) for request in chats].count("answer") == 3 * (2 + 1 + 1)  # comorag tries twice, the others once
    assert result["data"]["index"]["chunks"] == 1 and result["data"]["judge"] == "judge"
    assert result["data"]["questions"]["direct_fact"] == 1
    store = new_store("sqlite", sqlite_path=tmp_path / "work" / "memory.db")
    await store.setup()
    try:  # a workspace per system and question, all beside the one index
        assert await store.count_nodes("eval-comorag-index", "Question") == 9
        assert await store.count_nodes("eval-comorag-index", "Book") == 1
    finally:
        await store.close()


def test_comorag_umap_runs_only_when_named_and_only_with_its_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    assert ComoRAGEvaluation(EvalOptions()).chosen_systems == ("comorag", "comorag_step0", "rag")
    assert ComoRAGEvaluation(EvalOptions(systems=("comorag_umap", "rag"))).chosen_systems == ("rag", "comorag_umap")
    with pytest.raises(ConfigError, match="comorag has no system 'umap'; its systems: comorag, comorag_step0, rag, comorag_umap"):
        ComoRAGEvaluation(EvalOptions(systems=("umap",)))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: None if name == "umap" else real_find_spec(name, *rest))
    with pytest.raises(ConfigError, match=r"needs the umap extra.*pip install 'mnemoflow\[umap\]'"):
        ComoRAGEvaluation(EvalOptions(systems=("comorag_umap",)))
    assert ComoRAGEvaluation(EvalOptions(systems=("rag",))).chosen_systems == ("rag",)  # the others need no extra


async def test_comorag_umap_answers_from_its_own_index_of_the_book(tmp_path: Path) -> None:
    with ScriptedOpenAIServer() as server:
        server.script(respond=reply)
        evaluation = ComoRAGEvaluation(small_options(tmp_path, limit=1, systems=("rag", "comorag_umap")))
        result = await evaluate(evaluation, evaluation.select(evaluation.load()), scripted_settings(server), tmp_path / "work")
    systems, data = result["systems"], result["data"]
    assert list(systems) == ["rag", "comorag_umap"]
    assert systems["rag"]["setup"]["calls"] == systems["comorag_umap"]["setup"]["calls"] > 0  # each indexed its own copy
    assert (data["index"]["book_id"], data["index"]["reduction"]) == ("the-ferry", "pca")
    assert (data["index_umap"]["book_id"], data["index_umap"]["reduction"]) == ("the-ferry-umap", "umap")
    assert "comorag_umap" in data["systems"] and "comorag" in data["systems"]
    [umap] = [entry for entry in result["per_item"] if entry["system"] == "comorag_umap"]
    assert umap["detail"]["cycles"] == 1 and umap["score"] == 0.0  # comorag's QA: it probed (the judge is not configured)
    store = new_store("sqlite", sqlite_path=tmp_path / "work" / "memory.db")
    await store.setup()
    try:
        books = await store.list_nodes("eval-comorag-index", kind="Book")
        questions = await store.list_nodes("eval-comorag-index", kind="Question")
    finally:
        await store.close()
    assert sorted(book.properties["book_id"] for book in books) == ["the-ferry", "the-ferry-umap"]
    assert sorted(question.properties["book_id"] for question in questions) == ["the-ferry", "the-ferry-umap"]


async def test_a_judge_that_gives_no_verdict_stops_the_evaluation(tmp_path: Path) -> None:
    with ScriptedOpenAIServer() as server, ScriptedOpenAIServer() as judge:
        server.script(respond=reply)
        judge.script(respond=lambda body: "no idea")
        evaluation = ComoRAGEvaluation(small_options(tmp_path, limit=1))
        settings = scripted_settings(server, judge)
        with pytest.raises(ConfigError, match="the judge 'judge' gave no verdict"):
            await evaluate(evaluation, evaluation.select(evaluation.load()), settings, tmp_path / "work")


# -- the graph option behind rag ---------------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer() as running:
        yield running


async def test_max_cycles_zero_is_one_retrieval_the_cues_and_one_answer_even_at_an_impasse(
    sqlite_store: GraphStore, server: ScriptedOpenAIServer, namespace: str, tmp_path: Path
) -> None:
    script(server, [answer("*")])
    result = await ask(sqlite_store, tmp_path, server.gateway(), namespace, {"question": QUESTION, "max_cycles": 0})
    assert roles(server) == STEP0 and result.steps == ["retrieve", "encode", "answer", "finalize"]
    assert result.state["final_answer"] == "*"


async def test_without_encode_first_and_cycles_it_is_plain_retrieval_and_one_answer(
    sqlite_store: GraphStore, server: ScriptedOpenAIServer, namespace: str, tmp_path: Path
) -> None:
    script(server, [answer("Corvin Ashe")])
    values = {"question": QUESTION, "max_cycles": 0, "encode_first": False}
    result = await ask(sqlite_store, tmp_path, server.gateway(), namespace, values)
    assert roles(server) == ["filter", "answer"] and result.state["final_answer"] == "Corvin Ashe"
    assert await sqlite_store.count_nodes(namespace, "MemoryUnit") == 0


async def test_without_encode_first_the_question_is_encoded_after_its_first_impasse_as_the_paper_orders(
    sqlite_store: GraphStore, server: ScriptedOpenAIServer, namespace: str, tmp_path: Path
) -> None:
    script(server, [answer("*"), answer("Corvin Ashe")], [{"probes": ["Who looked after the Orsk children?"]}])
    values = {"question": QUESTION, "encode_first": False}
    result = await ask(sqlite_store, tmp_path, server.gateway(), namespace, values)
    cues = ["cue", "cue", "cue"]
    assert roles(server) == ["filter", "answer", *cues, "probe", "filter", *cues, "fuse", "answer"]
    assert result.state["final_answer"] == "Corvin Ashe" and result.state["cycle"] == 1
    pooled = [unit for unit in result.state["units"] if unit.id in result.state["pool_unit_ids"]]
    assert sorted(unit.cycle for unit in pooled) == [0, 0, 0]  # the question's own evidence joined the pool
    assert result.state["probe_history"][0] == QUESTION


def test_items_carry_their_kind_as_group() -> None:
    items: list[Item] = ComoRAGEvaluation(EvalOptions(limit=6)).load()
    assert all(item.group == item.data.kind for item in items)
