"""Graph files: every validation error with its line, compilation, runs on both stores, rendering, schema."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from mnemoflow.errors import ConfigError, GraphSpecError, NodeError, PreconditionError, RegistrationError
from mnemoflow.graphs import GraphSpec, library_graphs, load_graph, run_graph, to_mermaid
from mnemoflow.graphs.outputs import without_vectors
from mnemoflow.memory.checkpoints import open_checkpointer
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.nodes import NoConfig, Registry, node
from mnemoflow.settings import Settings
from tests.conftest import EMBEDDER, offline_llm, settings_of

LIBRARY = Path(__file__).parents[1] / "graphs" / "library"
INVALID = sorted((Path(__file__).parent / "fixtures" / "graphs" / "invalid").glob("*.yaml"))
MNEMOFLOW = str(Path(sys.executable).with_name("mnemoflow"))
TEXT = "The sea was calm that night. A ship came close to the reef! Its crew saw the light and turned. All were saved."


def expectation(path: Path) -> tuple[str, int, str]:
    """The header of an invalid fixture: ``# expect: CODE LINE | part of the message``."""
    place, message = path.read_text().splitlines()[0].removeprefix("# expect: ").split(" | ", 1)
    code, line = place.split()
    return code, int(line), message


@pytest.mark.parametrize("path", INVALID, ids=[path.stem for path in INVALID])
def test_invalid_graph_is_reported_with_its_line(path: Path) -> None:
    code, line, message = expectation(path)
    with pytest.raises(GraphSpecError) as caught:
        load_graph(path)
    matching = [
        problem
        for problem in caught.value.problems
        if (problem.code, problem.line) == (code, line) and message in str(problem)
    ]
    assert matching, f"expected {code} at line {line}, got:\n{caught.value}"
    # a recursive include is reported where the cycle closes, in the file the chain leads back from
    assert any(Path(problem.file).name == path.name or path.name in problem.message for problem in matching)
    assert f"{Path(matching[0].file).name}:{line}:" in str(caught.value)
    assert "recursive" in path.stem or Path(matching[0].file) == path


@pytest.mark.subprocess
def test_a_config_model_that_takes_unknown_keys_is_refused_at_registration() -> None:
    class Loose(BaseModel):
        depth: int = 1

    async def step(state: BaseModel, config: BaseModel, context: object) -> dict[str, object]:
        """Do nothing."""
        return {}

    with pytest.raises(RegistrationError, match=r"config model Loose must refuse unknown keys"):
        node("testing.loose", state=NoConfig, reads=set(), writes=set(), config=Loose, registry=Registry())(step)


@pytest.mark.parametrize(
    ("graph", "key", "misspelt"), [("tme-turn", "{rederive: false}", "rederiv"), ("experepair", "{max_files: 4}", "max_file")]
)
def test_a_misspelt_config_key_in_a_library_graph_is_refused(graph: str, key: str, misspelt: str, tmp_path: Path) -> None:
    text = (LIBRARY / f"{graph}.yaml").read_text()
    assert key in text
    changed = tmp_path / f"{graph}.yaml"
    changed.write_text(text.replace(key, key.replace(key[1:].split(":")[0], misspelt)))
    with pytest.raises(GraphSpecError, match=misspelt):
        load_graph(changed)


@pytest.mark.subprocess
def test_cli_validates_the_library_and_rejects_each_invalid_file() -> None:
    library = subprocess.run([MNEMOFLOW, "graphs", "validate", *map(str, library_graphs())], capture_output=True, text=True)
    assert library.returncode == 0, library.stderr
    assert library.stdout.count(": ok (") == len(library_graphs()) >= 2
    result = subprocess.run([MNEMOFLOW, "graphs", "validate", *map(str, INVALID)], capture_output=True, text=True)
    assert result.returncode == 1 and "ok (" not in result.stdout
    for path in INVALID:
        code, line, _ = expectation(path)
        assert f"{path.name}:{line}:" in result.stderr and f": {code}: " in result.stderr


@pytest.mark.subprocess
def test_json_schema_describes_the_format() -> None:
    schema = GraphSpec.model_json_schema(by_alias=True)
    assert {"name", "state", "nodes", "edges", "routes", "fanouts", "max_steps"} <= set(schema["properties"])
    node = schema["$defs"]["NodeSpec"]["properties"]
    assert {"use", "graph", "with", "retry", "timeout"} <= set(node)
    printed = subprocess.run([MNEMOFLOW, "graphs", "schema"], capture_output=True, text=True, check=True)
    assert json.loads(printed.stdout) == schema


def test_mermaid_rendering() -> None:
    assert to_mermaid(load_graph("text-pipeline")) == (
        "flowchart TD\n"
        "    %% text-pipeline v1\n"
        "    __start__([START])\n"
        "    __end__([END])\n"
        '    n_split["split<br/><small>text.split_sentences</small>"]\n'
        '    n_remember["remember<br/><small>text.remember_sentences</small>"]\n'
        '    n_wait["wait<br/><small>text.pause</small>"]\n'
        '    n_stats[["stats<br/><small>graph: text-stats</small>"]]\n'
        "    __start__ --> n_split\n"
        "    n_remember --> n_wait\n"
        "    n_wait --> n_stats\n"
        "    n_stats --> __end__\n"
        '    n_split -- "found" --> n_remember\n'
        '    n_split -- "empty" --> __end__\n'
    )
    stats = to_mermaid(load_graph("text-stats"))
    assert 'n_split -. "each sentences" .-> n_count' in stats
    assert 'n_note -- "again" --> n_note' in stats


async def run(store: GraphStore, settings: Settings, graph: str | Path, values: dict[str, object] | None, namespace: str, thread: str | None = None):  # type: ignore[no-untyped-def]
    async with open_checkpointer(settings) as checkpointer:
        return await run_graph(
            load_graph(graph), values, store=store, embedder=EMBEDDER, llm=offline_llm(), settings=settings, checkpointer=checkpointer, namespace=namespace, thread_id=thread
        )


async def test_example_graphs_run_on_both_stores(store: GraphStore, namespace: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    settings = settings_of(store, tmp_path, request)
    result = await run(store, settings, "text-pipeline", {"text": TEXT}, namespace, "thread-1")
    state = result.state
    assert state["word_counts"] == [6, 7, 7, 3]  # merged in sentence order
    assert state["total_words"] == 23
    assert state["rounds"] == 3 and len(state["notes"]) == 3  # the loop's bound
    assert result.steps[:3] == ["split", "remember", "wait"] and result.steps.count("stats/count") == 4
    assert await store.count_nodes(namespace, "Chunk") == 4
    assert await store.count_relationships(namespace, "NEXT") == 3
    [trace] = await store.keyword_search(namespace, "text-pipeline completed", kinds=["Run"])
    assert trace.node.properties["thread_id"] == "thread-1" and trace.node.properties["steps"] == len(result.steps)
    assert [event["node"] for event in trace.node.properties["events"] if event["event"] == "end"] == result.steps

    again = await run(store, settings, "text-pipeline", {"text": TEXT}, namespace, "thread-2")
    assert not again.resumed and again.state["total_words"] == 23
    assert await store.count_nodes(namespace, "Chunk") == 4  # memory written twice is not duplicated


async def test_empty_text_takes_the_other_route(store: GraphStore, namespace: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    result = await run(store, settings_of(store, tmp_path, request), "text-pipeline", {"text": ""}, namespace)
    assert result.steps == ["split"] and result.state["sentences"] == []


def write_graph(folder: Path, name: str, body: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(f"name: {name}\nstate: text.TextState\ninput: [text]\n{body}")
    return path


async def test_max_steps_stops_a_runaway_loop(store: GraphStore, namespace: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    path = write_graph(
        tmp_path,
        "runaway",
        "max_steps: 6\nnodes:\n  note: {use: text.note_round}\nedges:\n  - {from: START, to: note}\nroutes:\n"
        "  - {from: note, router: text.until_rounds, with: {max_rounds: 100}, outcomes: {again: note, done: END}}\n",
    )
    with pytest.raises(NodeError, match="more than 6 steps"):
        await run(store, settings_of(store, tmp_path, request), path, {"text": "x"}, namespace)
    [trace] = await store.keyword_search(namespace, "runaway failed", kinds=["Run"])
    assert trace.node.properties["status"] == "failed"


async def test_bad_input_is_refused(store: GraphStore, namespace: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    settings = settings_of(store, tmp_path, request)
    with pytest.raises(ConfigError, match="text: required"):
        await run(store, settings, "text-stats", {}, namespace)
    with pytest.raises(ConfigError, match=r"txt: not a field of text.TextState \(did you mean 'text'\?\)"):
        await run(store, settings, "text-stats", {"text": "a.", "txt": "b"}, namespace)
    with pytest.raises(ConfigError) as caught:  # every problem at once, one line each, before any step
        await run(store, settings, "text-stats", {"text": 42, "rounds": "many"}, namespace)
    lines = str(caught.value).splitlines()[1:]
    assert lines == [
        "  text: Input should be a valid string (got 42)",
        "  rounds: Input should be a valid integer, unable to parse string as an integer (got 'many')",
    ]
    assert await store.count_nodes(namespace, "Run") == 0


async def test_a_run_returns_the_declared_outputs_without_vectors(
    store: GraphStore, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    result = await run(store, settings_of(store, tmp_path, request), "text-stats", {"text": TEXT}, namespace)
    assert result.outputs == {"total_words": 23, "rounds": 3, "notes": result.state["notes"]}
    nested = {"query_vectors": {"q": [0.5] * 384}, "ids": list(range(20)), "short": [0.1, 0.2]}
    assert without_vectors(nested) == {"query_vectors": {"q": "<vector of 384 floats>"}, "ids": list(range(20)), "short": [0.1, 0.2]}


async def test_a_missing_book_fails_before_the_first_step_and_the_run_record_says_why(
    store: GraphStore, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    settings = settings_of(store, tmp_path, request)
    with pytest.raises(PreconditionError) as caught:
        await run(store, settings, "comorag-qa", {"question": "Who?", "book_id": "no-such-book"}, namespace)
    assert f"book 'no-such-book' is not indexed in namespace {namespace!r}" in str(caught.value)
    assert f"namespace {namespace!r} holds no book" in str(caught.value)
    [record] = await store.list_nodes(namespace, kind="Run")
    assert record.properties["status"] == "failed" and record.properties["steps"] == 0
    assert record.properties["error"] == str(caught.value)


@pytest.mark.subprocess
@pytest.mark.slow
def test_cli_run_list_show_render(tmp_path: Path) -> None:
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("MNEMOFLOW_", "NEO4J_"))}
    (tmp_path / "input.json").write_text(json.dumps({"text": TEXT}))

    def cli(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([MNEMOFLOW, *arguments], capture_output=True, text=True, cwd=tmp_path, env=environment, timeout=120)

    def runs() -> list[subprocess.CompletedProcess[str]]:  # they write to one store: one after another
        return [
            cli("run", "text-stats", "--input", "@input.json", "--field", "word_counts", "--namespace", "cli"),
            cli("run", "text-stats", "--input", "@input.json", "--namespace", "cli"),
            cli("run", "text-stats", "--input", "@input.json", "--json"),
        ]

    others = [  # commands that open no store (refused before the run, or only reading graph files)
        ("run", "text-stats", "--input", '{"text": 42}'),
        ("run", "text-stats", "--input", "@input.json", "--field", "answer"),
        ("graphs", "list"),
        ("graphs", "show", "text-stats"),
        ("graphs", "render", "text-stats"),
        ("run", "text-stats", "--input", "{not json"),
        ("run", "no-such-graph"),
    ]
    with ThreadPoolExecutor(max_workers=3) as pool:  # each command is a process start and its imports: run side by side
        writing = pool.submit(runs)
        wrong_type, unknown_field, listed, shown, rendered, bad_input, missing = pool.map(lambda arguments: cli(*arguments), others)
        result, outputs, as_json = writing.result()

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [6, 7, 7, 3]
    summary = result.stderr.strip().splitlines()[-1]
    assert summary.startswith("text-stats: completed in 10 steps") and "0 LLM calls, 0 tokens" in summary
    assert outputs.stdout.splitlines()[:2] == ["total_words: 23", "rounds: 3"] and outputs.stdout.count("\n") == 3
    assert '"text": ' in as_json.stdout
    assert wrong_type.returncode == 2 and wrong_type.stdout == ""
    assert wrong_type.stderr.splitlines() == [
        f"error: input of text-stats ({LIBRARY / 'text-stats.yaml'}) refused:",
        "  text: Input should be a valid string (got 42)",
    ]
    assert unknown_field.returncode == 2 and "--field 'answer' is not a field of text.TextState" in unknown_field.stderr
    assert "completed" not in unknown_field.stderr  # refused before the run
    assert "text-stats" in listed.stdout and "text-pipeline" in listed.stdout
    assert "  split     text.split_sentences {min_length: 2}" in shown.stdout
    assert "  after note  text.until_rounds {max_rounds: 3}\n              again -> note\n              done  -> remember\n" in shown.stdout
    assert rendered.stdout.startswith("flowchart TD")
    assert bad_input.returncode == 2 and "--input" in bad_input.stderr and "Traceback" not in bad_input.stderr
    assert missing.returncode == 2 and "no graph file or library graph named 'no-such-graph'" in missing.stderr


LIBRARY_TEXT = (Path(__file__).parents[1] / "graphs" / "library" / "text-stats.yaml").read_text()
edits = st.lists(
    st.tuples(
        st.integers(0, len(LIBRARY_TEXT)),
        st.integers(0, 40),
        st.text(alphabet=":-{}[],'\"#*&!|>%@` \n\tabcxyz0123456789.", max_size=12),
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=edits)
def test_mangled_graph_files_fail_only_with_graph_spec_errors(tmp_path: Path, changes: list[tuple[int, int, str]]) -> None:
    """Whatever a broken file holds, loading it gives a GraphSpecError naming file and line, or a valid graph."""
    text = LIBRARY_TEXT
    for start, length, insert in changes:
        start = min(start, len(text))
        text = text[:start] + insert + text[start + length :]
    path = tmp_path / "mangled.yaml"
    path.write_text(text)
    try:
        graph = load_graph(path)
    except GraphSpecError as exc:
        assert exc.problems and all(problem.file == str(path) and problem.line >= 1 for problem in exc.problems)
    else:
        assert graph.spec.nodes


def test_a_routes_bounds_can_be_set_over_the_files_and_are_checked_again() -> None:
    from mnemoflow.errors import UsageError
    from mnemoflow.graphs import with_route_config

    graph = load_graph("experepair")
    fitted = with_route_config(graph, {"review": {"max_rounds": 1}})
    assert {route.from_: route.with_ for route in fitted.spec.routes} == {
        "judge_test": {"max_test_attempts": 3},
        "review": {"max_rounds": 1},
    }
    assert {route.from_: route.with_ for route in graph.spec.routes}["review"] == {"max_rounds": 3}  # the file's stays
    with pytest.raises(UsageError, match=r"no route from \['localize'\]"):
        with_route_config(graph, {"localize": {"max_rounds": 1}})
    with pytest.raises(GraphSpecError, match="max_rounds"):
        with_route_config(graph, {"review": {"max_rounds": "many"}})
