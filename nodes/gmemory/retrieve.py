"""G-Memory's read path: the retrieval nodes (graph ``graphs/library/gmemory-retrieve.yaml``).

seed (vector search over past queries) -> expand (SIMILAR hops) -> split (by outcome, backfilled) -> rate (the
model rates the successes) -> insights (upward: insights supported by the queries around the task, and their
neighbours one ``DERIVED_FROM`` link away) -> sparsify (downward: each chosen query's interaction, its kept
utterances condensed by the model) -> ``gmemory.by_roles`` -> [project (insights tailored per role)] -> compose
(``memory[role]``, the text each team member reads). What the model is asked is in ``agents.py``; links are read
in bounded batches, one query per step (``links.py``). A reply that cannot be read is filed in ``errors`` with
the node's name, and the node takes the fallback its docstring names.

Differences from the reference code, on purpose: the backfill of a short bucket is a union with the graph's hits
(the reference replaces them); ``rate`` asks once for all the successes unless ``mode`` is ``each`` (the
reference's one call per candidate); utterances are condensed at read time against the new task (the paper's
sparsifier; the reference condenses at write time); insights need status ``active`` and a positive score; every
relationship is read in bounded batches.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mnemoflow.errors import LLMOutputError
from mnemoflow.memory.records import NodeRecord
from mnemoflow.nodes.context import RunContext
from mnemoflow.nodes.gmemory.agents import (
    Kept,
    ProjectedInsights,
    Ratings,
    memory_text,
    project_messages,
    rate_each_messages,
    rate_messages,
    read_score,
    sparsify_messages,
)
from mnemoflow.nodes.gmemory.links import scan_linked
from mnemoflow.nodes.gmemory.model import DERIVED_FROM, HAS_UTTERANCE, INSIGHT, QUERY, SIMILAR, SUPPORTED_BY, UTTERANCE
from mnemoflow.nodes.gmemory.state import Candidate, SelectedInsight, TaskState, Trajectory
from mnemoflow.nodes.registry import NoConfig, node, router

__all__ = [
    "ByRolesConfig",
    "ExpandConfig",
    "InsightsConfig",
    "ProjectConfig",
    "RateConfig",
    "SeedConfig",
    "SparsifyConfig",
    "SplitConfig",
    "task_vector",
]

PROBE_RESOLVED, PROBE_FAILED = 4, 2
"""The insight probe: this many most similar resolved and failed queries (the reference's 4 + 2)."""


# -- configs -------------------------------------------------------------------------------------------------------


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SeedConfig(_Config):
    successful_topk: int = Field(2, ge=0, le=50, description="Past successes handed to the team.")
    failed_topk: int = Field(1, ge=0, le=50, description="Past failures handed to the team.")


class ExpandConfig(_Config):
    hops: int = Field(1, ge=0, le=5, description="SIMILAR hops from the seeds (either direction).")
    max_related: int = Field(50, ge=1, le=1000, description="Most related queries kept, seeds first.")


class SplitConfig(SeedConfig):
    threshold: float = Field(0.0, ge=-1.0, le=1.0, description="Candidates less similar to the task (cosine) are dropped.")


class RateConfig(SeedConfig):
    mode: Literal["batched", "each"] = Field(
        "batched", description="batched: one call rates every success; each: one call per success (the reference's)."
    )


class InsightsConfig(_Config):
    insights_topk: int = Field(3, ge=0, le=50, description="Insights handed to the team.")
    derived: bool = Field(
        True, description="Also consider the insights one DERIVED_FROM link from a supported one (the insight graph)."
    )


class SparsifyConfig(_Config):
    max_utterances: int = Field(
        60, ge=1, le=500, description="Most utterances of one past query shown to the model (first by order)."
    )


class ByRolesConfig(_Config):
    project_roles: bool = Field(False, description="Tailor the insights to each role with the model (one call per role).")


class ProjectConfig(_Config):
    insights_topk: int = Field(3, ge=1, le=50, description="Most insights kept per role.")


# -- store helpers -------------------------------------------------------------------------------------------------


async def task_vector(state: TaskState, context: RunContext) -> list[float]:
    """The task's embedding: the one ``seed`` made, else a new one (a graph that starts later)."""
    if state.task_vector:
        return state.task_vector
    [vector] = await context.embedder.embed([state.task])
    return vector


def _cosine(left: Sequence[float], right: Sequence[float]) -> float:
    norm = math.sqrt(sum(v * v for v in left)) * math.sqrt(sum(v * v for v in right))
    return sum(a * b for a, b in zip(left, right, strict=False)) / norm if norm else 0.0


def _steps(value: Any) -> list[str]:
    """Key steps as stored: a list of lines, or one text."""
    if isinstance(value, list):
        return [str(step).strip() for step in value if str(step).strip()]
    return [line.strip("-* ").strip() for line in str(value or "").splitlines() if line.strip("-* ").strip()]


def _candidate(record: NodeRecord, similarity: float) -> Candidate:
    properties = record.properties
    return Candidate(
        id=record.id,
        task=str(properties.get("task") or record.text or ""),
        status=str(properties.get("status", "")),
        similarity=similarity,
        key_steps=_steps(properties.get("key_steps")),
        fail_reason=str(properties.get("fail_reason") or ""),
    )


# -- nodes ---------------------------------------------------------------------------------------------------------


@node("gmemory.seed", state=TaskState, reads={"task", "task_vector"}, writes={"seeds", "task_vector"}, config=SeedConfig)
async def seed(state: TaskState, config: SeedConfig, context: RunContext) -> dict[str, Any]:
    """Coarse retrieval: the max(successful_topk + failed_topk, 1) past queries most similar to the task."""
    related_n = max(config.successful_topk + config.failed_topk, 1)
    vector = await task_vector(state, context)
    hits = await context.store.vector_search(context.namespace, vector, kind=QUERY, k=related_n)
    return {"seeds": [hit.node.id for hit in hits], "task_vector": vector}


@node("gmemory.expand", state=TaskState, reads={"seeds"}, writes={"related"}, config=ExpandConfig)
async def expand(state: TaskState, config: ExpandConfig, context: RunContext) -> dict[str, Any]:
    """Follow SIMILAR links (either direction) up to ``hops`` from the seeds; seeds first, at most max_related.

    Each hop reads the whole frontier's links in one query; the queries reached keep the frontier's order, then
    the store's link order."""
    related = list(dict.fromkeys(state.seeds))[: config.max_related]
    seen, frontier = set(related), list(related)
    for _ in range(config.hops):
        room = config.max_related - len(related)
        if room <= 0 or not frontier:
            break
        # per query, enough links to fill the room whichever of them were already seen
        links = await scan_linked(context, frontier, SIMILAR, "both", QUERY, limit=room + len(seen))
        reached: list[str] = []
        for query in frontier:
            for other in links.get(query, []):
                if other.id not in seen and len(related) < config.max_related:
                    seen.add(other.id)
                    related.append(other.id)
                    reached.append(other.id)
        frontier = reached
    return {"related": related}


@node("gmemory.split", state=TaskState, reads={"task", "task_vector", "related"}, writes={"successes", "failures"}, config=SplitConfig)
async def split(state: TaskState, config: SplitConfig, context: RunContext) -> dict[str, Any]:
    """Bucket the related queries by outcome; backfill a short bucket by vector search (a union with the graph's
    hits); drop those below the threshold; keep the 2 x topk most similar per bucket."""
    if not state.related:  # no seeds: the namespace holds no query
        return {"successes": [], "failures": []}
    vector = await task_vector(state, context)
    records = [record for record in await context.store.get_nodes(context.namespace, state.related) if record is not None]

    def similarity(record: NodeRecord) -> float:
        return _cosine(vector, record.embedding) if record.embedding else 0.0

    buckets: dict[str, list[Candidate]] = {"resolved": [], "failed": []}
    for record in records:
        if record.kind == QUERY and record.properties.get("status") in buckets:
            buckets[str(record.properties["status"])].append(_candidate(record, similarity(record)))
    sizes = {"resolved": 2 * config.successful_topk, "failed": 2 * config.failed_topk}
    for status, bucket in buckets.items():
        if len(bucket) < sizes[status]:
            have = {candidate.id for candidate in bucket}
            k = sizes[status] + len(bucket)  # enough to fill the bucket whichever graph hits come back
            for hit in await context.store.vector_search(context.namespace, vector, kind=QUERY, k=k, filters={"status": status}):
                if len(bucket) >= sizes[status]:
                    break
                if hit.node.id not in have:
                    have.add(hit.node.id)
                    bucket.append(_candidate(hit.node, hit.score))  # the exact cosine: hits come without vectors
    chosen = {
        status: sorted(
            (candidate for candidate in bucket if candidate.similarity >= config.threshold), key=lambda c: (-c.similarity, c.id)
        )[: sizes[status]]
        for status, bucket in buckets.items()
    }
    return {"successes": chosen["resolved"], "failures": chosen["failed"]}


@node(
    "gmemory.rate",
    state=TaskState,
    reads={"task", "successes", "failures", "errors"},
    writes={"successes", "failures", "errors"},
    config=RateConfig,
)
async def rate(state: TaskState, config: RateConfig, context: RunContext) -> dict[str, Any]:
    """The model rates each success candidate 1-10 for the task; keep successful_topk by (rating, similarity).
    Failures: the failed_topk most similar. Batched, an unreadable reply falls back to similarity order; each,
    an unreadable reply scores that candidate 0."""
    failures = state.failures[: config.failed_topk]
    if not state.successes:
        return {"successes": [], "failures": failures}
    candidates = list(state.successes)
    errors = list(state.errors)
    if config.mode == "each":
        replies = await asyncio.gather(*(context.llm.text(rate_each_messages(state.task, c)) for c in candidates))
        scores: dict[int, int] = {}
        for index, (candidate, said) in enumerate(zip(candidates, replies, strict=True)):
            score = read_score(said)
            if score is None:
                context.log.warning("gmemory.rating_unreadable", query=candidate.id, reply=said[:200])
                errors.append(f"gmemory.rate: no score in the reply for {candidate.id}, so it scores 0: {said[:200]!r}")
            scores[index] = score or 0
    else:
        try:
            reply = await context.llm.structured(rate_messages(state.task, candidates), Ratings)
        except LLMOutputError as exc:
            context.log.warning("gmemory.rating_unreadable", candidates=len(candidates), error=str(exc))
            errors.append(f"gmemory.rate: the ratings could not be read, so similarity orders the successes: {exc}")
            return {"successes": candidates[: config.successful_topk], "failures": failures, "errors": errors}
        scores = {}
        for rating in reply.ratings:
            if 1 <= rating.index <= len(candidates):
                scores.setdefault(rating.index - 1, rating.score)
    rated = [candidate.model_copy(update={"relevance": float(scores.get(i, 0))}) for i, candidate in enumerate(candidates)]
    rated.sort(key=lambda c: (-(c.relevance or 0.0), -c.similarity, c.id))
    return {"successes": rated[: config.successful_topk], "failures": failures, "errors": errors}


@node(
    "gmemory.insights",
    state=TaskState,
    reads={"task", "task_vector", "related", "successes", "failures"},
    writes={"insights"},
    config=InsightsConfig,
)
async def insights(state: TaskState, config: InsightsConfig, context: RunContext) -> dict[str, Any]:
    """Upward: count, per insight, the probe queries (4 most similar resolved + 2 most similar failed, the related
    and the chosen ones) that support it; add the live ones' neighbours one DERIVED_FROM link away (support 0
    unless a probe query supports them too); keep active insights with a positive score, by support then score."""
    if config.insights_topk == 0:  # no count of the insights first: that would be one more statement per task
        return {"insights": []}
    vector = await task_vector(state, context)
    searches = await asyncio.gather(
        *(
            context.store.vector_search(context.namespace, vector, kind=QUERY, k=k, filters={"status": status})
            for status, k in (("resolved", PROBE_RESOLVED), ("failed", PROBE_FAILED))
        )
    )
    probe = [hit.node.id for hits in searches for hit in hits]
    probe += [*state.related, *(c.id for c in state.successes), *(c.id for c in state.failures)]
    support: dict[str, int] = {}
    records: dict[str, NodeRecord] = {}
    for supporters in (await scan_linked(context, probe, SUPPORTED_BY, "in", INSIGHT)).values():
        for record in {other.id: other for other in supporters}.values():
            support[record.id] = support.get(record.id, 0) + 1
            records[record.id] = record

    def alive(record: NodeRecord) -> bool:
        return record.properties.get("status") == "active" and int(record.properties.get("score") or 0) > 0

    derived: set[str] = set()
    if config.derived and (supported := [i for i, record in records.items() if alive(record)]):
        for neighbours in (await scan_linked(context, supported, DERIVED_FROM, "both", INSIGHT)).values():
            for record in neighbours:
                if record.id not in records:
                    derived.add(record.id)
                    records[record.id] = record
    selected = [
        SelectedInsight(
            id=insight_id,
            text=str(record.text or record.properties.get("text") or ""),
            support=support.get(insight_id, 0),
            score=int(record.properties.get("score") or 0),
            via="derived" if insight_id in derived else "support",
        )
        for insight_id, record in records.items()
        if alive(record)
    ]
    selected.sort(key=lambda insight: (-insight.support, -insight.score, insight.id))
    return {"insights": selected[: config.insights_topk]}


def _utterance_lines(records: list[NodeRecord], limit: int) -> list[str]:
    """A query's kept utterances in order, as ``speaker -> addressee: message`` lines (the first ``limit``).

    An utterance of an environment step that the write-time filter dropped (``kept`` false) is left out; one
    without ``kept`` (stored before the filter existed) is kept."""
    records = sorted(
        (record for record in records if record.properties.get("kept") is not False),
        key=lambda record: (int(record.properties.get("order") or 0), record.id),
    )
    lines = []
    for record in records[:limit]:
        properties = record.properties
        message = " ".join(str(properties.get("message") or record.text or "").split())
        lines.append(f"{properties.get('speaker', '?')} -> {properties.get('addressee', '?')}: {message}")
    return lines


@node(
    "gmemory.sparsify",
    state=TaskState,
    reads={"task", "successes", "failures", "errors"},
    writes={"trajectories", "errors"},
    config=SparsifyConfig,
)
async def sparsify(state: TaskState, config: SparsifyConfig, context: RunContext) -> dict[str, Any]:
    """Downward: one model call per chosen query keeps the utterances of its interaction that matter for the task
    (an unreadable reply keeps them all); queries with nothing kept are left out."""
    chosen = [*state.successes, *state.failures]
    interactions = await scan_linked(context, [candidate.id for candidate in chosen], HAS_UTTERANCE, "out", UTTERANCE)
    errors = list(state.errors)

    async def condense(candidate: Candidate) -> Trajectory | None:
        lines = _utterance_lines(interactions.get(candidate.id, []), config.max_utterances)
        if not lines:
            return None
        try:
            reply = await context.llm.structured(sparsify_messages(state.task, candidate, lines), Kept)
            keep = sorted({number for number in reply.keep if 1 <= number <= len(lines)})
        except LLMOutputError as exc:
            context.log.warning("gmemory.sparsify_unreadable", query=candidate.id, error=str(exc))
            errors.append(f"gmemory.sparsify: the reply for {candidate.id} could not be read, so all is kept: {exc}")
            keep = list(range(1, len(lines) + 1))
        if not keep:
            return None
        return Trajectory(
            query_id=candidate.id,
            task=candidate.task,
            status=candidate.status,
            key_steps=candidate.key_steps,
            utterances=[lines[number - 1] for number in keep],
        )

    condensed = await asyncio.gather(*(condense(candidate) for candidate in chosen))
    return {"trajectories": [trajectory for trajectory in condensed if trajectory is not None], "errors": errors}


@router("gmemory.by_roles", state=TaskState, reads={"insights", "roles"}, outcomes={"project", "compose"}, config=ByRolesConfig)
def by_roles(state: TaskState, config: ByRolesConfig) -> str:
    """'project' to tailor the insights per role (project_roles, when there are insights and roles), else 'compose'."""
    return "project" if config.project_roles and state.insights and state.roles else "compose"


@node(
    "gmemory.project",
    state=TaskState,
    reads={"task", "roles", "insights", "errors"},
    writes={"role_insights", "errors"},
    config=ProjectConfig,
)
async def project(state: TaskState, config: ProjectConfig, context: RunContext) -> dict[str, Any]:
    """One model call per role rewrites the insights for that role (an unreadable or empty reply keeps them as they are)."""
    general = [insight.text for insight in state.insights]
    errors = list(state.errors)

    async def tailor(role: str) -> list[str]:
        try:
            reply = await context.llm.structured(project_messages(state.task, role, general), ProjectedInsights)
        except LLMOutputError as exc:
            context.log.warning("gmemory.projection_unreadable", role=role, error=str(exc))
            errors.append(f"gmemory.project: the reply for role {role!r} could not be read, so it gets the insights as they are: {exc}")
            return general[: config.insights_topk]
        tailored = [" ".join(text.split()) for text in reply.insights if text.strip()]
        return (tailored or general)[: config.insights_topk]

    roles = list(dict.fromkeys(state.roles))
    tailored = dict(zip(roles, await asyncio.gather(*(tailor(role) for role in roles)), strict=True))
    return {"role_insights": tailored, "errors": errors}


@node(
    "gmemory.compose",
    state=TaskState,
    reads={"roles", "memory", "insights", "role_insights", "successes", "failures", "trajectories"},
    writes={"memory"},
)
async def compose(state: TaskState, config: NoConfig, context: RunContext) -> dict[str, Any]:
    """Write each role's memory text (empty when nothing was found)."""
    return {"memory": {**state.memory, **{role: memory_text(state, role) for role in dict.fromkeys(state.roles)}}}
