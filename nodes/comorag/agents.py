"""What ComoRAG says to the model and hears back: reply schemas, prompts, robust parsing, offline answers.

At index time, per chunk, named-entity recognition (``{"named_entities": [...]}``) then triple extraction
conditioned on those entities (``{"triples": [[s, p, o], ...]}``), as in HippoRAG 2; one summary per semantic
cluster (RAPTOR's prompt) and one per episodic window (chronological, key events and turning points).

At question time, five roles, each a structured call:

- fact filter (HippoRAG 2's recognition memory): which of the top facts bear on the query;
- comprehension agent (pi_cue): the key findings one layer's evidence gives for a probe;
- regulation agent (pi_probe): up to three new probes after a failed attempt;
- integration agent (pi_fuse): one narrative from the pool's best cues;
- QA agent (pi_QA): an answer, or ``*`` for an impasse.

The prompts put every piece of evidence in the user message, in sections the offline handlers read back.
Options of a multiple-choice question appear only in the QA prompt (:func:`answer_messages`).

The offline handlers make both graphs run with no model, deterministically: NER takes capitalized word
sequences that are not sentence-initial stop words; triples are "X <verb phrase> Y" between two entities of one
sentence; the question-time roles keep the sentences that share most words with what is asked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, Field, field_validator, model_validator

from mnemoflow.llm import offline_handler

__all__ = [
    "EPISODIC_SYSTEM",
    "MAX_PROBES",
    "NER_SYSTEM",
    "SEMANTIC_SYSTEM",
    "TRIPLES_SYSTEM",
    "AnswerReply",
    "CueReply",
    "FactSelection",
    "FusionReply",
    "NamedEntities",
    "ProbeSet",
    "Triples",
    "answer_messages",
    "capitalized_names",
    "cue_messages",
    "episodic_messages",
    "fact_filter_messages",
    "fusion_messages",
    "is_impasse",
    "loose_probes",
    "ner_messages",
    "parse_final_answer",
    "probe_messages",
    "semantic_messages",
    "triples_messages",
]

MAX_PROBES = 3
Message = dict[str, Any]


# -- index time: extraction and summaries ---------------------------------------------------------------------

NER_SYSTEM = (
    "Your task is to extract named entities from the given paragraph. "
    'Respond with a JSON object: {"named_entities": ["First entity", "Second entity"]}.'
)
TRIPLES_SYSTEM = (
    "Your task is to construct an RDF (Resource Description Framework) graph from the given paragraph and its "
    "named entities. Respond with a JSON object of triples: "
    '{"triples": [["subject", "predicate", "object"]]}. Each triple should contain at least one, preferably two, '
    "of the named entities in the list, and pronouns should be resolved to their specific names."
)
SEMANTIC_SYSTEM = "You are a summarizing assistant. Write a summary of the following, including as many key details as possible."
EPISODIC_SYSTEM = (
    "You are a narrative timeline assistant. Summarize these consecutive passages of a story in chronological "
    "order, keeping the key events, the characters involved and the turning points."
)
_PARAGRAPH = "Paragraph:\n"
_ENTITIES = "Named entities: "


def _at_most(items: int) -> dict[str, Any]:
    """A bound on a list in the schema only: a server that constrains replies by the schema (llama.cpp's grammars)
    stops a small model's runaway list there, while a longer reply from another model still validates (and is cut)."""
    return {"maxItems": items}


class NamedEntities(BaseModel):
    """The named entities of one chunk."""
    REPLY_TOKENS: ClassVar[int] = 200

    named_entities: list[str] = Field(default_factory=list, json_schema_extra=_at_most(30))

    @field_validator("named_entities", mode="before")
    @classmethod
    def _keep_names(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        names = [str(item).strip() for item in value if isinstance(item, str | int | float) and str(item).strip()]
        return list(dict.fromkeys(names))


class Triples(BaseModel):
    """The (subject, predicate, object) triples of one chunk; malformed triples are dropped, not fatal."""
    REPLY_TOKENS: ClassVar[int] = 400

    triples: list[list[str]] = Field(
        default_factory=list, json_schema_extra={"maxItems": 20, "items": {"type": "array", "items": {"type": "string"}, "minItems": 3, "maxItems": 3}}
    )

    @field_validator("triples", mode="before")
    @classmethod
    def _drop_malformed(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        kept: list[list[str]] = []
        for triple in value:
            if not isinstance(triple, list | tuple) or len(triple) != 3:
                continue
            if not all(isinstance(part, str | int | float) and str(part).strip() for part in triple):
                continue
            kept.append([str(part).strip() for part in triple])
        return kept


def ner_messages(passage: str) -> list[Message]:
    return [{"role": "system", "content": NER_SYSTEM}, {"role": "user", "content": _PARAGRAPH + passage}]


def triples_messages(passage: str, entities: Sequence[str]) -> list[Message]:
    user = f"{_ENTITIES}{json.dumps(list(entities), ensure_ascii=False)}\n\n{_PARAGRAPH}{passage}"
    return [{"role": "system", "content": TRIPLES_SYSTEM}, {"role": "user", "content": user}]


def semantic_messages(texts: Sequence[str]) -> list[Message]:
    """The cluster's members, most central first."""
    return [{"role": "system", "content": SEMANTIC_SYSTEM}, {"role": "user", "content": "\n\n".join(texts)}]


def episodic_messages(passages: Sequence[str]) -> list[Message]:
    """A window's passages in reading order."""
    numbered = "\n\n".join(f"Passage {index}:\n{text}" for index, text in enumerate(passages, 1))
    return [{"role": "system", "content": EPISODIC_SYSTEM}, {"role": "user", "content": numbered}]


# -- question time: the five roles' instructions --------------------------------------------------------------

FACT_FILTER_SYSTEM = (
    "You are the recognition memory of a reading assistant. Given a query and numbered candidate facts "
    "(subject predicate object) from a book, keep only the facts that help answer the query, at most four. "
    "Never invent a fact. Reply with the numbers of the facts kept."
)
CUE_SYSTEM = (
    "You are a narrative analyst (comprehension agent). Read the content retrieved from a book and write up to "
    "five key findings that help answer the questions. Each finding is one sentence grounded in the content."
)
PROBE_SYSTEM = (
    "You are a regulation agent. An attempt to answer a question about a book failed for lack of evidence. "
    "Write up to three new retrieval probes: short questions about entities, events or relations that would "
    "uncover the missing evidence. Make them distinct from each other and from the previous probes; write none "
    'if nothing new is worth asking. Reply with JSON like {"probes": ["...", "..."]}.'
)
FUSION_SYSTEM = (
    "You are an integration agent. Merge the earlier analyses of a book into one coherent narrative that keeps "
    "every detail relevant to the current query, in the order events happened."
)
ANSWER_SYSTEM = (
    "You are a careful reader answering a question about a long story from retrieved detail chunks, semantic "
    "summaries, a timeline and earlier findings. In 'analysis', write ### Content Understanding, "
    "### Relevant Information Analysis and ### Key Facts. In 'final_answer' give the shortest answer "
    "(numbers in words), or for a multiple-choice question the letter of one option like [B]. If the "
    "information given is not enough to answer, set 'final_answer' to * and nothing else."
)


# -- question time: schemas -----------------------------------------------------------------------------------


class FactSelection(BaseModel):
    """The fact filter's reply: the 1-based numbers of the facts kept."""
    REPLY_TOKENS: ClassVar[int] = 40

    keep: list[int] = Field(default_factory=list, description="Numbers of the relevant facts, at most four.", json_schema_extra=_at_most(4))


class CueReply(BaseModel):
    """The comprehension agent's key findings."""
    REPLY_TOKENS: ClassVar[int] = 300

    findings: list[str] = Field(
        default_factory=list, description="Up to five key findings, one sentence each.", json_schema_extra=_at_most(5)
    )

    def cue(self) -> str:
        """The findings as the cue text stored in the memory unit ("" when there are none)."""
        lines = [finding.strip() for finding in self.findings[:5] if finding.strip()]
        return "\n".join(f"Key Finding: {line.removeprefix('Key Finding:').strip()}" for line in lines)


_PROBE_KEY = re.compile(r"^probe[_ ]?(\d+)$", re.IGNORECASE)


class ProbeSet(BaseModel):
    """The regulation agent's probes; also reads ``{"probe_1": ...}``, ``{"probe1": ...}`` and a bare list."""
    REPLY_TOKENS: ClassVar[int] = 150

    probes: list[str] = Field(default_factory=list, description="Up to three new probes.", json_schema_extra=_at_most(3))

    @model_validator(mode="before")
    @classmethod
    def _accept_shapes(cls, value: Any) -> Any:
        if isinstance(value, list):
            return {"probes": [str(item) for item in value]}
        if isinstance(value, dict) and "probes" not in value:
            numbered = sorted(
                (int(match.group(1)), str(item))
                for key, item in value.items()
                if (match := _PROBE_KEY.match(str(key).strip())) and isinstance(item, str)
            )
            return {"probes": [item for _, item in numbered]}
        return value


class FusionReply(BaseModel):
    """The integration agent's narrative."""
    REPLY_TOKENS: ClassVar[int] = 500

    narrative: str = Field(description="The merged narrative.")


class AnswerReply(BaseModel):
    """The QA agent's reasoning and final answer (``*`` = impasse)."""
    REPLY_TOKENS: ClassVar[int] = 600

    analysis: str = Field("", description="Content understanding, relevant information, key facts.")
    final_answer: str = Field(description="The shortest answer, an option letter, or * when unanswerable.")


# -- question time: parsing -----------------------------------------------------------------------------------

_FINAL = re.compile(r"#+\s*final\s+answer\s*[:.]?", re.IGNORECASE)
_LOOSE_PROBE = re.compile(r"""["']?probe[_ ]?\d+["']?\s*[:=]\s*["'](.+?)["']\s*[,}\n]""", re.IGNORECASE)


def parse_final_answer(text: str) -> str:
    """The answer after the last "### Final Answer" marker (the whole text when there is none), stripped."""
    parts = _FINAL.split(text)
    return parts[-1].strip().strip("\"'").strip()


def is_impasse(answer: str) -> bool:
    """Whether an answer means "cannot answer yet": empty, ``*``, ``*.``, ``**``, ``[*]``..."""
    return not re.sub(r"[\s*.\[\]()`'\"_:-]", "", answer)


def loose_probes(text: str) -> list[str]:
    """Probes from a reply that is not JSON (single quotes, trailing commas, prose): ``probe_N: '...'`` pairs."""
    return [match.strip() for match in _LOOSE_PROBE.findall(text + "\n") if match.strip()]


# -- question time: prompts -----------------------------------------------------------------------------------


def fact_filter_messages(query: str, facts: list[str]) -> list[Message]:
    listed = "\n".join(f"{number}. {fact}" for number, fact in enumerate(facts, start=1))
    return [{"role": "system", "content": FACT_FILTER_SYSTEM}, {"role": "user", "content": f"Query: {query}\nFacts:\n{listed}"}]


def cue_messages(question: str, probe: str, evidence: list[str]) -> list[Message]:
    asked = question if probe == question else f"{question} {probe}"
    content = "\n".join(evidence)
    return [{"role": "system", "content": CUE_SYSTEM}, {"role": "user", "content": f"Questions: {asked}\nContent:\n{content}"}]


def probe_messages(question: str, context: str, previous: list[str]) -> list[Message]:
    earlier = "\n".join(f"- {probe}" for probe in previous) or "(none)"
    user = f"Original question: {question}\nContext:\n{context}\nPrevious probes:\n{earlier}"
    return [{"role": "system", "content": PROBE_SYSTEM}, {"role": "user", "content": user}]


def fusion_messages(question: str, cues: list[str]) -> list[Message]:
    notes = "\n".join(f"Node {index}:\nNote: {cue}" for index, cue in enumerate(cues, start=1))
    return [
        {"role": "system", "content": FUSION_SYSTEM},
        {"role": "user", "content": f"Previous Analysis:\n{notes}\nCurrent Query: {question}"},
    ]


def answer_messages(question: str, context: str, options: dict[str, str]) -> list[Message]:
    choices = "".join(f"\n[{letter}] {text}" for letter, text in sorted(options.items()))
    asked = f"Question: {question}" + (f"\nOptions:{choices}" if options else "")
    return [{"role": "system", "content": ANSWER_SYSTEM}, {"role": "user", "content": f"{context}\n\n{asked}\nThought:"}]


# -- offline answers, index time (deterministic, for running without a model) ---------------------------------


def _user(messages: list[Message]) -> str:
    return next((str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"), "")


_NAME_STOP_WORDS = (
    "a an and as at but by for from he her his i if in it its my no not of on or our she so that the their them then "
    "there these they this those to we what when where which while who why with you your after afterwards before "
    "until once yes how all one two three every each some"
)
_NAME_STOP = frozenset(_NAME_STOP_WORDS.split())
_CANDIDATE = re.compile(r"[A-Z][\w'’-]*(?:\s+(?:of\s+|the\s+)*[A-Z][\w'’-]*)*")
_SENTENCE = re.compile(r"(?<=[.!?])[\"'”’]*\s+")


def _passage(messages: list[Message]) -> str:
    return _user(messages).split(_PARAGRAPH, 1)[-1]


def _clean(candidate: str) -> str:
    words = re.sub(r"['’]s$", "", candidate).split()
    while words and words[0].lower() in _NAME_STOP:
        words.pop(0)
    while words and words[-1].lower() in _NAME_STOP:
        words.pop()
    return " ".join(words)


def capitalized_names(text: str) -> list[str]:
    """Capitalized word sequences, leading and trailing stop words removed, in order of first appearance."""
    names = [_clean(match.group(0)) for match in _CANDIDATE.finditer(text)]
    return list(dict.fromkeys(name for name in names if name and len(name) > 1))


@offline_handler(NamedEntities)
def _offline_ner(messages: list[Message]) -> NamedEntities:
    return NamedEntities(named_entities=capitalized_names(_passage(messages)))


@offline_handler(Triples)
def _offline_triples(messages: list[Message]) -> Triples:
    user = _user(messages)
    header = user.split("\n", 1)[0]
    entities: list[str] = json.loads(header[len(_ENTITIES) :]) if header.startswith(_ENTITIES) else []
    triples: list[list[str]] = []
    for sentence in _SENTENCE.split(_passage(messages)):
        found = sorted((sentence.find(name), name) for name in entities if name in sentence)
        for (start, left), (end, right) in zip(found, found[1:], strict=False):
            between = sentence[start + len(left) : end].strip(" ,;:")
            words = between.split()
            if 1 <= len(words) <= 4 and words[0].islower() and left != right:
                triples.append([left, " ".join(words), right])
    return Triples(triples=triples)


# -- offline answers, question time ---------------------------------------------------------------------------

_WORD = re.compile(r"[a-z0-9']+")
_QUERY_STOP = frozenset(
    {
        "a", "an", "the", "of", "to", "in", "on", "at", "by", "for", "with", "and", "or", "but", "is", "was", "were",
        "be", "been", "are", "what", "who", "whom", "whose", "which", "why", "how", "when", "where", "did", "does",
        "do", "his", "her", "their", "its", "he", "she", "they", "it", "that", "this", "as", "from", "into", "not", "no",
    }
)  # fmt: skip


def _words(text: str) -> set[str]:
    """Content words, possessives folded ("Roe's" is "roe")."""
    plain = re.sub(r"['\u2019]s\b", "", text.lower())
    return {word for word in _WORD.findall(plain) if word not in _QUERY_STOP and len(word) > 2}


def _field(text: str, label: str) -> str:
    match = re.search(rf"^{label}: ?(.*)$", text, re.MULTILINE)
    return match.group(1).strip() if match else ""


def _sentences(text: str) -> list[str]:
    return [part.strip() for part in re.split(r"(?<=[.!?])\s+|\n+", text) if len(part.strip()) > 3]


@offline_handler(FactSelection)
def _offline_facts(messages: list[Message]) -> FactSelection:
    """Keep the facts that share a word with the query (at most four)."""
    text = _user(messages)
    query = _words(_field(text, "Query"))
    listed = re.findall(r"^(\d+)\. (.*)$", text, re.MULTILINE)
    return FactSelection(keep=[int(number) for number, fact in listed if _words(fact) & query][:4])


@offline_handler(CueReply)
def _offline_cue(messages: list[Message]) -> CueReply:
    """The (up to three) evidence sentences sharing most words with the questions."""
    text = _user(messages)
    asked = _words(_field(text, "Questions"))
    content = text.split("Content:\n", 1)[-1]
    scored = sorted(((len(_words(s) & asked), i, s) for i, s in enumerate(_sentences(content))), key=lambda t: (-t[0], t[1]))
    return CueReply(findings=[sentence for score, _, sentence in scored[:3] if score])


@offline_handler(ProbeSet)
def _offline_probes(messages: list[Message]) -> ProbeSet:
    """One probe about the question's capitalized names, unless it was asked before; else none."""
    text = _user(messages)
    question = _field(text, "Original question")
    names = [name for name in re.findall(r"\b[A-Z][a-z]+(?: [A-Z][a-z]+)*", question) if name.lower() not in _QUERY_STOP]
    if not names:
        return ProbeSet()
    probe = f"What happened to {' and '.join(dict.fromkeys(names))}?"
    previous = text.split("Previous probes:\n", 1)[-1]
    return ProbeSet(probes=[] if probe in previous else [probe])


@offline_handler(FusionReply)
def _offline_fusion(messages: list[Message]) -> FusionReply:
    """The notes' findings, joined in order."""
    notes = re.findall(r"^Note: (.*)$", _user(messages), re.MULTILINE)
    return FusionReply(narrative=" ".join(note.removeprefix("Key Finding:").strip() for note in notes))


@offline_handler(AnswerReply)
def _offline_answer(messages: list[Message]) -> AnswerReply:
    """The context sentence sharing most words with the question (an option letter for MC), or ``*`` when weak."""
    text = _user(messages)
    question_at = text.rfind("\n\nQuestion: ")
    context, asked = text[:question_at], text[question_at:]
    wanted = _words(_field(asked, "Question"))
    best = max(
        ((len(_words(s) & wanted), -i, s) for i, s in enumerate(_sentences(context)) if not s.startswith("#")), default=(0, 0, "")
    )
    if best[0] < max(2, (len(wanted) + 1) // 2):
        return AnswerReply(analysis="### Key Facts\nnot enough support", final_answer="*")
    options = re.findall(r"^\[([A-Z])\] (.*)$", asked, re.MULTILINE)
    if options:
        letter = max(options, key=lambda option: len(_words(option[1]) & _words(best[2])))[0]
        return AnswerReply(analysis=f"### Key Facts\n{best[2]}", final_answer=f"[{letter}]")
    return AnswerReply(analysis=f"### Key Facts\n{best[2]}", final_answer=best[2].removeprefix("Key Finding:").strip())
