"""The state of ComoRAG's two graphs: ingesting a book, and answering one question about it.

Besides the two state models, the values they carry: a retrieved piece of evidence, what the state keeps of a
memory unit, and the reducers that merge the fan-out's writes (each probe's worker adds units and embeddings).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from mnemoflow.nodes.comorag.chunking import DEFAULT_CHUNK_TOKENS
from mnemoflow.nodes.registry import state_model

__all__ = ["EvidenceItem", "IngestState", "QAState", "Unit", "merge_units", "merge_vectors"]


@state_model("comorag.IngestState")
class IngestState(BaseModel):
    """State of an ingestion run: the book given, then what each step wrote."""

    book_id: str = Field(min_length=1, max_length=200)
    """The book's identity within the namespace; every record of its index carries it."""
    text: str
    """The whole text of the book."""
    title: str = ""
    """The book's title, the text of its Book record (the book id when empty)."""
    kg: bool = True
    """Extract entities and facts (two model calls per chunk) for personalized-PageRank retrieval."""
    chunk_tokens: int = Field(DEFAULT_CHUNK_TOKENS, ge=16, le=8192)
    """Most tokens a chunk may have."""
    generation: str = ""
    """The index generation this ingest writes (:func:`~mnemoflow.nodes.comorag.model.ingest_generation`)."""
    chunks: list[str] = Field(default_factory=list)
    """Chunk texts in reading order."""
    chunk_ids: list[str] = Field(default_factory=list)
    """The Chunk records' ids, in the same order."""
    window: int = 0
    """Chunks per episodic window."""
    entity_ids: list[str] = Field(default_factory=list)
    """The Entity records' ids (none when ``kg`` is off)."""
    fact_ids: list[str] = Field(default_factory=list)
    """The Fact records' ids."""
    facts: int = 0
    """Fact records written."""
    synonyms: int = 0
    """SYNONYM links written."""
    semantic_levels: list[int] = Field(default_factory=list)
    """Semantic summaries per level, level 1 first."""
    semantic_ids: list[str] = Field(default_factory=list)
    """The SemanticSummary records' ids, level by level."""
    episodes: int = 0
    """Episodic summaries written: the windows of the timeline."""
    episode_ids: list[str] = Field(default_factory=list)
    """The EpisodicSummary records' ids, in timeline order."""
    superseded: int = 0
    """Records of the book's earlier indexes that the publish step deleted."""


class EvidenceItem(BaseModel):
    """A retrieved chunk or summary."""

    model_config = ConfigDict(frozen=True)

    id: str
    """The id of the Chunk, SemanticSummary or EpisodicSummary record."""
    text: str
    order: float = 0.0
    """Narrative position: a chunk's order, an episodic window's first chunk order."""
    score: float = 0.0
    """How well it matched: a chunk's normalized dense score or PageRank score, a summary's similarity."""


class Unit(BaseModel):
    """What the state keeps of a memory unit (the store has it all, embedding included)."""

    model_config = ConfigDict(frozen=True)

    id: str
    """The MemoryUnit record's id."""
    layer: str
    """``veridical``, ``semantic``, ``episodic`` or ``fusion``."""
    probe: str
    """The probe whose evidence it encodes (the question itself for cycle 0 and for a fusion)."""
    cycle: int
    """The cycle whose attempt reads it."""
    cue: str
    """The comprehension agent's findings, or a fusion's narrative."""
    evidence: list[str] = Field(default_factory=list)
    """Ids of the evidence records, in rank order."""


def merge_units(left: list[Unit], right: list[Unit]) -> list[Unit]:
    """Reducer of ``units``: append, keeping the first of each id (a re-applied write adds nothing)."""
    merged: dict[str, Unit] = {}
    for unit in [*left, *right]:
        value = unit if isinstance(unit, Unit) else Unit.model_validate(unit)
        merged.setdefault(value.id, value)
    return list(merged.values())


def merge_vectors(left: dict[str, list[float]], right: dict[str, list[float]]) -> dict[str, list[float]]:
    """Reducer of the query-embedding cache: union by text."""
    return {**left, **right}


@state_model("comorag.QAState")
class QAState(BaseModel):
    """State of one question's run."""

    question: str
    """The question asked."""
    book_id: str
    """The ingested book it is asked of."""
    options: dict[str, str] = Field(default_factory=dict)
    """Multiple-choice options by letter; shown to the answer step only."""
    max_cycles: int = Field(5, ge=0, le=20)
    """Probing cycles allowed after the first attempt (0: answer from the question's own evidence only)."""
    encode_first: bool = True
    """Encode the question's own evidence into memory units before the first attempt, as the reference code does;
    false: the paper's order, which encodes it only after the first impasse (with ``max_cycles`` 0, plain
    retrieval-augmented answering: one retrieval, one answer call)."""
    question_id: str = ""
    """The Question record's id, which the question's workspace hangs from."""
    cycle: int = 0
    """Index of the current answer attempt (0 = before any probing)."""
    evidence: dict[str, list[EvidenceItem]] = Field(default_factory=dict)
    """The question's own evidence per layer (step 0)."""
    units: Annotated[list[Unit], merge_units] = Field(default_factory=list)
    """Every memory unit of the question so far, each id once: the cues of every cycle and the fusions."""
    pool_unit_ids: list[str] = Field(default_factory=list)
    """The memory pool: the units of the failed attempts, whose evidence is not retrieved again."""
    probe_history: list[str] = Field(default_factory=list)
    """Every probe issued so far, each once (the question first); a new probe must differ from them."""
    probes: list[str] = Field(default_factory=list)
    """This round's new probes from the regulation agent (at most three)."""
    probe: str = ""
    """The probe a fanned-out probe_worker works on."""
    query_vectors: Annotated[dict[str, list[float]], merge_vectors] = Field(default_factory=dict)
    """Query embeddings by text: each text is embedded once per question."""
    fusion_cues: list[str] = Field(default_factory=list)
    """The integration agent's narratives, oldest first."""
    contexts: dict[str, str] = Field(default_factory=dict)
    """This cycle's cues per layer, for the next attempt."""
    history: str = ""
    """The fusion cues as the answer prompt's historical information, newest first."""
    last_context: str = ""
    """The context of the last attempt (no options): what the regulation agent reads."""
    last_response: str = ""
    """The QA agent's last reply: its analysis, then its final answer."""
    prediction: str = ""
    """The last attempt's answer; empty or ``*`` is an impasse."""
    final_answer: str = ""
    """The run's answer, or ``*`` when the question stays unresolved."""
    status: str = "open"
    """``open`` until the run finalizes, then ``answered`` or ``unresolved``."""
