"""The evaluation harness: what it measures, how it runs systems and items, what it writes, what it refuses.

The harness runs here over HTTP against the scripted server with a small evaluation of the test's own; the five
mechanisms' evaluations run on the real local model (``make test`` starts it) on their first item, through the
command a user runs (ComoRAG's on an excerpt of its book: see :func:`comorag_excerpt`; ExpeRepair's on a
one-function repository: see :func:`experepair_tiny_repository`). Nothing asserts a score:
quality is what the evaluations measure, not what tests pin.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest

from mnemoflow.errors import ConfigError, NodeError
from mnemoflow.evaluation import MECHANISMS, evaluation_class
from mnemoflow.evaluation.comorag import load_book, load_questions
from mnemoflow.evaluation.harness import Attempt, Bench, EvalOptions, Evaluation, Item, Outcome, evaluate
from mnemoflow.evaluation.report import markdown_table, write_result
from mnemoflow.nodes.comorag.chunking import chunk_text
from mnemoflow.settings import LLMSettings, OpenAISettings, Settings
from tests.conftest import RealModel
from tests.support.openai_server import ScriptedOpenAIServer

MNEMOFLOW = str(Path(sys.executable).with_name("mnemoflow"))


class Echo(Evaluation):
    """Asks the model to repeat a word; ``recall`` first spends one call in set-up and one more per item, ``plain``
    one per item; an item named ``broken`` fails as a graph would."""

    mechanism = "echo"
    systems = ("recall", "plain")
    score_name = "accuracy"
    seen: ClassVar[list[tuple[str, str, str]]] = []

    def load(self) -> list[Item]:
        words = ["apple", "broken", "cedar", "delta"]
        return [Item(word, {"word": word}, group="even" if number % 2 else "odd") for number, word in enumerate(words)]

    async def prepare(self, bench: Bench, system: str) -> None:
        if system == "recall":
            await bench.parts.llm.text([{"role": "user", "content": "warm up"}])

    async def attempt(self, bench: Bench, system: str, item: Item) -> Outcome:
        self.seen.append((item.id, system, bench.namespace(system)))
        if item.id == "broken":
            raise NodeError("the graph gave up")
        calls = 2 if system == "recall" else 1
        replies = [await bench.parts.llm.text([{"role": "user", "content": f"say {item.data['word']}"}]) for _ in range(calls)]
        correct = float(replies[-1] == item.data["word"])
        return Outcome(correct, {"exact": correct, "length": float(len(replies[-1]))}, {"reply": replies[-1]})

    def failure(self, item: Item, system: str) -> Outcome:
        return Outcome(0.0, {"exact": 0.0, f"failed_{system}": 1.0})

    def summarize(self, system: str, attempts: list[Attempt]) -> dict[str, Any]:
        return {"odd_items": sum(attempt.item.group == "odd" for attempt in attempts)}


def scripted_settings(server: ScriptedOpenAIServer) -> Settings:
    return Settings(
        openai=OpenAISettings(base_url=server.base_url, api_key="test"),  # type: ignore[arg-type]
        llm=LLMSettings(model="scripted", initial_backoff=0.0, max_backoff=0.01),
    )


async def test_every_system_attempts_every_item_in_order_and_each_attempt_is_measured(tmp_path: Path) -> None:
    Echo.seen.clear()
    with ScriptedOpenAIServer() as server:
        server.script(respond=lambda body: body["messages"][-1]["content"].removeprefix("say ").replace("cedar", "cider"))
        evaluation = Echo(EvalOptions())
        result = await evaluate(evaluation, evaluation.load(), scripted_settings(server), tmp_path)
        sent = server.request_count
    assert [(entry["item"], entry["system"]) for entry in result["per_item"]] == [
        (word, system) for word in ("apple", "broken", "cedar", "delta") for system in ("recall", "plain")
    ]
    assert {namespace for _, system, namespace in Echo.seen if system == "recall"} == {"eval-echo-recall"}
    assert {namespace for _, system, namespace in Echo.seen if system == "plain"} == {"eval-echo-plain"}
    assert result["mechanism"] == "echo" and result["model"] == "scripted" and result["endpoint"] == "openai"
    assert result["items"] == 4 and result["date"].startswith("20")
    recall, plain = result["systems"]["recall"], result["systems"]["plain"]
    assert recall["setup"]["calls"] == 1 and plain["setup"]["calls"] == 0
    assert (recall["calls"], plain["calls"]) == (6, 3)  # the broken item called nothing
    assert recall["calls"] + plain["calls"] + recall["setup"]["calls"] == sent  # every request counted once
    for system in (recall, plain):
        assert system["score"] == 0.5 and system["scores"]["exact"] == 0.5  # cedar came back as cider; broken failed
        assert system["failed"] == 1 and system["attempts"] == 4 and system["scores"]["odd_items"] == 2
        assert system["scores"]["length"] == pytest.approx((5 + 5 + 5) / 3)  # over the items that have the score
    broken = [entry for entry in result["per_item"] if entry["item"] == "broken"]
    assert all(entry["error"] == "NodeError: the graph gave up" and entry["calls"] == 0 for entry in broken)
    assert all(entry["detail"] == {"failed": True} for entry in broken)
    assert [entry["scores"] for entry in broken] == [{"exact": 0.0, "failed_recall": 1.0}, {"exact": 0.0, "failed_plain": 1.0}]
    first = result["per_item"][0]
    assert first["prompt_tokens"] > 0 and first["completion_tokens"] > 0 and first["seconds"] > 0
    assert recall["prompt_tokens"] == sum(e["prompt_tokens"] for e in result["per_item"] if e["system"] == "recall")


async def test_a_model_server_that_goes_away_stops_the_evaluation_instead_of_scoring_zeros(tmp_path: Path) -> None:
    from mnemoflow.errors import LLMUnavailableError

    with ScriptedOpenAIServer() as server:
        settings = scripted_settings(server)
    settings = settings.model_copy(update={"llm": settings.llm.model_copy(update={"max_attempts": 1})})
    evaluation = Echo(EvalOptions())
    with pytest.raises(LLMUnavailableError):  # the server stopped: nothing answers at its address
        await evaluate(evaluation, evaluation.load(), settings, tmp_path)


async def test_the_offline_stand_in_is_refused(tmp_path: Path) -> None:
    evaluation = Echo(EvalOptions())
    with pytest.raises(ConfigError, match="offline stand-in measures nothing"):
        await evaluate(evaluation, evaluation.load(), Settings(llm=LLMSettings(offline=True)), tmp_path)


def test_quick_and_limit_take_the_first_items() -> None:
    items = Echo(EvalOptions()).load()
    assert [item.id for item in Echo(EvalOptions(quick=True)).select(items)] == ["apple", "broken", "cedar"]
    assert [item.id for item in Echo(EvalOptions(limit=2)).select(items)] == ["apple", "broken"]
    assert len(Echo(EvalOptions()).select(items)) == 4


async def test_the_result_is_written_as_json_with_its_table_beside_it(tmp_path: Path) -> None:
    with ScriptedOpenAIServer() as server:
        server.script(respond=lambda body: body["messages"][-1]["content"].removeprefix("say "))
        evaluation = Echo(EvalOptions(quick=True))
        result = await evaluate(evaluation, evaluation.select(evaluation.load()), scripted_settings(server), tmp_path / "work")
    table = write_result(result, tmp_path / "out" / "eval-echo.json")
    assert json.loads((tmp_path / "out" / "eval-echo.json").read_text()) == result
    text = table.read_text()
    assert text == markdown_table(result) + "\n"
    rows = [line for line in text.splitlines() if line.startswith("| recall") or line.startswith("| plain")]
    assert len(rows) == 2 and rows[0].startswith("| recall | 0.667 |")  # apple and cedar right, broken failed


# -- the command -------------------------------------------------------------------------------------------------


def run(*arguments: str, cwd: Path, **environment: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MNEMOFLOW_", "OPENAI_"))}
    env.update(environment)
    return subprocess.run([MNEMOFLOW, *arguments], cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)


NO_MODEL = {"MNEMOFLOW_LLM_OFFLINE": "0", "MNEMOFLOW_LOCAL_SERVER_HOME": "/nonexistent/mnemoflow-model"}
"""An environment with no model at all: a command that reached for one would fail saying so."""


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("all", "--out", "x.json"), "give a mechanism, not all"),
        (("tme", "--book", "story.txt"), "--book and --questions are ComoRAG's"),
        (("comorag", "--data", "x"), "ComoRAG reads --book and --questions"),
        (("tme", "--seed", "1"), "--seed is ExpeRepair's"),
        (("tme", "--systems", "tme,nothing"), "tme has no system 'nothing'; its systems: tme, full_history"),
        (("memgpt",), "'memgpt' is not one of"),
    ],
)
def test_the_command_refuses_options_that_do_not_fit(tmp_path: Path, arguments: tuple[str, ...], message: str) -> None:
    done = run("eval", *arguments, cwd=tmp_path, **NO_MODEL)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert not (tmp_path / "bench").exists()


# -- the five evaluations on the real model, one item each (the suite's time; `make eval` runs them whole) -------

EXCERPT_CHUNKS = 2


def comorag_excerpt(folder: Path) -> dict[str, Path]:
    """``book`` and ``questions`` files for ComoRAG's evaluation: its first bundled question alone, and the bundled
    book cut to its title and the fewest paragraphs, ending with that question's evidence, that make two chunks.

    Indexing the whole book (12 chunks, 16 summary calls) was most of the suite's longest test; on two chunks the
    indexing still writes a semantic and an episodic summary, and the three systems answer the same question."""
    book = load_book()
    question = load_questions(None, book)[0]
    evidence = [" ".join(quote.split()) for quote in question.evidence]
    title, *paragraphs = [paragraph for paragraph in book.text.split("\n\n") if paragraph.strip()]
    last = max(at for at, paragraph in enumerate(paragraphs) if any(quote in " ".join(paragraph.split()) for quote in evidence))
    first = last
    while first > 0 and len(chunk_text("\n\n".join(paragraphs[first : last + 1]))) < EXCERPT_CHUNKS:
        first -= 1
    folder.mkdir(parents=True, exist_ok=True)
    excerpt, questions = folder / f"{book.id}-excerpt.txt", folder / "questions.json"
    excerpt.write_text("\n\n".join([title, *paragraphs[first : last + 1]]) + "\n", encoding="utf-8")
    questions.write_text(json.dumps([question.model_dump(mode="json")]), encoding="utf-8")
    return {"book": excerpt, "questions": questions}


TINY_REPOSITORY: dict[str, Any] = {
    "id": "calc-double",
    "family": "wrong_operator",
    "repo": "acme/calc",
    "issue": "double(2) returns 6, not 4.",
    "files": {"calc.py": "def double(n):\n    return n * 3\n"},
    "hidden_tests": {"test_calc.py": "from calc import double\n\n\ndef test_double():\n    assert double(2) == 4\n"},
    "fix": {"calc.py": "def double(n):\n    return n * 2\n"},
}


def experepair_tiny_repository(folder: Path) -> dict[str, Path]:
    """``data`` for ExpeRepair's evaluation: one repository of one two-line function, a one-line issue and one hidden
    test (:data:`TINY_REPOSITORY`).

    On the bundled first issue (three files, a two-line issue, four hidden tests) each system read 7.5 to 8.5k
    prompt tokens in its 13 to 15 calls, the suite's longest test; on this one both systems run the same nodes
    through the whole loop (reproduce, localize, patch, review, refine, learn) on 6.4 to 6.7k: what is left is the
    graph's own instructions and the model's reproduction script and its output, which no data set makes smaller."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "repositories.json"
    data.write_text(json.dumps([TINY_REPOSITORY]), encoding="utf-8")
    return {"data": data}


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_an_evaluation_runs_both_systems_on_its_first_item_on_the_real_model(
    real_model: RealModel, tmp_path: Path, mechanism: str
) -> None:
    excerpts = {"comorag": comorag_excerpt, "experepair": experepair_tiny_repository}
    data = excerpts[mechanism](tmp_path / "data") if mechanism in excerpts else {}
    # ExpeRepair's two ablations (one memory each) run in its scripted harness test; here the mechanism and its baseline
    chosen = ("experepair", "no_memory") if mechanism == "experepair" else ()
    options = EvalOptions(limit=1, book=data.get("book"), questions=data.get("questions"), data=data.get("data"), systems=chosen)
    given = [part for name, path in data.items() for part in (f"--{name}", str(path))]
    given += ["--systems", ",".join(chosen)] if chosen else []
    done = run("eval", mechanism, "--limit", "1", *given, cwd=tmp_path, MNEMOFLOW_LOCAL_SERVER_HOME=str(real_model.home))
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "bench" / "results" / f"eval-{mechanism}.json").read_text())
    evaluation = evaluation_class(mechanism)(options)
    items = [item.id for item in evaluation.select(evaluation.load())]
    assert len(items) == 1
    assert result["mechanism"] == mechanism and result["model"] == "smollm2-135m-instruct" and result["endpoint"] == "local"
    assert result["items"] == len(items) and result["quick"] is False
    assert set(result["systems"]) == set(evaluation.chosen_systems) and len(evaluation.chosen_systems) >= 2
    assert sorted((entry["item"], entry["system"]) for entry in result["per_item"]) == sorted(
        (item, system) for item in items for system in evaluation.chosen_systems
    )
    for name, system in result["systems"].items():
        assert 0.0 <= system["score"] <= 1.0 and system["attempts"] == len(items)
        # a measure over part of the run (G-Memory's later thirds) has no value with one item
        assert all(value is None or isinstance(value, int | float) for value in system["scores"].values() if not isinstance(value, dict))
        made_calls = system["calls"] + system["setup"].get("calls", 0)
        assert made_calls > 0, f"{name} never called the model"
        assert system["prompt_tokens"] >= 0 and system["completion_tokens"] >= 0 and system["seconds"] > 0
    for entry in result["per_item"]:
        assert 0.0 <= entry["score"] <= 1.0 and entry["seconds"] > 0
        assert set(entry) >= {"item", "system", "score", "scores", "calls", "prompt_tokens", "completion_tokens", "seconds"}
    if mechanism == "comorag":  # the run indexed the excerpt, not the bundled book, through both summary layers
        index = result["data"]["index"]
        assert result["data"]["book"]["source"] == str(data["book"]) and index["chunks"] == EXCERPT_CHUNKS
        assert index["semantic_summaries"] >= 1 and index["episodic_summaries"] == 1
    if mechanism == "experepair":  # the run repaired the tiny repository, not the bundled one
        assert result["data"]["source"] == str(data["data"]) and result["data"]["repositories"] == 1
        assert {entry["detail"]["repo"] for entry in result["per_item"]} == {TINY_REPOSITORY["repo"]}
        # both systems ran the repair graph to its end on the real model (the graph's own verdict, either way)
        assert {entry["detail"].get("status") for entry in result["per_item"]} <= {"resolved", "unresolved"}, result["per_item"]
    table = (tmp_path / "bench" / "results" / f"eval-{mechanism}.md").read_text()
    assert all(f"| {system} |" in table for system in evaluation.chosen_systems) and table in done.stdout + "\n"
