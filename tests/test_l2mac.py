"""L2MAC on both stores: a scripted model (real HTTP) builds a package over three instructions; resume, limits, export."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mnemoflow.errors import ConfigError, NodeError
from mnemoflow.graphs import LoadedGraph, RunResult, load_graph, run_graph, with_node_config
from mnemoflow.llm import ToolCall
from mnemoflow.memory.paging import all_nodes
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import NodeRecord
from mnemoflow.nodes.l2mac.checks import run_checks
from mnemoflow.nodes.l2mac.export import export_files
from mnemoflow.nodes.l2mac.files import PathError, Project, check_path, load_project
from mnemoflow.nodes.l2mac.model import VERSION, WriteKey, file_version_id
from mnemoflow.nodes.l2mac.tools import dispatch
from mnemoflow.nodes.l2mac.window import context_size, repeats, trim_oldest
from mnemoflow.nodes.sandbox import Limits
from tests.conftest import EMBEDDER, cli_environment, new_store, offline_llm, settings_of
from tests.support.graph_variants import library_variant
from tests.support.l2mac_model import CORE, FINAL_FILES, INSTRUCTIONS, PROGRESS, WRONG_MUL, PackageModel, instruction_turn
from tests.support.openai_server import Calls, Rule, ScriptedOpenAIServer

MNEMOFLOW = str(Path(sys.executable).with_name("mnemoflow"))
WINDOW = 8_000
"""Fits every context of the script but the third instruction's after it reads its large data file back."""
TASK = "Build tally, a tiny package of arithmetic helpers, with tests and a README."
COMPILE_ONLY = {"checker: pylint": "checker: compile"}  # pylint costs ~0.5 s a check; test_l2mac_evaluator.py tests it


def graph(**config: dict[str, Any]) -> LoadedGraph:
    """The library graph compiling instead of running pylint, with these nodes' config set over the file's."""
    return with_node_config(load_graph("l2mac"), {**config, "run_tools": {"checker": "compile", **config.get("run_tools", {})}})


@pytest.fixture
def server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer() as running:
        yield running


async def run(
    store: GraphStore, server: ScriptedOpenAIServer, namespace: str, tmp_path: Path, request: pytest.FixtureRequest,
    values: dict[str, Any], loaded: LoadedGraph | None = None,
) -> RunResult:  # fmt: skip
    return await run_graph(
        loaded or graph(), values, store=store, embedder=EMBEDDER, llm=server.gateway(),
        settings=settings_of(store, tmp_path, request), checkpointer=None, namespace=namespace,
    )  # fmt: skip


def step_requests(server: ScriptedOpenAIServer) -> list[dict[str, Any]]:
    return [r["body"] for r in server.requests if r["body"].get("tools") and r["body"].get("tool_choice") in (None, "auto")]


@pytest.mark.subprocess
@pytest.mark.slow
async def test_a_scripted_model_builds_a_package_over_three_instructions(
    store: GraphStore, server: ScriptedOpenAIServer, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    server.script(Rule(respond=PackageModel()))
    result = await run(store, server, namespace, tmp_path, request, {"task": TASK, "context_window": WINDOW})
    state = result.state
    assert state["status"] == "done" and state["instructions"] == INSTRUCTIONS

    # the plan came from a forced tool call
    [plan] = [r["body"] for r in server.requests if r["body"].get("tool_choice") not in (None, "auto")]
    assert plan["tool_choice"] == {"type": "function", "function": {"name": "plan_steps"}}

    # the final files, and every version linked to the step that wrote it
    project = await load_project(store, namespace, result.thread_id)
    assert project.status == "done" and state["files"] == sorted(FINAL_FILES)
    assert await project.heads() == FINAL_FILES
    versions = await all_nodes(store, namespace, "L2FileVersion")
    assert len(versions) == len(FINAL_FILES) + 2  # core.py: written, edited wrong, edited right
    core = [await project.read("tally/core.py", n) for n in (1, 2, 3)]
    assert [(v.action, v.instruction, v.content) for v in core] == [
        ("write", 0, CORE),
        ("edit", 1, WRONG_MUL),
        ("edit", 1, FINAL_FILES["tally/core.py"]),
    ]
    for version in versions:
        links = (await store.neighbours(namespace, version.id, limit=10)).relationships
        written_in = [link for link in links if link.type == "WRITTEN_IN" and link.source_id == version.id]
        [instruction] = await store.get_nodes(namespace, [written_in[0].target_id])
        assert instruction is not None and instruction.properties["idx"] == version.properties["instruction"]
        previous = [link.target_id for link in links if link.type == "PREV" and link.source_id == version.id]
        assert previous == ([version.properties["prev"]] if version.properties["prev"] else [])
    instructions = sorted(await all_nodes(store, namespace, "L2Instruction"), key=lambda node: node.properties["idx"])
    assert [(i.properties["status"], i.properties["restarts"]) for i in instructions] == [("done", 0), ("done", 0), ("done", 1)]
    assert all(i.properties["summary"] for i in instructions)

    # every write turn and every step_complete ran the checks; the failing test was fixed by the fix loop
    checks = [(c["instruction"], c["attempt"], c["passed"]) for c in state["checks"]]
    assert checks == [
        (0, 0, True),
        (0, 0, True),
        (1, 0, False),
        (1, 0, True),
        (1, 0, True),
        (2, 0, True),
        (2, 1, True),
        (2, 1, True),
    ]
    failed = state["checks"][2]
    assert failed["tests_failed"] == 1 and "assert 7 == 6" in failed["output"]
    fix_requests = [b for b in step_requests(server) if b["messages"][-1]["content"].startswith("The checks failed")]
    assert len(fix_requests) == 1 and "assert 7 == 6" in fix_requests[0]["messages"][-1]["content"]

    # three bad calls came back to the model as tool errors, and the run went on
    assert [error.split(":")[0] for error in state["tool_errors"]] == ["run_shell", "edit_file", "write_files"]
    assert "there is no tool 'run_shell'" in state["tool_errors"][0] and "new: Field required" in state["tool_errors"][1]
    assert "climbs out" in state["tool_errors"][2]
    after_bad = next(b for b in step_requests(server) if any("ERROR:" in str(m.get("content")) for m in b["messages"]))
    assert sum(m["role"] == "tool" and m["content"].startswith("ERROR:") for m in after_bad["messages"]) == 3
    assert not (tmp_path.parent / "escape.py").exists()

    # the third instruction overflowed: a summary without tools, then a fresh context that carries it
    assert state["restarts"] == 1
    [exhausted] = [r["body"] for r in server.requests if "context window is full" in str(r["body"]["messages"][-1]["content"])]
    assert "tools" not in exhausted
    restarted = [b for b in step_requests(server) if instruction_turn(b["messages"])[:2] == (2, True)]
    assert restarted and PROGRESS in restarted[0]["messages"][2]["content"] and len(restarted[0]["messages"]) == 3
    assert state["peak_context_tokens"] <= WINDOW - 1_000
    for body in step_requests(server):
        assert context_size(body["messages"]) <= WINDOW - 1_000

    # the repeated list_files was seen as a loop: the next call was sampled hotter, then it cooled down
    temperatures = [body["temperature"] for body in step_requests(server)]
    assert state["loops"] == 1 and temperatures[:4] == [0.0, 0.0, 0.4, pytest.approx(0.3)]


@pytest.mark.subprocess
@pytest.mark.slow
async def test_a_check_that_hangs_is_killed_and_counts_as_a_failure(
    store: GraphStore, server: ScriptedOpenAIServer, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    hanging = "import time\n\n\ndef test_forever():\n    time.sleep(600)\n"
    fixed = "def test_quick():\n    assert True\n"

    def model(body: dict[str, Any]) -> Any:
        if not body.get("tools"):
            return "Wrote a quick test."
        _, _, turn = instruction_turn(body["messages"])
        writes = [("tests/test_slow.py", hanging), ("tests/test_slow.py", fixed)]
        if turn < len(writes):
            path, content = writes[turn]
            return Calls(("write_files", {"files": [{"path": path, "content": content}]}))
        return Calls(("step_complete", {}))

    server.script(Rule(respond=model))
    loaded = graph(run_tools={"timeout_s": 2})
    result = await run(
        store, server, namespace, tmp_path, request, {"task": "A test.", "instructions": ["Write a test."]}, loaded
    )
    first, second = result.state["checks"][:2]
    assert first["timed_out"] and not first["passed"]
    assert second["passed"] and not second["timed_out"]
    fix = next(b for b in step_requests(server) if b["messages"][-1]["content"].startswith("The checks failed"))
    assert "did not finish within their time limit" in fix["messages"][-1]["content"]
    assert result.state["status"] == "done"
    assert not [r for r in server.requests if r["body"].get("tool_choice") not in (None, "auto")]  # the plan was given


@pytest.mark.subprocess
async def test_overflow_restarts_are_bounded_then_the_run_fails_clearly(
    store: GraphStore, server: ScriptedOpenAIServer, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    big = "x = [\n" + "    1,\n" * 1500 + "]\n"

    def model(body: dict[str, Any]) -> Any:
        if not body.get("tools"):
            return "Still writing the big file."
        _, _, turn = instruction_turn(body["messages"])
        return Calls(("write_files", {"files": [{"path": f"big_{turn}.py", "content": big}]}))

    server.script(Rule(respond=model))
    loaded = graph(summarize_overflow={"max_restarts": 2})
    values = {"task": "Write big files.", "instructions": ["Write big files."], "context_window": 5_000}
    with pytest.raises(NodeError, match=r"instruction 1 of 1 failed: its context overflowed 3 times \(max_restarts 2\)"):
        await run(store, server, namespace, tmp_path, request, values, loaded)
    summaries = [r for r in server.requests if "context window is full" in str(r["body"]["messages"][-1]["content"])]
    assert len(summaries) == 2
    [instruction] = await all_nodes(store, namespace, "L2Instruction")
    assert instruction.properties["status"] == "failed" and "overflowed" in instruction.properties["error"]
    [project] = await all_nodes(store, namespace, "L2Project")
    assert project.properties["status"] == "failed"


async def test_a_window_too_small_for_the_fresh_context_fails_at_once(
    store: GraphStore, server: ScriptedOpenAIServer, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    values = {"task": "Anything.", "instructions": ["Do it."], "context_window": 500}
    with pytest.raises(NodeError, match=r"fresh context \(\d+ tokens\) leaves no room for a reply .* window of 500 tokens"):
        await run(store, server, namespace, tmp_path, request, values)
    assert server.request_count == 0


@pytest.mark.subprocess
@pytest.mark.slow
async def test_export_writes_the_final_tree(
    store: GraphStore, server: ScriptedOpenAIServer, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    server.script(Rule(respond=PackageModel()))
    result = await run(store, server, namespace, tmp_path, request, {"task": TASK, "context_window": WINDOW})
    target = tmp_path / "out"
    exported = await export_files(store, namespace, result.run_id, target)
    assert exported.written == sorted(FINAL_FILES) and exported.skipped == {}
    written = {str(p.relative_to(target)): p.read_text() for p in target.rglob("*") if p.is_file()}
    assert written == FINAL_FILES
    with pytest.raises(ConfigError, match="is not empty"):
        await export_files(store, namespace, result.thread_id, target)
    with pytest.raises(ConfigError, match="no L2MAC run or thread 'nope'"):
        await export_files(store, namespace, "nope", tmp_path / "other")
    tested = subprocess.run(  # the checked-out package's own tests pass
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(target)], cwd=target, capture_output=True,
        text=True, timeout=120, env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
    )  # fmt: skip
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "3 passed" in tested.stdout


def printed_run_id(stderr: str) -> str:
    """The run id from the summary line ``mnemoflow run`` prints last: "... (thread T, run R)"."""
    match = re.search(r"run ([0-9a-f]{16})\)", stderr)
    assert match is not None, stderr[-2000:]
    return match.group(1)


@pytest.mark.subprocess
@pytest.mark.slow
async def test_resume_after_a_kill_mid_instruction_duplicates_nothing(
    backend: str, server: ScriptedOpenAIServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    model = PackageModel(hold=(1, 2))  # instruction 2 after its failing checks: the run is killed waiting here
    server.script(Rule(respond=model))
    uri = request.getfixturevalue("empty_neo4j") if backend == "neo4j" else None
    environment = cli_environment(backend, tmp_path, namespace="l2", neo4j_uri=uri, model_url=server.base_url)
    values = json.dumps({"task": TASK, "context_window": WINDOW})
    variant = str(library_variant("l2mac", tmp_path, COMPILE_ONLY).path)
    command = [MNEMOFLOW, "run", variant, "--input", values, "--thread", "killed-l2mac", "--json"]
    store = new_store(backend, neo4j_uri=uri, sqlite_path=tmp_path / "memory.db")
    first = subprocess.Popen(command, env=environment, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not model.held.is_set():
            assert first.poll() is None, first.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the run never reached the held request"
            await asyncio.sleep(0.05)
        # a second process on the thread while the first runs is refused before it calls the model or writes
        requests = server.request_count
        refused = subprocess.run(command, env=environment, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert refused.returncode != 0 and "thread 'killed-l2mac' is being run by run " in refused.stderr, refused.stderr
        assert "one process runs a thread at a time" in refused.stderr and server.request_count == requests
        assert first.poll() is None

        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        model.release.set()
        model.hold = None
        await store.setup()
        before = await all_nodes(store, namespace="l2", kind="L2FileVersion")
        assert {v.properties["path"] for v in before} == {
            "tally/__init__.py",
            "tally/core.py",
            "tests/test_core.py",
            "tests/test_mul.py",
        }

        second = subprocess.run(command, env=environment, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr[-3000:]
        assert "completed, resumed in" in second.stderr
        state = json.loads(second.stdout)
        assert state["status"] == "done"
        # the resumed run took the thread over from the killed process (the refused one never held it), then let go
        claims = sorted(await all_nodes(store, "l2", "L2Claim"), key=lambda claim: claim.properties["generation"])
        killed, resumed = (claim.properties for claim in claims)
        assert (killed["pid"], killed["released"], resumed["released"]) == (first.pid, False, True)
        owner = f"run {killed['run_id']} (process {first.pid} on {killed['host']})"
        assert resumed["took_over"] == f"{owner}: its process {first.pid} is gone"
        assert resumed["run_id"] == printed_run_id(second.stderr) != killed["run_id"]
        project = await load_project(store, "l2", "killed-l2mac")
        assert await project.heads() == FINAL_FILES
        versions = await all_nodes(store, "l2", "L2FileVersion")
        assert len(versions) == len(FINAL_FILES) + 2
        assert {v.id for v in before} <= {v.id for v in versions}
        assert [project.version_count(path) for path in sorted(FINAL_FILES)] == [
            1 if path != "tally/core.py" else 3 for path in sorted(FINAL_FILES)
        ]
        plans = [r for r in server.requests if r["body"].get("tool_choice") not in (None, "auto")]
        assert len(plans) == 1  # the plan was not made again

        export = [MNEMOFLOW, "l2mac", "export", printed_run_id(second.stderr), "--to", str(tmp_path / "tree")]
        exported = subprocess.run(export, env=environment, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert exported.returncode == 0, exported.stderr
        assert f"wrote {len(FINAL_FILES)} file(s)" in exported.stdout
        tree = tmp_path / "tree"
        assert {str(p.relative_to(tree)): p.read_text() for p in tree.rglob("*") if p.is_file()} == FINAL_FILES
        again = subprocess.run(export, env=environment, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert again.returncode == 2 and "is not empty" in again.stderr
    finally:
        model.release.set()
        if first.poll() is None:
            first.kill()
        await store.close()


@pytest.mark.subprocess
async def test_the_offline_model_runs_the_graph(
    store: GraphStore, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    result = await run_graph(
        load_graph("l2mac"), {"task": "Print hello."}, store=store, embedder=EMBEDDER, llm=offline_llm(),
        settings=settings_of(store, tmp_path, request), checkpointer=None, namespace=namespace,
    )  # fmt: skip
    assert result.state["files"] == ["README.md"]
    project = await load_project(store, namespace, result.thread_id)
    assert "Print hello." in (await project.heads())["README.md"]


@pytest.mark.parametrize(
    ("path", "problem"),
    [("", "empty"), ("/etc/passwd", "absolute"), ("a/../../b", "climbs out"), ("a\\b.py", "forward slashes"),
     ("C:x.py", "drive letter"), (".", "root folder"), (".git/config", "reserved"), ("x" * 201, "longer than")],
)  # fmt: skip
def test_paths_outside_the_root_are_refused(path: str, problem: str) -> None:
    with pytest.raises(PathError, match=problem):
        check_path(path)


def test_paths_are_normalized() -> None:
    assert check_path("./pkg//mod.py") == "pkg/mod.py"


async def test_a_repeated_write_of_one_tool_call_is_one_version(store: GraphStore, namespace: str) -> None:
    project = await load_project(store, namespace, "thread")
    await project.save_plan("task", ["one"])
    key = WriteKey(0, 0, 1, "call-1")
    first, created = await project.commit(key, "a.py", "write", "x = 1\n")
    again, created_again = await (await load_project(store, namespace, "thread")).commit(key, "a.py", "write", "x = 1\n")
    assert created and not created_again and first == again
    assert await store.count_nodes(namespace, "L2FileVersion") == 1
    second, _ = await project.commit(WriteKey(0, 0, 2, "call-2"), "a.py", "delete")
    assert second.n == 2 and project.paths() == [] and (await project.read("a.py", 1)).content == "x = 1\n"
    with pytest.raises(KeyError):
        await project.read("a.py")


def test_trimming_keeps_tool_results_with_their_call() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "read_files", "arguments": "{}"}}
    fresh = [{"role": "system", "content": "s"}, {"role": "user", "content": "t"}, {"role": "user", "content": "i"}]
    rest = [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "word " * 200},
        {"role": "user", "content": "continue"},
    ]
    trimmed = trim_oldest(fresh + rest, keep=3, budget=context_size(fresh) + 20)
    assert trimmed == [*fresh, rest[2]]


def test_a_repeated_block_is_a_loop() -> None:
    a = {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "function": {"name": "list_files", "arguments": "{}"}}]}
    b = {"role": "tool", "content": "(no files yet)"}
    c = {"role": "user", "content": "continue"}
    renamed = {**a, "tool_calls": [{"id": "2", "function": {"name": "list_files", "arguments": "{}"}}]}
    assert repeats([a, b, c, renamed, b, c])
    assert not repeats([a, b, c, renamed, b])
    assert not repeats([a, b])


async def test_bad_calls_change_nothing_stored(store: GraphStore, namespace: str) -> None:
    project = await load_project(store, namespace, "thread")
    await project.save_plan("task", ["one"])
    options: dict[str, Any] = {
        "instruction": 0,
        "attempt": 0,
        "limits": Limits(timeout_s=30),
        "tests": False,
        "read_chars": 14_000,
        "checker": "compile",
        "run_timeout_s": 20,
        "pytest_timeout_s": 60,
    }
    write = ToolCall("c1", "write_files", json.dumps({"files": [{"path": "a.py", "content": "x = 1\n"}]}))
    await dispatch([write], project, turn=1, **options)
    bad = [
        ToolCall(
            "c2",
            "write_files",
            json.dumps({"files": [{"path": "b.py", "content": "y = 2\n"}, {"path": "../c.py", "content": ""}]}),
        ),
        ToolCall("c3", "edit_file", json.dumps({"path": "a.py", "old": "nope", "new": "z"})),
        ToolCall("c4", "delete_files", json.dumps({"paths": ["a.py", "missing.py"]})),
        ToolCall("c5", "write_files", '{"files": [{"path": "a.py", "content": "cut'),
        ToolCall("c6", "read_files", json.dumps({"files": [{"path": "a.py", "version": 7}]})),
    ]
    result = await dispatch(bad, project, turn=2, **options)
    assert result.written == [] and result.check is None and len(result.errors) == 5
    assert all(message["content"].startswith("ERROR:") for message in result.messages)
    assert "nothing was deleted" in result.errors[2] and "cut off" in result.errors[3] and "version" in result.errors[4]
    assert await project.heads() == {"a.py": "x = 1\n"}
    assert await store.count_nodes(namespace, "L2FileVersion") == 1


GIT_SPELLINGS = [
    ".git", ".GIT/config", "a/.git/config", "x/.GiT", "sub/.Git/hooks/pre-commit", ".git./config", "a/.git /config",
    "a/.git. . /config", "a/GIT~1/config", "a/git~1", "a/.git::$INDEX_ALLOCATION/config", "a/.g\u200cit/config",
    "a/\uff0egit/config",
]  # fmt: skip
"""A git folder, as git or a case-insensitive, normalizing filesystem (Windows, macOS) would read the name."""

STEP: dict[str, Any] = {
    "instruction": 0, "attempt": 0, "limits": Limits(timeout_s=30), "tests": False, "read_chars": 14_000, "checker": "compile",
    "run_timeout_s": 20, "pytest_timeout_s": 60,
}  # fmt: skip


def write_call(call_id: str, *paths: str, content: str = "x = 1\n") -> ToolCall:
    return ToolCall(call_id, "write_files", json.dumps({"files": [{"path": path, "content": content} for path in paths]}))


async def planned_project(store: GraphStore, namespace: str) -> Project:
    project = await load_project(store, namespace, "thread")
    await project.save_plan("task", ["one"])
    return project


async def store_unchecked(store: GraphStore, namespace: str, files: dict[str, str]) -> Project:
    """A project holding ``files`` as an older file store, which checked less, may have kept them: version records
    and the manifest naming them, written to the store directly."""
    project = await planned_project(store, namespace)
    versions, manifest = [], {}
    for turn, (path, content) in enumerate(files.items()):
        key = WriteKey(0, 0, turn, f"old-{turn}")
        version_id = file_version_id(namespace, "thread", key, path)
        properties = {
            "thread_id": "thread", "path": path, "n": 1, "action": "write", "content": content, "sha256": "",
            "lines": len(content.splitlines()), "instruction": 0, "attempt": 0, "turn": turn, "tool_call_id": key.tool_call_id,
            "prev": None,
        }  # fmt: skip
        versions.append(NodeRecord(id=version_id, namespace=namespace, kind=VERSION, properties=properties, text=path))
        manifest[path] = {"versions": [version_id], "deleted": False}
    [record] = await store.get_nodes(namespace, [project.id])
    assert record is not None
    await store.upsert_nodes([*versions, record.model_copy(update={"properties": {**record.properties, "files": manifest}})])
    return await load_project(store, namespace, "thread")


@pytest.mark.parametrize("path", GIT_SPELLINGS)
def test_a_git_folder_is_reserved_at_any_depth_in_any_spelling(path: str) -> None:
    with pytest.raises(PathError, match="reserved") as refused:
        check_path(path)
    assert repr(path) in str(refused.value)


@pytest.mark.parametrize("path", [".github/workflows/ci.yml", ".gitignore", "a/.gitkeep", "git/x.py", "a/git~2/x.py"])
def test_names_that_only_look_like_git_are_files_like_any_other(path: str) -> None:
    assert check_path(path) == path


@pytest.mark.parametrize("path", [".mnemoflow_sandbox/x.py", ".MNEMOFLOW_SANDBOX/x.py", ".mnemoflow_sandbox./x.py"])
def test_the_sandbox_folder_is_reserved(path: str) -> None:
    with pytest.raises(PathError, match="reserved"):
        check_path(path)


async def test_a_write_into_a_git_folder_is_a_tool_error(store: GraphStore, namespace: str) -> None:
    project = await planned_project(store, namespace)
    hook = "[core]\n\tfsmonitor = touch pwned\n"
    calls = [write_call(f"c{n}", "ok.py", path, content=hook) for n, path in enumerate(GIT_SPELLINGS)]
    result = await dispatch(calls, project, turn=1, **STEP)
    assert result.written == [] and len(result.errors) == len(GIT_SPELLINGS)
    assert all("refused path" in error and "reserved" in error for error in result.errors)
    assert await store.count_nodes(namespace, "L2FileVersion") == 0 and project.paths() == []


@pytest.mark.subprocess
async def test_export_skips_a_git_folder_stored_before_it_was_reserved(
    store: GraphStore, backend: str, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    hook = "[core]\n\tfsmonitor = touch pwned\n"
    old = {"README.md": "hi\n", "sub/.git/config": hook, "x/.GiT": "gitdir: /tmp\n", "y/GIT~1/config": hook}
    await store_unchecked(store, namespace, old)
    exported = await export_files(store, namespace, "thread", tmp_path / "out")
    assert exported.written == ["README.md"] and sorted(exported.skipped) == sorted(set(old) - {"README.md"})
    assert all("reserved" in why for why in exported.skipped.values())
    assert [str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*")] == ["README.md"]

    uri = request.getfixturevalue("empty_neo4j") if backend == "neo4j" else None
    environment = cli_environment(backend, tmp_path, namespace=namespace, neo4j_uri=uri)
    command = [MNEMOFLOW, "l2mac", "export", "thread", "--to", str(tmp_path / "cli")]
    done = subprocess.run(command, env=environment, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "wrote 1 file(s)" in done.stdout and "sub/.git/config" not in done.stdout
    assert all(path in done.stderr for path in ("sub/.git/config", "x/.GiT", "y/GIT~1/config")), done.stderr
    assert [p.name for p in (tmp_path / "cli").rglob("*")] == ["README.md"]


@pytest.mark.parametrize(
    ("calls", "problem"),
    [((("a",), ("a/b.py",)), "a/b.py: 'a' is a file"), ((("a/b.py",), ("a",)), "'a' is a folder holding a/b.py"),
     ((("a", "a/b.py"),), "a/b.py: 'a' is a file"), ((("p/q/r.py",), ("p/q",)), "'p/q' is a folder holding p/q/r.py"),
     ((("p/q",), ("p/q/r/s.py",)), "p/q/r/s.py: 'p/q' is a file")],
)  # fmt: skip
async def test_a_file_and_a_folder_of_one_name_are_a_tool_error(
    store: GraphStore, namespace: str, calls: tuple[tuple[str, ...], ...], problem: str
) -> None:
    project = await planned_project(store, namespace)
    *first, last = calls
    for turn, paths in enumerate(first, start=1):
        assert not (await dispatch([write_call("c", *paths)], project, turn=turn, **STEP)).errors
    before = await project.heads()
    result = await dispatch([write_call("c", *last)], project, turn=len(calls), **STEP)
    assert result.written == [] and len(result.errors) == 1 and problem in result.errors[0], result.errors
    assert await project.heads() == before
    assert await store.count_nodes(namespace, "L2FileVersion") == len(before)
    assert await (await load_project(store, namespace, "thread")).heads() == before


async def test_a_deleted_file_frees_its_name_for_a_folder(store: GraphStore, namespace: str) -> None:
    project = await planned_project(store, namespace)
    delete = ToolCall("d", "delete_files", json.dumps({"paths": ["a"]}))
    result = await dispatch([write_call("c1", "a"), delete, write_call("c2", "a/b.py")], project, turn=1, **STEP)
    assert result.errors == [] and result.written == ["a", "a", "a/b.py"]
    assert result.check is not None and result.check.passed
    assert await project.heads() == {"a/b.py": "x = 1\n"}


def test_a_name_may_have_255_bytes_not_more() -> None:
    longest = "é" * 127 + "x"  # 255 bytes in UTF-8, 128 characters
    assert check_path(f"pkg/{longest}") == f"pkg/{longest}"
    for path in ("é" * 128, f"pkg/{'é' * 128}/x.py", "x" * 50 + "/" + "€" * 86):
        with pytest.raises(PathError, match="more than 255 bytes"):
            check_path(path)


async def test_a_write_of_a_name_too_long_for_the_filesystem_is_a_tool_error(store: GraphStore, namespace: str) -> None:
    project = await planned_project(store, namespace)
    result = await dispatch([write_call("c1", "ok.py", "é" * 128)], project, turn=1, **STEP)
    assert result.written == [] and len(result.errors) == 1 and "255 bytes" in result.errors[0]
    assert await store.count_nodes(namespace, "L2FileVersion") == 0


async def test_text_that_is_not_unicode_is_a_tool_error(store: GraphStore, namespace: str) -> None:
    project = await planned_project(store, namespace)
    calls = [
        ToolCall("c1", "write_files", '{"files": [{"path": "bad\\ud800.py", "content": "x = 1"}]}'),
        ToolCall("c2", "write_files", '{"files": [{"path": "ok.py", "content": "x = \\udc00"}]}'),
    ]
    result = await dispatch(calls, project, turn=1, **STEP)
    assert result.written == [] and len(result.errors) == 2, result.errors
    assert "bad\\ud800.py" in result.errors[0] and "ok.py" in result.errors[1]
    assert await store.count_nodes(namespace, "L2FileVersion") == 0


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("files", "named"),
    [({"a": "x\n", "a/b.py": "y = 1\n"}, "a/b.py: 'a' is a file"), ({"a/b.py": "y = 1\n", "a": "x\n"}, "a/b.py"),
     ({"é" * 128: "x\n"}, "é" * 128)],
)  # fmt: skip
async def test_checks_over_files_that_cannot_be_copied_fail_naming_the_file(files: dict[str, str], named: str) -> None:
    result = await run_checks(files, Limits(timeout_s=30), tests=False, checker="compile")
    assert not result.passed and named in result.report()


async def test_a_file_stored_before_the_checks_can_still_be_deleted(store: GraphStore, namespace: str) -> None:
    old = {"sub/.git/config": "[core]\n", "é" * 128: "x\n", "a": "x\n", "a/b.py": "y = 1\n"}
    project = await store_unchecked(store, namespace, old)
    failing = await dispatch([ToolCall("r", "run_checks", "{}")], project, turn=1, **STEP)
    assert failing.check is not None and not failing.check.passed and failing.errors == []
    delete = ToolCall("d", "delete_files", json.dumps({"paths": ["sub/.git/config", "é" * 128, "a"]}))
    result = await dispatch([delete], project, turn=2, **STEP)
    assert result.errors == [] and result.check is not None and result.check.passed
    assert project.paths() == ["a/b.py"]


async def test_export_of_a_file_and_a_folder_of_one_name_writes_nothing(
    store: GraphStore, namespace: str, tmp_path: Path
) -> None:
    await store_unchecked(store, namespace, {"README.md": "hi\n", "a": "x\n", "a/b.py": "y = 1\n"})
    with pytest.raises(ConfigError, match=r"'a' is a folder holding a/b\.py; nothing was written"):
        await export_files(store, namespace, "thread", tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
