"""ComoRAG's five LLM roles: output schemas, prompts, robust parsing and deterministic offline answers.

Every role is a structured call, so the offline model (no key) can stand in for each one:

- fact filter (HippoRAG 2's recognition memory): which of the top facts bear on the query;
- comprehension agent (pi_cue): the key findings one layer's evidence gives for a probe;
- regulation agent (pi_probe): up to three new probes after a failed attempt;
- integration agent (pi_fuse): one narrative from the pool's best cues;
- QA agent (pi_QA): an answer, or ``*`` for an impasse.

The prompts put every piece of evidence in the user message, in sections the offline handlers read back.
Options of a multiple-choice question appear only in the QA prompt (:func:`answer_messages`).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, Field, model_validator

from mnemoflow.llm import offline_handler

__all__ = [
    "MAX_PROBES",
    "AnswerReply",
    "CueReply",
    "FactSelection",
    "FusionReply",
    "ProbeSet",
    "answer_messages",
    "cue_messages",
    "fact_filter_messages",
    "fusion_messages",
    "is_impasse",
    "loose_probes",
    "parse_final_answer",
    "probe_messages",
]

MAX_PROBES = 3
Message = dict[str, Any]

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


# -- schemas ----------------------------------------------------------------------------------------------


class FactSelection(BaseModel):
    """The fact filter's reply: the 1-based numbers of the facts kept."""

    keep: list[int] = Field(default_factory=list, description="Numbers of the relevant facts, at most four.")


class CueReply(BaseModel):
    """The comprehension agent's key findings."""

    findings: list[str] = Field(default_factory=list, description="Up to five key findings, one sentence each.")

    def cue(self) -> str:
        """The findings as the cue text stored in the memory unit ("" when there are none)."""
        lines = [finding.strip() for finding in self.findings[:5] if finding.strip()]
        return "\n".join(f"Key Finding: {line.removeprefix('Key Finding:').strip()}" for line in lines)


_PROBE_KEY = re.compile(r"^probe[_ ]?(\d+)$", re.IGNORECASE)


class ProbeSet(BaseModel):
    """The regulation agent's probes; also reads ``{"probe_1": ...}``, ``{"probe1": ...}`` and a bare list."""

    probes: list[str] = Field(default_factory=list, description="Up to three new probes.")

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

    narrative: str = Field(description="The merged narrative.")


class AnswerReply(BaseModel):
    """The QA agent's reasoning and final answer (``*`` = impasse)."""

    analysis: str = Field("", description="Content understanding, relevant information, key facts.")
    final_answer: str = Field(description="The shortest answer, an option letter, or * when unanswerable.")


# -- parsing ---------------------------------------------------------------------------------------------

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


# -- prompts ---------------------------------------------------------------------------------------------


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


# -- offline answers (deterministic, for the demo without a key) -----------------------------------------

_WORD = re.compile(r"[a-z0-9']+")
_STOP = frozenset(
    {
        "a", "an", "the", "of", "to", "in", "on", "at", "by", "for", "with", "and", "or", "but", "is", "was", "were",
        "be", "been", "are", "what", "who", "whom", "whose", "which", "why", "how", "when", "where", "did", "does",
        "do", "his", "her", "their", "its", "he", "she", "they", "it", "that", "this", "as", "from", "into", "not", "no",
    }
)  # fmt: skip


def _words(text: str) -> set[str]:
    """Content words, possessives folded ("Roe's" is "roe")."""
    plain = re.sub(r"['\u2019]s\b", "", text.lower())
    return {word for word in _WORD.findall(plain) if word not in _STOP and len(word) > 2}


def _user(messages: list[Message]) -> str:
    return next((str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"), "")


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
    names = [name for name in re.findall(r"\b[A-Z][a-z]+(?: [A-Z][a-z]+)*", question) if name.lower() not in _STOP]
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
