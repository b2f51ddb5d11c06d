"""G-Memory retrieval: the gmemory-retrieve graph on both stores against the scripted model, over a small memory
written record by record with the model's ids (queries, SIMILAR links, utterances, insights), beside a decoy
namespace holding a near-identical query."""

from __future__ import annotations

import inspect
import json
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from structlog.testing import capture_logs

from mnemoflow.graphs import LIBRARY, load_graph, run_graph
from mnemoflow.graphs.runner import RunResult
from mnemoflow.llm import LLM
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import NodeRecord, RelationshipRecord
from mnemoflow.nodes.gmemory import links
from mnemoflow.nodes.gmemory.model import INSIGHT, QUERY, UTTERANCE, insight_id, query_id, utterance_id
from tests.conftest import EMBEDDER, offline_llm, settings_of
from tests.support.openai_server import Rule, ScriptedOpenAIServer

RATE = "You judge how useful past tasks are"
RATE_EACH = "You are an agent designed to score the relevance"
SPARSIFY = "You condense the record of a past team interaction"
PROJECT = "You adapt general lessons from earlier tasks"
TASK = "write a report on quarterly sales for the northern region"

# name: (task, status, key steps, fail reason). Most similar first: R1, F1, F5 (the three seeds), F2, R2, F4, then
# F3, R4, R5, R3, G, H. G is reached only through SIMILAR (G -> R1); H only two hops away (H -> G).
QUERIES: dict[str, tuple[str, str, list[str], str]] = {
    "R1": ("write a report on quarterly sales for the northern office", "resolved", ["collect office figures"], ""),
    "R2": (
        "write a report on monthly sales for the northern team",
        "resolved",
        ["collect monthly figures", "compare months"],
        "",
    ),
    "R3": ("write a summary of quarterly sales figures", "resolved", ["summarise"], ""),
    "R4": ("draft a report on yearly sales numbers", "resolved", ["draft"], ""),
    "R5": ("write a memo on sales targets", "resolved", ["memo"], ""),
    "G": ("plan the agenda of the team offsite", "resolved", ["list topics", "book rooms"], ""),
    "F1": (
        "write a report on quarterly sales for the southern region",
        "failed",
        ["guessed figures"],
        "used last year's figures",
    ),
    "F2": ("write a short report on quarterly sales for the eastern region", "failed", [], "too long"),
    "F3": ("write the report on quarterly sales in the western region", "failed", [], "wrong region"),
    "F4": ("write a long report about quarterly sales for the central region", "failed", [], "no totals"),
    "F5": ("a report on quarterly sales for the coastal region", "failed", [], "missed the deadline"),
    "H": ("choose a venue for the offsite", "failed", [], "venue was closed"),
}
SIMILAR = [("G", "R1"), ("H", "G"), ("R1", "F1")]
UTTERANCES = {
    "R2": [
        ("solver", "critic", "I will pull the monthly totals first."),
        ("critic", "solver", "Nice weather today."),
        ("solver", "critic", "Totals compared month over month; the table is done."),
        ("critic", "solver", "Approved."),
    ],
    "G": [
        ("solver", "critic", "Topics first."),
        ("critic", "solver", "Rooms must be booked early."),
        ("solver", "critic", "Booked."),
    ],
    "F1": [("solver", "critic", "I reused old numbers."), ("critic", "solver", "Fine."), ("solver", "critic", "Sent.")],
    "R1": [("solver", "critic", "Office figures only."), ("critic", "solver", "Approved.")],
}
# name: (text, status, score, supported by, contradicted by)
INSIGHTS: dict[str, tuple[str, str, int, list[str], list[str]]] = {
    "I1": (
        "Check the figures against the source before writing, because guesses fail review.",
        "active",
        3,
        ["R1", "R2", "F1"],
        [],
    ),
    "I2": ("Agree on the structure first, because it saves rewrites.", "active", 5, ["R1", "G", "R3"], []),
    "I3": ("State the period covered, because readers compare periods.", "active", 1, ["F2", "R4"], []),
    "I4": ("Pruned lesson, because it failed often.", "pruned", 4, ["R1", "R2", "R4", "R5"], []),
    "I5": ("Zero-score lesson, because nobody knows.", "active", 0, ["R1", "R2"], []),
    "I6": ("Far lesson, because only distant tasks support it.", "active", 4, ["R3", "F3"], []),
    "I7": ("Contradicted lesson, because it misled.", "active", 2, [], ["R1", "R2"]),
    "I8": ("Lone lesson, because one task supports it.", "active", 9, ["F4"], []),
}


def cosine(left: str, right: str) -> float:
    a, b = EMBEDDER.embed_one(left), EMBEDDER.embed_one(right)
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


async def write_queries(store: GraphStore, namespace: str, queries: dict[str, tuple[str, str, list[str], str]]) -> dict[str, str]:
    ids = {name: query_id(namespace, f"task-{name}") for name in queries}
    vectors = await EMBEDDER.embed([task for task, *_ in queries.values()])
    await store.upsert_nodes(
        [
            NodeRecord(
                id=ids[name],
                namespace=namespace,
                kind=QUERY,
                text=task,
                embedding=vector,
                properties={
                    "task": task,
                    "status": status,
                    "order": order,
                    "key_steps": steps,
                    "fail_reason": reason,
                    "trajectory": "",
                },
            )
            for order, ((name, (task, status, steps, reason)), vector) in enumerate(
                zip(queries.items(), vectors, strict=True), start=1
            )
        ]
    )
    return ids


async def write_utterances(store: GraphStore, namespace: str, qid: str, lines: list[tuple[str, str, str]]) -> None:
    records = [
        NodeRecord(
            id=utterance_id(namespace, qid, order),
            namespace=namespace,
            kind=UTTERANCE,
            text=message,
            properties={
                "query_id": qid,
                "order": order,
                "round": order // 2,
                "speaker": speaker,
                "addressee": to,
                "message": message,
            },
        )
        for order, (speaker, to, message) in enumerate(lines, start=1)
    ]
    await store.upsert_nodes(list(reversed(records)))  # stored out of order: retrieval sorts by `order`
    links = [RelationshipRecord(namespace=namespace, type="HAS_UTTERANCE", source_id=qid, target_id=r.id) for r in records]
    links += [
        RelationshipRecord(namespace=namespace, type="NEXT", source_id=a.id, target_id=b.id)
        for a, b in zip(records, records[1:], strict=False)
    ]
    await store.upsert_relationships(links)


async def write_insights(
    store: GraphStore, namespace: str, ids: dict[str, str], insights: dict[str, tuple[str, str, int, list[str], list[str]]]
) -> dict[str, str]:
    insight_ids = {name: insight_id(namespace, text) for name, (text, *_) in insights.items()}
    await store.upsert_nodes(
        [
            NodeRecord(
                id=insight_ids[name],
                namespace=namespace,
                kind=INSIGHT,
                text=text,
                properties={"text": text, "status": status, "score": score, "created_order": order},
            )
            for order, (name, (text, status, score, _, _)) in enumerate(insights.items(), start=1)
        ]
    )
    links = [
        RelationshipRecord(namespace=namespace, type=kind, source_id=insight_ids[name], target_id=ids[query])
        for name, (_, _, _, supported, contradicted) in insights.items()
        for kind, queries in (("SUPPORTED_BY", supported), ("CONTRADICTED_BY", contradicted))
        for query in queries
    ]
    await store.upsert_relationships(links)
    return insight_ids


class Memory:
    """The memory of the namespace under test (ids by name) and of its decoy neighbour."""

    def __init__(self, queries: dict[str, str], insights: dict[str, str], decoy_ids: set[str]) -> None:
        self.queries, self.insights, self.decoy_ids = queries, insights, decoy_ids

    def names(self, ids: list[str]) -> list[str]:
        by_id = {v: k for k, v in {**self.queries, **self.insights}.items()}
        return [by_id.get(i, f"unknown:{i}") for i in ids]


DECOY_QUERIES = {
    "D": ("write a report on quarterly sales for the northern region today", "resolved", ["DECOY step"], ""),
    "DF": ("write a report on quarterly sales for the northern region by noon", "failed", [], "DECOY reason"),
}
DECOY_INSIGHTS = {"DI": ("DECOY lesson, because it belongs to another namespace.", "active", 9, ["D", "DF"], [])}


async def build_memory(store: GraphStore, namespace: str) -> Memory:
    ids = await write_queries(store, namespace, QUERIES)
    await store.upsert_relationships(
        [
            RelationshipRecord(
                namespace=namespace, type="SIMILAR", source_id=ids[a], target_id=ids[b], properties={"weight": 0.9}
            )
            for a, b in SIMILAR
        ]
    )
    for name, lines in UTTERANCES.items():
        await write_utterances(store, namespace, ids[name], lines)
    insights = await write_insights(store, namespace, ids, INSIGHTS)
    decoy = f"{namespace}-decoy"  # a near-identical query, its interaction and an insight, in another namespace
    decoy_ids = await write_queries(store, decoy, DECOY_QUERIES)
    await store.upsert_relationships(
        [RelationshipRecord(namespace=decoy, type="SIMILAR", source_id=decoy_ids["D"], target_id=decoy_ids["DF"])]
    )
    await write_utterances(store, decoy, decoy_ids["D"], [("solver", "critic", "DECOY utterance")])
    decoy_insights = await write_insights(store, decoy, decoy_ids, DECOY_INSIGHTS)
    return Memory(ids, insights, {*decoy_ids.values(), *decoy_insights.values()})


@pytest.fixture
def server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer() as running:
        yield running


def chats(server: ScriptedOpenAIServer, system: str) -> list[dict[str, Any]]:
    return [
        r for r in server.requests if r["path"].endswith("/chat/completions") and system in r["body"]["messages"][0]["content"]
    ]


def script(server: ScriptedOpenAIServer, *, rating: Rule | None = None) -> None:
    """Candidates reach the rating as [R1, R2, R4, G]: R2 and G get 9 (R2 first: more similar), R1 5, R4 nothing;
    index 7 does not exist. The sparsifier keeps R2's 1st and 3rd utterances, G's 2nd, none of F1's."""
    ratings = [{"index": 1, "score": 5}, {"index": 2, "score": 9}, {"index": 4, "score": 9}, {"index": 7, "score": 10}]
    server.script(rating or Rule(system=RATE, json={"ratings": ratings}))
    server.script(Rule(system=SPARSIFY, user="monthly sales", json={"keep": [3, 1]}))
    server.script(Rule(system=SPARSIFY, user="agenda", json={"keep": [2, 99, 0]}))
    server.script(Rule(system=SPARSIFY, user="southern", json={"keep": []}))


async def retrieve(
    store: GraphStore,
    namespace: str,
    llm: LLM,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    *,
    project_roles: bool = False,
    config: dict[str, dict[str, Any]] | None = None,
    through: GraphStore | None = None,
) -> RunResult:
    """Run gmemory-retrieve for TASK; ``config`` overrides nodes' ``with:`` (by node name); ``through``: the store
    the graph is given (a proxy of ``store``)."""
    graph = load_graph("gmemory-retrieve")
    if project_roles or config:
        spec = yaml.safe_load((LIBRARY / "gmemory-retrieve.yaml").read_text())
        spec["routes"][0]["with"]["project_roles"] = project_roles
        for name, values in (config or {}).items():
            spec["nodes"][name].setdefault("with", {}).update(values)
        path = tmp_path / "gmemory-retrieve.yaml"
        path.write_text(yaml.safe_dump(spec))
        graph = load_graph(path)
    return await run_graph(
        graph,
        {"task": TASK},
        store=through or store,
        embedder=EMBEDDER,
        llm=llm,
        settings=settings_of(store, tmp_path, request),
        checkpointer=None,
        namespace=namespace,
    )


def plain(result: RunResult) -> dict[str, Any]:
    """The run's final state as plain JSON values (its models dumped)."""
    return dict(json.loads(json.dumps(result.state, default=lambda value: value.model_dump(mode="json"))))


def test_the_memory_is_shaped_as_the_tests_assume() -> None:
    order = sorted(QUERIES, key=lambda name: -cosine(TASK, QUERIES[name][0]))
    assert order[:6] == ["R1", "F1", "F5", "F2", "R2", "F4"]  # the first three are the seeds
    resolved = [name for name in order if QUERIES[name][1] == "resolved"]
    assert resolved == ["R1", "R2", "R4", "R5", "R3", "G"]  # G: reachable only by SIMILAR, last of the successes
    assert cosine(TASK, QUERIES["G"][0]) > 0.0  # above the default threshold
    assert all(cosine(TASK, text) > cosine(TASK, QUERIES["R1"][0]) for text, *_ in DECOY_QUERIES.values())


async def test_successes_are_backfilled_as_a_union_then_rated_and_failures_kept_by_similarity(
    store: GraphStore, namespace: str, server: ScriptedOpenAIServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    memory = await build_memory(store, namespace)
    script(server)
    state = plain(await retrieve(store, namespace, server.gateway(), tmp_path, request))
    [rating] = chats(server, RATE)
    prompt = rating["body"]["messages"][-1]["content"]
    # graph hits R1, G are 2 < 4: the backfill adds R2, R4 and keeps G (replacing would have given R1, R2, R4, R5)
    listed = [name for name in ("R1", "R2", "R4", "G", "R5", "R3") if QUERIES[name][0] in prompt]
    assert listed == ["R1", "R2", "R4", "G"]
    assert (
        prompt.index(QUERIES["R1"][0])
        < prompt.index(QUERIES["R2"][0])
        < prompt.index(QUERIES["R4"][0])
        < prompt.index(QUERIES["G"][0])
    )
    assert memory.names([c["id"] for c in state["successes"]]) == ["R2", "G"]
    assert [c["relevance"] for c in state["successes"]] == [9.0, 9.0]
    assert state["successes"][0]["key_steps"] == QUERIES["R2"][2]
    assert math.isclose(state["successes"][0]["similarity"], cosine(TASK, QUERIES["R2"][0]), abs_tol=1e-6)
    assert memory.names([c["id"] for c in state["failures"]]) == ["F1"]
    assert state["failures"][0]["fail_reason"] == "used last year's figures"


async def test_hop_expansion_reaches_a_query_linked_only_by_similar(
    store: GraphStore, namespace: str, server: ScriptedOpenAIServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    memory = await build_memory(store, namespace)
    script(server)
    state = plain(await retrieve(store, namespace, server.gateway(), tmp_path, request))
    assert memory.names(state["seeds"]) == ["R1", "F1", "F5"]  # max(successful_topk + failed_topk, 1), as the paper
    assert memory.names(state["related"]) == ["R1", "F1", "F5", "G"]  # seeds first; G by G -> R1 (incoming)
    assert memory.queries["H"] not in state["related"]  # two hops away


class CountingReads:
    """A store whose reads count their calls (run records written by the runner are not counted)."""

    def __init__(self, store: GraphStore) -> None:
        self.store, self.reads = store, Counter[str]()

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.store, name)
        if name.startswith(("_", "upsert")) or not inspect.iscoroutinefunction(value):
            return value

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.reads[name] += 1
            return await value(*args, **kwargs)

        return counted


@pytest.mark.parametrize("hops", [1, 2])
async def test_each_step_reads_its_links_in_one_query_whatever_the_number_of_queries(
    store: GraphStore, namespace: str, server: ScriptedOpenAIServer, tmp_path: Path, request: pytest.FixtureRequest, hops: int
) -> None:
    memory = await build_memory(store, namespace)
    script(server)
    counting = CountingReads(store)
    config = {"expand": {"hops": hops}}
    state = plain(await retrieve(store, namespace, server.gateway(), tmp_path, request, config=config, through=counting))
    assert len(state["seeds"]) == 3 and len(state["trajectories"]) == 2 and state["insights"]
    assert (memory.queries["H"] in state["related"]) == (hops == 2)  # H -> G -> R1
    # seed, the resolved backfill and the two insight probes; the related records; one links read per hop, for the
    # insights' supporters, for their DERIVED_FROM neighbours and for the chosen queries' interactions
    assert counting.reads == {"vector_search": 4, "get_nodes": 1, "neighbours_of": hops + 3}


async def test_links_past_the_scan_bound_are_left_with_a_warning(
    sqlite_store: GraphStore, namespace: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory = await build_memory(sqlite_store, namespace)
    monkeypatch.setattr(links, "MAX_SCAN", 2)
    with capture_logs() as logs:
        state = plain(await retrieve(sqlite_store, namespace, offline_llm(), tmp_path, request))
    assert [len(t["utterances"]) for t in state["trajectories"]] == [2, 2, 2]  # R1 has 2; of R2's 4 and F1's 3, two are read
    truncated = {(e["node"], e["relationship"]) for e in logs if e["event"] == "gmemory.links_truncated"}
    assert {(memory.queries["R2"], "HAS_UTTERANCE"), (memory.queries["F1"], "HAS_UTTERANCE")} <= truncated
    assert (memory.queries["R1"], "HAS_UTTERANCE") not in truncated


async def test_insights_are_ranked_by_support_then_score_and_pruned_or_unscored_ones_left_out(
    store: GraphStore, namespace: str, server: ScriptedOpenAIServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    memory = await build_memory(store, namespace)
    script(server)
    state = plain(await retrieve(store, namespace, server.gateway(), tmp_path, request))
    chosen = state["insights"]
    assert memory.names([i["id"] for i in chosen]) == ["I1", "I2", "I3"]  # I8's only supporter F4 is not found now
    assert [(i["support"], i["score"], i["via"]) for i in chosen] == [(3, 3, "support"), (2, 5, "support"), (1, 1, "support")]
    assert [i["text"] for i in chosen] == [INSIGHTS[name][0] for name in ("I1", "I2", "I3")]


async def test_trajectories_hold_exactly_the_kept_utterances_in_order(
    store: GraphStore, namespace: str, server: ScriptedOpenAIServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    memory = await build_memory(store, namespace)
    script(server)
    state = plain(await retrieve(store, namespace, server.gateway(), tmp_path, request))
    assert len(chats(server, SPARSIFY)) == 3  # R2, G, F1: one call per chosen query
    r2_prompt = next(r for r in chats(server, SPARSIFY) if "monthly sales" in r["body"]["messages"][-1]["content"])
    shown = r2_prompt["body"]["messages"][-1]["content"]
    assert shown.index("[1] solver -> critic: I will pull") < shown.index("[4] critic -> solver: Approved.")
    trajectories = state["trajectories"]
    assert memory.names([t["query_id"] for t in trajectories]) == ["R2", "G"]  # nothing kept of F1: left out
    assert trajectories[0]["utterances"] == [
        "solver -> critic: I will pull the monthly totals first.",
        "solver -> critic: Totals compared month over month; the table is done.",
    ]
    assert trajectories[1]["utterances"] == ["critic -> solver: Rooms must be booked early."]
    assert trajectories[1]["status"] == "resolved" and trajectories[1]["key_steps"] == QUERIES["G"][2]


async def test_each_role_reads_the_insights_steps_trajectories_and_failures_and_nothing_of_another_namespace(
    store: GraphStore, namespace: str, server: ScriptedOpenAIServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    memory = await build_memory(store, namespace)
    script(server)
    state = plain(await retrieve(store, namespace, server.gateway(), tmp_path, request))
    assert set(state["memory"]) == {"solver", "critic"} and state["memory"]["solver"] == state["memory"]["critic"]
    text = state["memory"]["solver"]
    for expected in (
        f"1. {INSIGHTS['I1'][0]}",
        f"3. {INSIGHTS['I3'][0]}",
        "- compare months",
        "- book rooms",
        "  critic -> solver: Rooms must be booked early.",
        f"- {QUERIES['F1'][0]}: used last year's figures",
    ):
        assert expected in text
    for absent in ("Nice weather today", INSIGHTS["I8"][0], INSIGHTS["I4"][0], "collect office figures", "DECOY"):
        assert absent not in text
    assert state.get("role_insights", {}) == {}
    everything = json.dumps(state)
    assert not [i for i in memory.decoy_ids if i in everything]
    assert "today" not in everything and "by noon" not in everything


async def test_insights_are_projected_per_role_when_enabled(
    store: GraphStore, namespace: str, server: ScriptedOpenAIServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    await build_memory(store, namespace)
    script(server)
    server.script(
        Rule(
            system=PROJECT,
            user="Role: solver",
            json={"insights": ["Solver: check every figure.", " ", "Solver: agree the outline."]},
        )
    )
    server.script(Rule(system=PROJECT, user="Role: critic", json={"insights": ["Critic: ask for the source of each figure."]}))
    state = plain(await retrieve(store, namespace, server.gateway(), tmp_path, request, project_roles=True))
    assert len(chats(server, PROJECT)) == 2
    assert f"1. {INSIGHTS['I1'][0]}" in chats(server, PROJECT)[0]["body"]["messages"][-1]["content"]
    assert state["role_insights"] == {
        "solver": ["Solver: check every figure.", "Solver: agree the outline."],
        "critic": ["Critic: ask for the source of each figure."],
    }
    solver, critic = state["memory"]["solver"], state["memory"]["critic"]
    assert "1. Solver: check every figure.\n2. Solver: agree the outline." in solver and "Critic:" not in solver
    assert "1. Critic: ask for the source of each figure." in critic and "Solver:" not in critic
    assert INSIGHTS["I1"][0] not in solver + critic
    assert "- compare months" in solver and "- compare months" in critic


async def test_an_empty_store_gives_empty_memory_without_calling_the_model(
    store: GraphStore, namespace: str, server: ScriptedOpenAIServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    await build_memory(store, f"{namespace}-other")  # another namespace's memory is not this one's
    result = await retrieve(store, namespace, server.gateway(), tmp_path, request, project_roles=True)
    state = plain(result)
    assert state["memory"] == {"solver": "", "critic": ""}
    assert [state.get(f, []) for f in ("seeds", "related", "successes", "failures", "insights", "trajectories")] == [[]] * 6
    assert state.get("role_insights", {}) == {}
    assert server.request_count == 0 and result.llm_calls == 0


async def test_an_unreadable_rating_falls_back_to_similarity_with_a_warning(
    store: GraphStore, namespace: str, server: ScriptedOpenAIServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    memory = await build_memory(store, namespace)
    script(server, rating=Rule(system=RATE, text="They all look helpful to me."))
    server.script(Rule(system=SPARSIFY, user="northern office", json={"keep": [1]}))
    with capture_logs() as logs:
        state = plain(await retrieve(store, namespace, server.gateway(), tmp_path, request))
    assert len(chats(server, RATE)) == 2  # the reply, then the re-ask
    assert [entry["event"] for entry in logs if entry["log_level"] == "warning"] == ["gmemory.rating_unreadable"]
    assert memory.names([c["id"] for c in state["successes"]]) == ["R1", "R2"]  # the two most similar
    assert [c["relevance"] for c in state["successes"]] == [None, None]
    [error] = state["errors"]
    assert error.startswith("gmemory.rate: the ratings could not be read, so similarity orders the successes: ")
    assert memory.names([t["query_id"] for t in state["trajectories"]]) == ["R1", "R2"]
    assert "- collect office figures" in state["memory"]["solver"]


async def test_the_offline_model_runs_the_graph(
    store: GraphStore, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    memory = await build_memory(store, namespace)
    result = await retrieve(store, namespace, offline_llm(), tmp_path, request, project_roles=True)
    state = plain(result)
    assert result.offline_model and result.llm_calls == 1 + 3 + 2  # rate, sparsify R1 R2 F1, project x 2 roles
    assert memory.names([c["id"] for c in state["successes"]]) == ["R1", "R2"]  # equal ratings: similarity decides
    assert [len(t["utterances"]) for t in state["trajectories"]] == [2, 4, 3]  # everything kept
    assert state["role_insights"]["solver"] == [INSIGHTS[name][0] for name in ("I1", "I2", "I3")]


@pytest.mark.parametrize(("max_related", "reached"), [(7, ["R1", "F1", "F5", "G"]), (3, ["R1", "F1", "F5"])])
async def test_expansion_reads_every_page_of_a_busy_query_and_stops_at_max_related(
    store: GraphStore,
    namespace: str,
    server: ScriptedOpenAIServer,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    max_related: int,
    reached: list[str],
) -> None:
    memory = await build_memory(store, namespace)
    # 210 utterances on R1: its SIMILAR links sort after them, past the first page of neighbours
    await write_utterances(store, namespace, memory.queries["R1"], [("solver", "critic", f"step {n}") for n in range(210)])
    script(server)
    server.script(Rule(system=SPARSIFY, json={"keep": [1]}))
    config = {"expand": {"max_related": max_related}, "sparsify": {"max_utterances": 5}}
    state = plain(await retrieve(store, namespace, server.gateway(), tmp_path, request, config=config))
    assert memory.names(state["related"]) == reached
    for chat in chats(server, SPARSIFY):  # at most max_utterances shown, the first by order
        assert "[6]" not in chat["body"]["messages"][-1]["content"]


@pytest.mark.parametrize(("successful_topk", "failed_topk", "seeds"), [(0, 0, ["R1"]), (1, 3, ["R1", "F1", "F5", "F2"])])
async def test_seed_searches_max_of_the_topks_sum_and_one(
    sqlite_store: GraphStore,
    namespace: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    successful_topk: int,
    failed_topk: int,
    seeds: list[str],
) -> None:
    memory = await build_memory(sqlite_store, namespace)
    config = {"seed": {"successful_topk": successful_topk, "failed_topk": failed_topk}}
    state = plain(await retrieve(sqlite_store, namespace, offline_llm(), tmp_path, request, config=config))
    assert memory.names(state["seeds"]) == seeds


async def test_rating_each_asks_once_per_success_and_scores_an_unreadable_reply_0(
    store: GraphStore, namespace: str, server: ScriptedOpenAIServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    memory = await build_memory(store, namespace)
    for name, reply in (("R1", "8"), ("R2", "Score: 3 out of 10"), ("R4", "I cannot tell."), ("G", "12")):
        server.script(Rule(system=RATE_EACH, user=f"Task: {QUERIES[name][0]}\n", text=reply))
    script(server)
    server.script(Rule(system=SPARSIFY, user="northern office", json={"keep": [1]}))
    state = plain(await retrieve(store, namespace, server.gateway(), tmp_path, request, config={"rate": {"mode": "each"}}))
    assert chats(server, RATE) == []
    prompts = sorted(chat["body"]["messages"][-1]["content"] for chat in chats(server, RATE_EACH))
    assert len(prompts) == 4 and all(chat["body"]["messages"][0]["content"] == RATE_EACH + " between two pieces of text." for chat in chats(server, RATE_EACH))
    assert (
        "Rate from 1 to 10 how relevant and helpful the successful case below is for the ongoing task. Do not summarize "
        f"the two; reply with the score.\n\nSuccess case:\nTask: {QUERIES['R2'][0]}\nKey steps:\n  - collect monthly figures\n"
        f"  - compare months\n\nOngoing task:\n{TASK}\n\nScore:"
    ) in prompts
    # G 12 (capped at 10), R1 8, R2 3, R4 no number: 0
    assert memory.names([c["id"] for c in state["successes"]]) == ["G", "R1"]
    assert [c["relevance"] for c in state["successes"]] == [10.0, 8.0]
    assert state["errors"] == [f"gmemory.rate: no score in the reply for {memory.queries['R4']}, so it scores 0: 'I cannot tell.'"]


async def test_sparsify_shows_only_the_utterances_the_write_time_filter_kept(
    store: GraphStore, namespace: str, server: ScriptedOpenAIServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    memory = await build_memory(store, namespace)
    r2 = memory.queries["R2"]
    kept = {2: False, 3: True}  # utterance 2 dropped by the filter; 1 and 4 stored before it existed (kept)
    found = await store.get_nodes(namespace, [utterance_id(namespace, r2, order) for order in kept])
    await store.upsert_nodes(
        [u.model_copy(update={"properties": {**u.properties, "kept": k}}) for u, k in zip(found, kept.values(), strict=True) if u]
    )
    script(server)
    state = plain(await retrieve(store, namespace, server.gateway(), tmp_path, request))
    [chat] = [c for c in chats(server, SPARSIFY) if "monthly sales" in c["body"]["messages"][-1]["content"]]
    assert chat["body"]["messages"][-1]["content"].endswith(
        "Messages:\n[1] solver -> critic: I will pull the monthly totals first.\n"
        "[2] solver -> critic: Totals compared month over month; the table is done.\n[3] critic -> solver: Approved."
    )
    assert state["trajectories"][0]["utterances"] == [  # the reply keeps [3, 1]
        "solver -> critic: I will pull the monthly totals first.",
        "critic -> solver: Approved.",
    ]
