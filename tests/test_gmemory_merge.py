"""G-Memory's merge clustering: FINCH (the default, as the paper) and agglomerative, on hand-built tasks, on both
stores; FINCH's fallback when too few tasks support insights."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from mnemoflow.graphs import load_graph, run_graph
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.memory.records import NodeRecord
from mnemoflow.nodes.gmemory.insights import insight_links
from mnemoflow.nodes.gmemory.merge import clusters
from mnemoflow.nodes.gmemory.model import QUERY, SUPPORTED_BY, query_id
from tests.conftest import EMBEDDER, settings_of
from tests.support.openai_server import Rule, ScriptedOpenAIServer
from tests.test_gmemory_evolve import Tasks

MERGE = "You consolidate rules"
DIMENSION = EMBEDDER.dimension


def vector(axis: int, twist: int, weight: float = 0.1) -> list[float]:
    """A unit-ish vector along ``axis``, leaning a little towards ``twist``: close to its group, far from others."""
    values = [0.0] * DIMENSION
    values[axis], values[twist] = 1.0, weight
    return values


def partition(labels: Sequence[int]) -> list[list[int]]:
    """The groups of indices the labels form, whatever the label numbers."""
    groups: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        groups.setdefault(label, []).append(index)
    return sorted(groups.values())


def leaning(axis: int, *parts: tuple[int, float]) -> list[float]:
    values = [0.0] * DIMENSION
    values[axis] = 1.0
    for other, weight in parts:
        values[other] += weight
    return values


# three groups of tasks along three axes; within the third, two pairs lean apart
POINTS = [vector(0, 10), vector(0, 11), vector(0, 12), vector(1, 13), vector(1, 14), vector(1, 15)]
POINTS += [vector(2, 16, 0.05), vector(2, 16, 0.1), vector(2, 17, 0.05), vector(2, 17, 0.1)]
# two groups of four, each point leaning its own way and each pair sharing a slight lean
SPREAD = [leaning(g, (10 + 10 * g + k, 0.3), (50 + 10 * g + k // 2, 0.2)) for g in range(2) for k in range(4)]


def test_finch_keeps_the_partition_with_the_best_silhouette() -> None:
    # FINCH's partitions here: the three groups with the third split in its two pairs (silhouette 0.907), then
    # two clusters (0.636): the first wins, where agglomerative clustering cut at 0.5 keeps the third group whole
    labels, how = clusters(POINTS, "finch")
    assert how == "finch" and partition(labels) == [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]]
    labels, how = clusters(POINTS, "agglomerative", 0.5)
    assert how == "agglomerative" and partition(labels) == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]
    # here the first partition pairs the points (0.308) and the second finds the two groups (0.897): the second wins
    labels, _ = clusters(SPREAD, "finch")
    assert partition(labels) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert clusters(POINTS, "finch") == clusters(POINTS, "finch")  # deterministic


def test_finch_falls_back_to_one_cluster_below_three_tasks_or_on_failure() -> None:
    assert clusters(POINTS[:2], "finch") == ([0, 0], "one cluster: FINCH needs 3 tasks, 2 support insights")
    assert clusters([], "finch") == ([], "one cluster: FINCH needs 3 tasks, 0 support insights")
    assert clusters([POINTS[0], POINTS[3]], "agglomerative", 0.5) == ([1, 0], "agglomerative")  # two tasks, two clusters
    labels, how = clusters([[float("nan")] * DIMENSION, *POINTS[:3]], "finch")  # FINCH refuses it: all in one cluster
    assert labels == [0, 0, 0, 0] and how == "one cluster: FINCH failed (ValueError: Input contains NaN.)"


GRAPH = """
name: gmemory-merge-test
version: 1
description: G-Memory's merge alone.
state: gmemory.TaskState
input: [task]
nodes:
  merge: {use: gmemory.merge, with: {every: %d, method: %s}}
edges:
  - {from: START, to: merge}
  - {from: merge, to: END}
"""


@pytest.fixture
def server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer() as running:
        running.script(Rule(system=MERGE, json={"insights": []}))
        yield running


@pytest.mark.parametrize(("method", "tasks", "expected"), [
    ("finch", 6, {"Rules:\n1. Rule a0, because.\n2. Rule a1, because.", "Rules:\n1. Rule b0, because.\n2. Rule b1, because."}),
    ("agglomerative", 6, {"Rules:\n1. Rule a0, because.\n2. Rule a1, because.", "Rules:\n1. Rule b0, because.\n2. Rule b1, because."}),
    ("finch", 2, {"Rules:\n1. Rule a0, because.\n2. Rule a1, because.\n3. Rule b0, because.\n4. Rule b1, because."}),
])  # fmt: skip
async def test_each_cluster_of_supporting_tasks_consolidates_its_own_insights(
    store: GraphStore,
    server: ScriptedOpenAIServer,
    namespace: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    method: str,
    tasks: int,
    expected: set[str],
) -> None:
    groups = {"a": POINTS[:3][: max(tasks // 2, 1)], "b": POINTS[3:6][: max(tasks // 2, 1)]}
    queries = [
        NodeRecord(
            id=query_id(namespace, f"{group}{n}"), namespace=namespace, kind=QUERY, text=f"task {group}{n}", embedding=v,
            properties={"task": f"task {group}{n}", "status": "resolved", "order": order},
        )
        for order, (group, n, v) in enumerate(((g, n, v) for g, vs in groups.items() for n, v in enumerate(vs)), 1)
    ]  # fmt: skip
    await store.upsert_nodes(queries)
    ids = await Tasks.seed_into(store, namespace, *((f"Rule {g}{n}, because.", 2) for g in "ab" for n in range(2)))
    supporters = {g: [q.id for q in queries if q.text and q.text.startswith(f"task {g}")] for g in "ab"}
    await store.upsert_relationships(
        [link for i, iid in enumerate(ids) for link in insight_links(namespace, SUPPORTED_BY, iid, supporters["ab"[i // 2]])]
    )
    path = tmp_path / "merge.yaml"
    path.write_text(GRAPH % (len(queries), method))
    result = await run_graph(
        load_graph(path), {"task": "x"}, store=store, embedder=EMBEDDER, llm=server.gateway(),
        settings=settings_of(store, tmp_path, request), checkpointer=None, namespace=namespace,
    )  # fmt: skip
    report = result.state["evolution"]["merge"][f"merge-{len(queries)}"]
    assert report["clusters"] == len(expected)
    assert report["clustering"] == (method if tasks >= 3 else "one cluster: FINCH needs 3 tasks, 2 support insights")
    prompts = [r["body"]["messages"][1]["content"] for r in server.requests if MERGE in r["body"]["messages"][0]["content"]]
    assert set(prompts) == expected and len(prompts) == len(expected)
