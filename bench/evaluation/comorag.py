"""ComoRAG against its step-0 ablation and plain retrieval-augmented answering, on questions about one book.

The data: a book (the bundled story *The Salt Road* unless ``--book``) and questions about it (``data/comorag/
questions.json`` unless ``--questions``, JSON or YAML), each with an id and a kind: ``direct_fact`` and
``multi_hop_temporal`` questions have short answers (and may list other acceptable ones in ``aliases``),
``multiple_choice_motivation`` questions have ``options`` (letter -> text) and a letter for answer. ``evidence``
quotes, when given, must appear in the book, so an answer is checkable against the text.

The systems, all on the ``comorag-qa`` graph, with the same index, retrieval and answer budgets and answer prompt:

- ``comorag``: the mechanism, probing cycles after an impasse (the graph's five; on the local small model one,
  with the demo's budgets, :mod:`mnemoflow.graphs.budgets`);
- ``comorag_step0``: ``max_cycles`` 0, the paper's ablation: retrieval, the three cues, one answer, no probing;
- ``rag``: ``max_cycles`` 0 and ``encode_first`` off: one retrieval and one answer call, no memory units (with a
  knowledge graph, the retrieval's fact filter is one more call, as it is in the other systems' retrieval);
- ``comorag_umap``, only when ``--systems`` names it: ``comorag`` over a second index of the same book (its own
  book id, ``<book>-umap``) whose semantic layer was clustered after the paper's UMAP instead of PCA; it needs
  the ``umap`` extra, and its set-up is that second indexing.

The first attempt reads the raw evidence in all three, so ``comorag_step0`` and ``rag`` send the same answer
prompt; they differ in what they spend, and ``comorag`` differs from them only when an attempt ends in an impasse.

The book is indexed once (``comorag-ingest``, without a knowledge graph on the small model), in one namespace that
every system answers in (``comorag_umap`` from its own index there): a question's workspace is keyed by its run's
thread, one per system and question, and retrieval reads only the index, so no system sees another's workspace.
An indexing is measured as the set-up of the first system that reads it (``comorag``'s, ``comorag_umap``'s).

Scores: ``mc_accuracy`` for a multiple-choice question (the letter read from the answer, see
:func:`~mnemoflow.evaluation.scoring.choice_letter`); ``em`` and ``f1`` (SQuAD normalisation, best over the
acceptable answers) for a short one, and ``judge`` (1 or 0) when a judge model is configured
(``MNEMOFLOW_EVAL_JUDGE_BASE_URL``...). The main score is accuracy, the paper's measure for multiple choice:
``mc_accuracy``, or for a short answer the judge's verdict, else ``em``: a judge can read a right paraphrase as
right, which exact match cannot, and without one exact match is the strict floor, with ``f1`` beside it for the
partly right. An impasse (``*``) scores 0 everywhere.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mnemoflow.errors import ConfigError, LLMError
from mnemoflow.evaluation.harness import Attempt, Bench, EvalDataError, EvalOptions, Evaluation, Item, Outcome, mean
from mnemoflow.evaluation.scoring import choice_letter, exact_match, token_f1
from mnemoflow.graphs.budgets import SMALL_MODEL_BUDGETS, SMALL_MODEL_INPUTS

if TYPE_CHECKING:
    from mnemoflow.graphs.loader import LoadedGraph
    from mnemoflow.settings import EvalSettings, LLMSettings

__all__ = ["EVALUATION", "KINDS", "Book", "ComoRAGEvaluation", "Question", "Verdict", "load_book", "load_questions"]

KINDS = ("direct_fact", "multi_hop_temporal", "multiple_choice_motivation")
MULTIPLE_CHOICE = "multiple_choice_motivation"
INDEX = "index"
"""The pseudo-system whose namespace holds the book's index and every system's workspaces."""
UMAP = "comorag_umap"
SYSTEM_INPUTS: dict[str, dict[str, Any]] = {
    "comorag": {},
    "comorag_step0": {"max_cycles": 0},
    "rag": {"max_cycles": 0, "encode_first": False},
    UMAP: {},
}
OPTIONAL_SYSTEMS = (UMAP,)
"""Systems that run only when ``--systems`` names them: ``comorag_umap`` needs the umap extra and a second index."""


class Book(BaseModel):
    """The text the questions are asked of, and the id and title it is indexed under."""

    model_config = ConfigDict(frozen=True)

    id: str
    title: str
    text: str
    source: str


class Question(BaseModel):
    """One question of the data set, checked against its kind."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    kind: Literal["direct_fact", "multi_hop_temporal", "multiple_choice_motivation"]
    question: str = Field(min_length=1)
    answer: str = Field(min_length=1)
    """A short answer (1-5 words), or the letter of the right option."""
    aliases: list[str] = Field(default_factory=list)
    """Other acceptable short answers."""
    options: dict[str, str] = Field(default_factory=dict)
    evidence: list[str] = Field(default_factory=list)
    """Passages of the book that support the answer, quoted exactly (whitespace aside)."""

    @field_validator("aliases", "evidence")
    @classmethod
    def _no_blank_entries(cls, values: list[str]) -> list[str]:
        if any(not value.strip() for value in values):
            raise ValueError("holds an empty entry")
        return [value.strip() for value in values]

    @model_validator(mode="after")
    def _fits_its_kind(self) -> Question:
        if self.kind != MULTIPLE_CHOICE:
            if self.options:
                raise ValueError(f"options belong to {MULTIPLE_CHOICE!r} questions only, not {self.kind!r}")
            return self
        letters = sorted(self.options)
        if len(letters) < 2:
            raise ValueError("a multiple-choice question needs at least two options")
        if bad := [letter for letter in letters if not re.fullmatch(r"[A-Z]", letter)]:
            raise ValueError(f"option keys must be single capital letters, not {bad}")
        if blank := [letter for letter in letters if not self.options[letter].strip()]:
            raise ValueError(f"options {blank} have no text")
        if self.answer not in self.options:
            raise ValueError(f"answer {self.answer!r} is not one of the option letters {letters}")
        if self.aliases:
            raise ValueError("aliases are for short answers; a multiple-choice answer is one letter")
        return self

    @property
    def references(self) -> list[str]:
        """Every acceptable short answer."""
        return [self.answer, *self.aliases]


class Verdict(BaseModel):
    """The judge's reply."""

    REPLY_TOKENS: ClassVar[int] = 20

    correct: bool = Field(description="Whether the candidate answer is correct.")


JUDGE_SYSTEM = (
    "You grade answers to questions about a story. Given the question, the reference answer (and any other "
    "acceptable answers) and a candidate answer, decide whether the candidate says the same as the reference, "
    "in any wording. It is not correct when it names something else, hedges between several answers, adds a "
    "claim that contradicts the reference, or says it cannot answer. Judge only against the reference, not "
    'your own knowledge. Reply with JSON: {"correct": true} or {"correct": false}.'
)


def _bundled(*parts: str, package: str = "mnemoflow.evaluation") -> Traversable:
    return resources.files(package).joinpath(*parts)


def _read(source: Path | Traversable, what: str) -> str:
    try:
        return source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EvalDataError(f"{source}: no such {what} file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalDataError(f"{source}: cannot read the {what} as UTF-8 text ({exc})") from None


def load_book(path: Path | None = None) -> Book:
    """The book at ``path`` (the bundled story when None), refused when missing, unreadable or empty."""
    source = path or _bundled("data", "the-salt-road.txt", package="mnemoflow.nodes.comorag")
    text = _read(source, "book")
    if not text.strip():
        raise EvalDataError(f"{source}: the book is empty")
    slug = re.sub(r"[^a-z0-9]+", "-", Path(str(source)).stem.lower()).strip("-") or "book"
    title = text.strip().split("\n", 1)[0].strip()[:200]
    return Book(id=slug, title=title, text=text, source=str(source))


def load_questions(path: Path | None, book: Book) -> list[Question]:
    """Every question of ``path`` (the bundled file when None), each checked, with every problem named by file and
    item at once: malformed fields, kinds, options, repeated ids, evidence the book does not contain."""
    source = path or _bundled("data", "comorag", "questions.json")
    raw = _read(source, "questions")
    is_yaml = str(source).endswith((".yaml", ".yml"))
    try:
        entries = yaml.safe_load(raw) if is_yaml else json.loads(raw)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise EvalDataError(f"{source}: not valid {'YAML' if is_yaml else 'JSON'}: {exc}") from None
    if not isinstance(entries, list) or not entries:
        found = "an empty list" if isinstance(entries, list) else type(entries).__name__
        raise EvalDataError(f"{source}: expected a list of questions, found {found}")
    book_text = " ".join(book.text.split())
    problems: list[str] = []
    questions: list[Question] = []
    first_of: dict[str, int] = {}
    for index, entry in enumerate(entries):
        given_id = entry.get("id") if isinstance(entry, dict) else None
        name = f"item {index}" + (f" (id {given_id!r})" if isinstance(given_id, str) else "")
        try:
            question = Question.model_validate(entry)
        except ValidationError as exc:
            problems += [f"{name}: {_where(error['loc'])}{error['msg']}" for error in exc.errors()]
            continue
        if question.id in first_of:
            problems.append(f"{name}: id {question.id!r} is already used by item {first_of[question.id]}")
        first_of.setdefault(question.id, index)
        problems += [
            f"{name}: evidence {number} is not in the book {book.source}: {quote[:80]!r}"
            for number, quote in enumerate(question.evidence)
            if " ".join(quote.split()) not in book_text
        ]
        questions.append(question)
    if problems:
        listed = "\n  ".join(problems)
        raise EvalDataError(f"{source}: {len(problems)} problem{'s' if len(problems) > 1 else ''}:\n  {listed}")
    return questions


def _where(location: tuple[Any, ...]) -> str:
    fields = ".".join(str(part) for part in location)
    return f"{fields}: " if fields else ""


class ComoRAGEvaluation(Evaluation):
    """ComoRAG's probing cycles against answering from the first retrieval, with and without memory units."""

    mechanism = "comorag"
    systems = ("comorag", "comorag_step0", "rag", UMAP)
    score_name = "accuracy"

    def __init__(self, options: EvalOptions) -> None:
        super().__init__(options)
        if UMAP in options.systems:  # refused before any model is looked for
            from mnemoflow.nodes.comorag.clustering import require_umap

            require_umap()
        self._book: Book | None = None
        self._counts: dict[str, int] = {}
        self._graph: LoadedGraph | None = None
        self._small_model: bool | None = None
        self._judge: EvalSettings | None = None
        self._judge_llm: LLMSettings | None = None
        self._indexes: dict[str, dict[str, Any]] = {}
        """What each index holds, by its semantic layer's reduction (``pca``, ``umap``)."""

    @property
    def chosen_systems(self) -> tuple[str, ...]:
        """Those ``--systems`` names, else every system but the optional ones (:data:`OPTIONAL_SYSTEMS`)."""
        if self.options.systems:
            return super().chosen_systems
        return tuple(system for system in self.systems if system not in OPTIONAL_SYSTEMS)

    # -- data ------------------------------------------------------------------------------------------------

    @property
    def book(self) -> Book:
        if self._book is None:
            self._book = load_book(self.options.book)
        return self._book

    def load(self) -> list[Item]:
        questions = load_questions(self.options.questions, self.book)
        self._counts = dict(Counter(question.kind for question in questions))
        return [Item(question.id, question, group=question.kind) for question in questions]

    # -- running ---------------------------------------------------------------------------------------------

    async def prepare(self, bench: Bench, system: str) -> None:
        """Index the book once per reduction, for the first system that reads that index: ``comorag_umap`` reads
        its own (UMAP), the others share one (PCA)."""
        from mnemoflow.graphs import load_graph, with_node_config

        self._small_model = bench.small_model
        judge = bench.parts.settings.eval
        self._judge = judge if judge.judge_base_url else None
        self._judge_llm = bench.parts.settings.llm
        reduction = _reduction(system)
        if reduction not in self._indexes:
            self._indexes[reduction] = await self._index(bench, reduction)
        if self._graph is None:
            qa = load_graph("comorag-qa")
            self._graph = with_node_config(qa, SMALL_MODEL_BUDGETS["comorag-qa"]) if bench.small_model else qa

    async def _index(self, bench: Bench, reduction: str) -> dict[str, Any]:
        """Index the book under its id for ``reduction`` (with the small model's budgets on the local model)."""
        from mnemoflow.graphs import load_graph, with_node_config

        config = {name: dict(values) for name, values in SMALL_MODEL_BUDGETS["comorag-ingest"].items()} if bench.small_model else {}
        config.setdefault("semantic", {})["reduction"] = reduction
        ingest = with_node_config(load_graph("comorag-ingest"), config)
        book, book_id = self.book, self._book_id(reduction)
        values = {"book_id": book_id, "title": book.title, "text": book.text, **self._small_inputs("comorag-ingest")}
        state = (await bench.run(ingest, values, system=INDEX, thread_id=f"ingest-{book_id}")).state
        return {
            "book_id": book_id,
            "reduction": reduction,
            "chunks": len(state.get("chunk_ids", [])),
            "knowledge_graph": bool(state.get("kg", True)),
            "entities": len(state.get("entity_ids", [])),
            "facts": state.get("facts", 0),
            "semantic_summaries": sum(state.get("semantic_levels", [])),
            "episodic_summaries": state.get("episodes", 0),
        }

    def _book_id(self, reduction: str) -> str:
        return self.book.id if reduction == "pca" else f"{self.book.id}-{reduction}"

    def _small_inputs(self, graph: str) -> dict[str, Any]:
        return dict(SMALL_MODEL_INPUTS[graph]) if self._small_model else {}

    async def attempt(self, bench: Bench, system: str, item: Item) -> Outcome:
        question: Question = item.data
        assert self._graph is not None, "prepare() indexes the book and loads the graph first"
        values = {
            "question": question.question,
            "book_id": self._book_id(_reduction(system)),
            "options": question.options,
            **self._small_inputs("comorag-qa"),
            **SYSTEM_INPUTS[system],
        }
        state = (await bench.run(self._graph, values, system=INDEX, thread_id=f"{system}-{item.id}")).state
        answer = str(state.get("final_answer", ""))
        detail: dict[str, Any] = {
            "question": question.question,
            "answer": answer,
            "expected": question.answer,
            "status": state.get("status"),
            "cycles": state.get("cycle", 0),
            "probes": len({*state.get("probe_history", []), *state.get("probes", [])} - {question.question}),
        }
        if question.kind == MULTIPLE_CHOICE:
            letter = choice_letter(answer, question.options)
            detail["letter"] = letter
            correct = float(letter == question.answer)
            return Outcome(correct, {"mc_accuracy": correct}, detail)
        if question.aliases:
            detail["aliases"] = question.aliases
        scores = {"em": exact_match(answer, question.references), "f1": token_f1(answer, question.references)}
        if self._judge is not None:
            scores["judge"] = await self._judged(question, answer, scores["em"])
        return Outcome(scores.get("judge", scores["em"]), scores, detail)

    async def _judged(self, question: Question, answer: str, exact: float) -> float:
        """The judge's verdict on a short answer: 1.0 right, 0.0 wrong. An exact match is right and an impasse
        wrong without asking. The judge has its own gateway, so its calls never count as a system's."""
        from mnemoflow.llm import LLM, OpenAIBackend
        from mnemoflow.nodes.comorag.agents import is_impasse

        if exact or is_impasse(answer):
            return exact
        judge, base = self._judge, self._judge_llm
        assert judge is not None and judge.judge_base_url is not None and base is not None
        key = judge.judge_api_key.get_secret_value() if judge.judge_api_key else None
        llm = LLM(
            OpenAIBackend(base_url=judge.judge_base_url, api_key=key, timeout=base.request_timeout),
            base.model_copy(update={"model": judge.judge_model, "cache": False, "temperature": 0.0}),
        )
        others = "".join(f"\nAlso acceptable: {alias}" for alias in question.aliases)
        asked = f"Question: {question.question}\nReference answer: {question.answer}{others}\nCandidate answer: {answer}"
        messages = [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": asked}]
        try:
            return float((await llm.structured(messages, Verdict)).correct)
        except LLMError as exc:  # the judge's fault is no system's failed attempt: stop, and say which settings
            raise ConfigError(f"the judge {judge.judge_model!r} gave no verdict ({exc}); check MNEMOFLOW_EVAL_JUDGE_*") from exc
        finally:
            await llm.aclose()

    def failure(self, item: Item, system: str) -> Outcome:
        question: Question = item.data
        if question.kind == MULTIPLE_CHOICE:
            return Outcome(0.0, {"mc_accuracy": 0.0})
        return Outcome(0.0, {"em": 0.0, "f1": 0.0, **({"judge": 0.0} if self._judge is not None else {})})

    # -- reporting -------------------------------------------------------------------------------------------

    def summarize(self, system: str, attempts: list[Attempt]) -> dict[str, Any]:
        """Accuracy by kind of question; the share of questions answered (not left at ``*``); cycles per question."""
        by_kind = {
            f"accuracy_{kind}": round(mean([a.outcome.score for a in attempts if a.item.group == kind]), 4)
            for kind in KINDS
            if any(a.item.group == kind for a in attempts)
        }
        answered = [float(a.outcome.detail.get("status") == "answered") for a in attempts]
        cycles = [float(a.outcome.detail.get("cycles", 0)) for a in attempts]
        return {**by_kind, "answered": round(mean(answered), 4), "cycles": round(mean(cycles), 4)}

    def describe(self) -> dict[str, Any]:
        book = self.book
        small = bool(self._small_model)
        budgets = (
            "the local small model's (mnemoflow.graphs.budgets): no knowledge graph, 1,000-token contexts, one probing cycle"
            if small
            else "the library graphs' own: knowledge graph, ~5,850-token contexts, five probing cycles"
        )
        return {
            "book": {"source": book.source, "id": book.id, "title": book.title, "words": len(book.text.split())},
            "questions": {"source": str(self.options.questions or _bundled("data", "comorag", "questions.json")), **self._counts},
            "index": {
                **self._indexes.get("pca", {}),
                "shared": "indexed once, in one namespace all systems answer in; each question's workspace is its "
                "own (keyed by the system's run thread); the indexing is the set-up of the first system run",
            },
            **({"index_umap": self._indexes["umap"]} if "umap" in self._indexes else {}),
            "budgets": budgets,
            "systems": {
                "comorag": f"comorag-qa, up to {SMALL_MODEL_INPUTS['comorag-qa']['max_cycles'] if small else 5} probing cycles",
                "comorag_step0": "comorag-qa with max_cycles 0: retrieval, cues, one answer (the paper's step-0 ablation)",
                "rag": "comorag-qa with max_cycles 0 and encode_first off: one retrieval (its fact-filter call with a "
                "knowledge graph), one answer call, no memory units",
                **(
                    {
                        UMAP: "comorag's QA over a second index of the book whose semantic layer was clustered after "
                        "UMAP (the paper's reduction) instead of PCA; its set-up is that indexing"
                    }
                    if UMAP in self.chosen_systems
                    else {}
                ),
            },
            "score": "accuracy: mc_accuracy for multiple choice; for short answers the judge's verdict when a judge is "
            "configured, else exact match (em); f1 beside it",
            "judge": self._judge.judge_model if self._judge is not None else None,
        }


def _reduction(system: str) -> str:
    """The reduction of the semantic layer the system's index was clustered with."""
    return "umap" if system == UMAP else "pca"


EVALUATION = ComoRAGEvaluation
