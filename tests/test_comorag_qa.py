"""ComoRAG question answering: every path of comorag-qa against the scripted OpenAI server, with exact LLM calls."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import mnemoflow.nodes.comorag.qa  # noqa: F401  (registers the comorag.* QA nodes)
from mnemoflow.graphs import load_graph, run_graph, with_node_config
from mnemoflow.graphs.runner import RunResult
from mnemoflow.llm import LLM
from mnemoflow.memory.checkpoints import open_checkpointer
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.nodes.comorag.agents import ProbeSet, is_impasse, loose_probes, parse_final_answer
from mnemoflow.nodes.comorag.model import cycle_id
from mnemoflow.nodes.comorag.pagerank import personalized_pagerank
from mnemoflow.nodes.comorag.retrieval import CUT, cut_text, fit_budget
from mnemoflow.settings import Settings, StoreSettings
from tests.conftest import EMBEDDER, cli_environment, new_store, offline_llm, settings_of
from tests.support.comorag_book import BOOK, answer, build_book, script
from tests.support.embedders import CountingEmbedder
from tests.support.openai_server import Rule, ScriptedOpenAIServer

LIBRARY_GRAPH = Path(__file__).parents[1] / "graphs" / "library" / "comorag-qa.yaml"
QUESTION = "Who was the guardian of Tobin Orsk after Hedda Vale married?"
ROLES = {
    "recognition memory": "filter",
    "narrative analyst": "cue",
    "regulation agent": "probe",
    "integration agent": "fuse",
    "careful reader": "answer",
}
STEP0 = ["filter", "cue", "cue", "cue", "answer"]


@pytest.fixture
def server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer() as running:
        yield running


def small_graph(tmp_path: Path) -> Path:
    """The library graph retrieving one item per layer, so the tiny book lasts a few cycles."""
    spec = yaml.safe_load(LIBRARY_GRAPH.read_text())
    for name in ("retrieve", "probe_worker"):
        spec["nodes"][name]["with"] = {"ver_top_k": 1, "sem_top_k": 1, "epi_top_k": 1}
    path = tmp_path / "comorag-qa.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


async def ask(
    store: GraphStore,
    tmp_path: Path,
    llm: LLM,
    namespace: str,
    values: dict[str, Any],
    *,
    settings: Settings | None = None,
    embedder: Any = EMBEDDER,
    node_config: dict[str, dict[str, Any]] | None = None,
) -> RunResult:
    await build_book(store, EMBEDDER, namespace)
    settings = settings or Settings(store=StoreSettings(backend="sqlite", sqlite_path=tmp_path / "memory.db"))
    async with open_checkpointer(settings) as checkpointer:
        return await run_graph(
            with_node_config(load_graph(small_graph(tmp_path)), node_config or {}),
            {"book_id": BOOK, **values},
            store=store,
            embedder=embedder,
            llm=llm,
            settings=settings,
            checkpointer=checkpointer,
            namespace=namespace,
        )


def chats(server: ScriptedOpenAIServer, *, answered_only: bool = True) -> list[dict[str, Any]]:
    return [
        request
        for request in server.requests
        if request["path"].endswith("/chat/completions") and (request["status"] == 200 or not answered_only)
    ]


def role(request: dict[str, Any]) -> str:
    system = request["body"]["messages"][0]["content"]
    return next(name for marker, name in ROLES.items() if marker in system)


def roles(server: ScriptedOpenAIServer) -> list[str]:
    return [role(request) for request in chats(server)]


def user_text(request: dict[str, Any]) -> str:
    return "\n".join(str(message["content"]) for message in request["body"]["messages"])


async def units(store: GraphStore, namespace: str) -> list[Any]:
    hits = await store.keyword_search(namespace, "key finding narrative", k=100, kinds=["MemoryUnit"])
    return [hit.node for hit in hits]


# -- paths of the graph ---------------------------------------------------------------------------------


async def test_answered_at_step_zero(
    sqlite_store: GraphStore, server: ScriptedOpenAIServer, namespace: str, tmp_path: Path
) -> None:
    script(server, [answer("Corvin Ashe")])
    result = await ask(sqlite_store, tmp_path, server.gateway(), namespace, {"question": QUESTION})
    assert roles(server) == STEP0
    assert result.state["final_answer"] == "Corvin Ashe" and result.state["status"] == "answered"
    assert result.steps == ["retrieve", "encode", "answer", "finalize"]
    [question] = await sqlite_store.keyword_search(namespace, "guardian Tobin", kinds=["Question"])
    assert question.node.properties["status"] == "answered" and question.node.properties["final_answer"] == "Corvin Ashe"
    assert await sqlite_store.count_nodes(namespace, "MemoryUnit") == 3
    assert await sqlite_store.count_relationships(namespace, "EVIDENCE") == 3  # one item per layer
    assert await sqlite_store.count_nodes(namespace, "Cycle") == 1


@pytest.mark.slow
@pytest.mark.parametrize("encode_first", [True, False])
async def test_impasse_then_answered_after_one_cycle_in_either_step_zero_order(
    store: GraphStore,
    server: ScriptedOpenAIServer,
    namespace: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    encode_first: bool,
) -> None:
    """``encode_first`` on (the reference code's order) encodes the question's evidence before the first attempt;
    off (the paper's), after its impasse. The first attempt reads the raw evidence either way, and the pool, the
    units and the cycles stored end the same."""
    script(server, [answer("*"), answer("Corvin Ashe")], [{"probes": ["Who looked after the Orsk children?"]}])
    settings = settings_of(store, tmp_path, request)
    values = {"question": QUESTION, "encode_first": encode_first}
    result = await ask(store, tmp_path, server.gateway(), namespace, values, settings=settings)
    step0 = STEP0 if encode_first else ["filter", "answer", "cue", "cue", "cue"]
    assert roles(server) == [*step0, "probe", "filter", "cue", "cue", "cue", "fuse", "answer"]
    assert result.state["final_answer"] == "Corvin Ashe" and result.state["cycle"] == 1
    sent = chats(server)
    first = user_text(sent[step0.index("answer")])
    assert "### Detail Chunks\n" in first and "Key Finding" not in first and "### Historical Information" not in first
    assert "### Detail Chunks" in user_text(sent[5]) and QUESTION in user_text(sent[5])  # the probe sees the failed context
    last = user_text(sent[-1])
    assert "### Historical Information" in last and "Fused narrative" in last and "Key Finding:" in last
    memory = await units(store, namespace)
    assert len(memory) == 7  # 3 at step 0, 3 for the probe, 1 fusion
    assert sorted(unit.properties["in_pool"] for unit in memory) == [False] * 4 + [True] * 3
    assert sorted(unit.properties["cycle"] for unit in memory if unit.properties["in_pool"]) == [0, 0, 0]
    assert await store.count_relationships(namespace, "FUSED_FROM") == 2  # the top half of a pool of 3
    assert await store.count_nodes(namespace, "Probe") == 2 and await store.count_nodes(namespace, "Cycle") == 2
    [cycle0] = await store.get_nodes(namespace, [cycle_id(result.state["question_id"], 0)])
    assert cycle0 is not None and cycle0.properties == {"index": 0, "prediction": "*", "failed": True}
    [question] = await store.keyword_search(namespace, "guardian Tobin", kinds=["Question"])
    assert question.node.properties["status"] == "answered" and question.node.properties["cycles"] == 1


async def test_impasse_until_max_cycles(
    sqlite_store: GraphStore, server: ScriptedOpenAIServer, namespace: str, tmp_path: Path
) -> None:
    probes = [{"probe_1": "Who is Jessamy Pell?"}, {"probe_1": "What did the Grey Wind bury?"}, {"probe_1": "unused"}]
    script(server, [answer("*."), answer("*"), answer("### Final Answer: *")], probes)
    embedder = CountingEmbedder()
    result = await ask(
        sqlite_store, tmp_path, server.gateway(), namespace, {"question": QUESTION, "max_cycles": 2}, embedder=embedder
    )
    # the second probe finds no fresh semantic or episodic evidence (the pool has both summaries): one cue
    cycle_one = ["probe", "filter", "cue", "cue", "cue", "fuse", "answer"]
    assert roles(server) == [
        *STEP0,
        *cycle_one,
        "probe",
        "filter",
        "cue",
        "fuse",
        "answer",
    ]  # no probe round after the last attempt
    assert result.state["final_answer"] == "*" and result.state["status"] == "unresolved"
    assert result.steps[-2:] == ["answer", "finalize"] and result.steps.count("probe") == 2
    [question] = await sqlite_store.keyword_search(namespace, "guardian Tobin", kinds=["Question"])
    assert question.node.properties["status"] == "unresolved" and question.node.properties["cycles"] == 2
    # one query embedding per text per question: the question was embedded once, though retrieval and two fusions used it
    assert embedder.texts.count(QUESTION) == 1
    assert embedder.texts.count("Who is Jessamy Pell?") == 1


async def test_no_probes_finalizes(
    sqlite_store: GraphStore, server: ScriptedOpenAIServer, namespace: str, tmp_path: Path
) -> None:
    script(server, [answer("*")], [{"probe_1": QUESTION.upper(), "probe_2": "  "}])  # a repeat and a blank: nothing new
    result = await ask(sqlite_store, tmp_path, server.gateway(), namespace, {"question": QUESTION})
    assert roles(server) == [*STEP0, "probe"]
    assert result.state["status"] == "unresolved" and result.state["final_answer"] == "*"
    assert result.steps == ["retrieve", "encode", "answer", "commit", "probe", "finalize"]


async def test_an_error_is_never_stored_as_a_cue(
    sqlite_store: GraphStore, server: ScriptedOpenAIServer, namespace: str, tmp_path: Path
) -> None:
    semantic_cue = re.compile(r"Content:\n(Family|Trade):")  # only the semantic layer's cue call
    server.script(Rule(system="narrative analyst", user=semantic_cue, text="Error: Rate limit reached for gpt-4o-mini"))
    server.script(
        Rule(system="narrative analyst", user="That reply is not valid", text="Error: Rate limit reached")
    )  # the re-ask
    script(server, [answer("Corvin Ashe")])
    result = await ask(sqlite_store, tmp_path, server.gateway(), namespace, {"question": QUESTION})
    assert sorted(roles(server)) == sorted([*STEP0, "cue"])  # the unreadable cue was re-asked once, then skipped
    memory = await units(sqlite_store, namespace)
    assert sorted(unit.properties["layer"] for unit in memory) == ["episodic", "veridical"]
    assert await sqlite_store.count_nodes(namespace, "MemoryUnit") == 2
    assert not any("Error" in (unit.text or "") for unit in memory) and result.state["status"] == "answered"


async def test_markdown_answer_is_read(
    sqlite_store: GraphStore, server: ScriptedOpenAIServer, namespace: str, tmp_path: Path
) -> None:
    script(server, ["### Key Facts\nCorvin Ashe was named guardian.\n### Final Answer\nCorvin Ashe"])
    result = await ask(sqlite_store, tmp_path, server.gateway(), namespace, {"question": QUESTION})
    assert roles(server) == [*STEP0, "answer"]  # not JSON: re-asked once, then the marker was read
    assert result.state["final_answer"] == "Corvin Ashe" and result.state["status"] == "answered"


async def test_fenced_probe_json_runs_one_worker_per_probe(
    sqlite_store: GraphStore, server: ScriptedOpenAIServer, namespace: str, tmp_path: Path
) -> None:
    fenced = '```json\n{"probe1": "Who is Jessamy Pell?", "probe2": "What is the Needle path?"}\n```'
    script(server, [answer("*"), answer("Corvin Ashe")], [fenced])
    result = await ask(sqlite_store, tmp_path, server.gateway(), namespace, {"question": QUESTION})
    calls = roles(server)
    assert calls[:6] == [*STEP0, "probe"] and calls[-2:] == ["fuse", "answer"]
    middle = Counter(calls[6:-2])
    assert middle["filter"] == 2 and set(middle) == {"filter", "cue"}
    cycle_one = [
        unit
        for unit in await units(sqlite_store, namespace)
        if unit.properties["cycle"] == 1 and unit.properties["layer"] != "fusion"
    ]
    assert middle["cue"] == len(cycle_one) and {unit.properties["probe"] for unit in cycle_one} == {
        "Who is Jessamy Pell?",
        "What is the Needle path?",
    }
    assert result.steps.count("probe_worker") == 2 and result.state["final_answer"] == "Corvin Ashe"


async def test_loose_probe_reply_is_read(
    sqlite_store: GraphStore, server: ScriptedOpenAIServer, namespace: str, tmp_path: Path
) -> None:
    loose = "Here you go: {'probe_1': 'Who is Jessamy Pell?',}"
    script(server, [answer("*"), answer("Corvin Ashe")], [loose])
    result = await ask(sqlite_store, tmp_path, server.gateway(), namespace, {"question": QUESTION})
    calls = roles(server)
    assert calls[:7] == [*STEP0, "probe", "probe"]  # the gateway re-asked once, then the loose reply was read
    assert result.steps.count("probe_worker") == 1 and result.state["final_answer"] == "Corvin Ashe"
    probes = await sqlite_store.keyword_search(namespace, "Jessamy Pell", kinds=["Probe"])
    assert [hit.node.text for hit in probes] == ["Who is Jessamy Pell?"]


async def test_evidence_already_in_the_pool_is_not_retrieved_again(
    sqlite_store: GraphStore, server: ScriptedOpenAIServer, namespace: str, tmp_path: Path
) -> None:
    script(
        server, [answer("*"), answer("Corvin Ashe")], [{"probes": [QUESTION + " Tell me."]}]
    )  # retrieves what the question did
    await ask(sqlite_store, tmp_path, server.gateway(), namespace, {"question": QUESTION})
    by_cycle: dict[int, set[str]] = {0: set(), 1: set()}
    for unit in await units(sqlite_store, namespace):
        if unit.properties["layer"] != "fusion":
            around = await sqlite_store.neighbourhood(namespace, unit.id, relationship_types=["EVIDENCE"], direction="out")
            by_cycle[unit.properties["cycle"]].update(node.id for node in around.nodes[1:])
    assert len(by_cycle[0]) == 3 and len(by_cycle[1]) == 3  # the next best items filled in
    assert not by_cycle[0] & by_cycle[1]
    step0_texts = [node.text for node in await sqlite_store.get_nodes(namespace, sorted(by_cycle[0])) if node]
    probe_cues = [user_text(request) for request in chats(server)[6:] if role(request) == "cue"]
    assert probe_cues and not any(text in cue for text in step0_texts for cue in probe_cues if text)


async def test_multiple_choice_options_reach_only_the_answer_step(
    sqlite_store: GraphStore, server: ScriptedOpenAIServer, namespace: str, tmp_path: Path
) -> None:
    options = {
        "A": "A lighthouse keeper on Morrow Point",
        "B": "The man the will named",
        "C": "An abbess of Grayhollow",
        "D": "Nobody at all",
    }
    script(server, [answer("*"), answer("[B]")], [{"probes": ["Who looked after the Orsk children?"]}])
    result = await ask(sqlite_store, tmp_path, server.gateway(), namespace, {"question": QUESTION, "options": options})
    assert roles(server) == [*STEP0, "probe", "filter", "cue", "cue", "cue", "fuse", "answer"]
    for request in chats(server):
        shown = [text in user_text(request) for text in options.values()]
        assert all(shown) if role(request) == "answer" else not any(shown), role(request)
    assert result.state["final_answer"] == "[B]"
    [question] = await sqlite_store.keyword_search(namespace, "guardian Tobin", kinds=["Question"])
    assert question.node.properties["options"] == options


async def test_llm_fault_mid_cycle_is_retried_by_the_gateway(
    sqlite_store: GraphStore, server: ScriptedOpenAIServer, namespace: str, tmp_path: Path
) -> None:
    server.script(Rule(system="regulation agent", fault="500", times=1))
    script(server, [answer("*"), answer("Corvin Ashe")], [{"probes": ["Who looked after the Orsk children?"]}])
    result = await ask(sqlite_store, tmp_path, server.gateway(), namespace, {"question": QUESTION})
    assert roles(server) == [*STEP0, "probe", "filter", "cue", "cue", "cue", "fuse", "answer"]
    faulted = [request for request in chats(server, answered_only=False) if request["status"] != 200]
    assert [(role(request), request["status"]) for request in faulted] == [("probe", 500)]
    assert result.llm_usage["retries"] == 1 and result.state["final_answer"] == "Corvin Ashe"


async def test_offline_model_runs_the_graph(sqlite_store: GraphStore, namespace: str, tmp_path: Path) -> None:
    result = await ask(
        sqlite_store, tmp_path, offline_llm(), namespace, {"question": "Where did Nima Orsk travel after the notebook was sold?"}
    )
    assert result.offline_model and result.state["status"] in {"answered", "unresolved"}
    assert result.steps.count("answer") <= 3  # the offline demo runs 0-2 cycles


# -- parsing and ranking --------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["*", "*.", " * ", "**", "[*]", "", "### Final Answer: *", "### Final Answer\n*."])
def test_impasse_forms(text: str) -> None:
    assert is_impasse(parse_final_answer(text))


@pytest.mark.parametrize(
    ("text", "expected"), [("### Final Answer: Corvin Ashe", "Corvin Ashe"), ("[B]", "[B]"), ("a ferryman.", "a ferryman.")]
)
def test_answers(text: str, expected: str) -> None:
    assert parse_final_answer(text) == expected and not is_impasse(expected)


@pytest.mark.parametrize(
    "reply",
    [
        {"probes": ["a", "b"]},
        {"probe_1": "a", "probe_2": "b"},
        {"probe2": "b", "probe1": "a"},
        ["a", "b"],
        {"Probe_1": "a", "probe 2": "b", "note": "x"},
    ],
)
def test_probe_shapes(reply: Any) -> None:
    assert ProbeSet.model_validate(reply).probes == ["a", "b"]


def test_loose_probes() -> None:
    assert loose_probes("{'probe_1': 'Who is Pell?', 'probe_2': \"Where is the Needle?\",}") == [
        "Who is Pell?",
        "Where is the Needle?",
    ]
    assert loose_probes("I cannot help") == []


# -- budgets cut, never drop -----------------------------------------------------------------------------------


def test_a_text_over_its_budget_is_cut_at_it() -> None:
    assert cut_text("one two  three\nfour five six seven", 6) == f"one two  three {CUT}"  # 3 words + marker: 6 tokens
    assert cut_text("  one two three", 3) == f"one {CUT}" and cut_text("one two", 2) == ""
    lines = ["alpha beta gamma delta epsilon zeta eta", "theta"]
    assert fit_budget(lines, 8) == [f"alpha beta gamma delta epsilon {CUT}"]  # alone over the budget: cut, not lost
    assert fit_budget(["a b", "c d e f g h i j k l"], 8) == ["a b"]  # a later text that overflows ends the list whole
    assert fit_budget(["a b", "c"], 8) == ["a b", "c"] and fit_budget(["a b c"], 2) == []


async def test_a_fusion_cue_longer_than_the_history_budget_is_cut(
    sqlite_store: GraphStore, server: ScriptedOpenAIServer, namespace: str, tmp_path: Path
) -> None:
    script(server, [answer("*"), answer("Corvin Ashe")], [{"probes": ["Who looked after the Orsk children?"]}])
    # the history line "Finding: Fused narrative: Corvin Ashe became guardian." is 7 words, 10 tokens: over 8
    await ask(
        sqlite_store, tmp_path, server.gateway(), namespace, {"question": QUESTION}, node_config={"answer": {"history_tokens": 8}}
    )
    last = user_text(chats(server)[-1])
    assert f"### Historical Information\nFinding: Fused narrative: Corvin Ashe {CUT}\n\nQuestion: {QUESTION}" in last


async def test_an_evidence_text_longer_than_its_layers_budget_is_cut(
    sqlite_store: GraphStore, server: ScriptedOpenAIServer, namespace: str, tmp_path: Path
) -> None:
    script(server, [answer("Corvin Ashe")])
    await ask(
        sqlite_store, tmp_path, server.gateway(), namespace, {"question": QUESTION}, node_config={"retrieve": {"sem_tokens": 6}}
    )
    summary = f"Family: Hedda Vale {CUT}"  # "Family: Hedda Vale weds the ferryman..." cut at 6 tokens
    cues = [user_text(request) for request in chats(server) if role(request) == "cue"]
    assert any(cue.endswith(f"Content:\n{summary}") for cue in cues)
    answered = user_text(chats(server)[-1])
    assert f"### Semantic Summary\n{summary}\n\n### Timeline Summary" in answered


def test_personalized_pagerank_prefers_the_seeds_neighbourhood() -> None:
    edges = {("e1", "c1"): 1.0, ("e1", "c2"): 1.0, ("e2", "c3"): 1.0}
    ranks = personalized_pagerank(["c1", "c2", "c3", "e1", "e2", "lonely"], edges, {"e1": 1.0}, 0.5)
    assert abs(sum(ranks.values()) - 1) < 1e-9
    assert ranks["e1"] > ranks["c1"] == ranks["c2"] > ranks["c3"] == 0 == ranks["lonely"]
    assert json.dumps(personalized_pagerank([], {}, {}, 0.5)) == "{}"


# -- kill and resume ------------------------------------------------------------------------------------

MNEMOFLOW = str(Path(sys.executable).with_name("mnemoflow"))


@pytest.mark.subprocess
@pytest.mark.slow
async def test_killed_run_resumes_without_duplicating_the_workspace(
    backend: str, server: ScriptedOpenAIServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """SIGKILL a real ``mnemoflow run`` while the fusion call hangs; the resumed run finishes the cycle once."""
    script(server, [answer("*"), answer("Corvin Ashe")], [{"probes": ["Who looked after the Orsk children?"]}])
    fusion = next(rule for rule in server.rules if rule.system == "integration agent")
    fusion.latency = 60.0
    uri = request.getfixturevalue("empty_neo4j") if backend == "neo4j" else None
    store = new_store(backend, neo4j_uri=uri, sqlite_path=tmp_path / "memory.db")
    await store.setup()
    await build_book(store, EMBEDDER, "resume")
    environment = cli_environment(
        backend, tmp_path, namespace="resume", neo4j_uri=uri, model_url=server.base_url, MNEMOFLOW_LLM_INITIAL_BACKOFF="0"
    )
    graph = small_graph(tmp_path)
    command = [
        MNEMOFLOW,
        "run",
        str(graph),
        "--input",
        json.dumps({"question": QUESTION, "book_id": BOOK}),
        "--thread",
        "qa-thread",
        "--json",
    ]
    first = subprocess.Popen(command, env=environment, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while "fuse" not in [role(request) for request in chats(server, answered_only=False)]:  # in flight
            assert first.poll() is None, first.communicate()[1]
            assert time.monotonic() < deadline, "the run never reached the fusion"
            await asyncio.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        assert first.returncode == -signal.SIGKILL
        before = len(chats(server, answered_only=False))
        fusion.latency = 0.0

        second = subprocess.run(command, env=environment, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stderr
        state = json.loads(second.stdout)
        assert state["final_answer"] == "Corvin Ashe" and state["status"] == "answered"
        assert "resumed" in second.stderr
        resumed_calls = [role(request) for request in chats(server, answered_only=False)[before:]]
        assert resumed_calls == ["fuse", "answer"]  # nothing before the fusion ran again
        assert await store.count_nodes("resume", "MemoryUnit") == 7  # 3 + 3 + 1 fusion: no duplicates
        assert await store.count_nodes("resume", "Question") == 1 and await store.count_nodes("resume", "Cycle") == 2
        assert await store.count_relationships("resume", "EVIDENCE") == 6
    finally:
        if first.poll() is None:
            first.kill()
        await store.close()
