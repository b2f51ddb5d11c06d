"""Graph nodes as Prefect tasks: the UI shows each step with its state, duration and retries.

Under Prefect the task owns a node's retries and timeout, read from the node's ``retry`` and ``timeout`` in
the graph file; the compiler then gives LangGraph neither (see :data:`mnemoflow.graphs.compiler.NodeWrapper`). The task
takes no part in resuming: LangGraph's checkpoints do that, so tasks neither cache nor persist results.

A task run costs Prefect's engine a few milliseconds in the worker and the server more than that, as it records the
three state events of every task run (``bench/prefect.py`` measures both). Graphs of many small nodes can run in
``graph`` mode instead (``MNEMOFLOW_PREFECT_TASKS=graph``, see :func:`node_wrapper`): their nodes then run in the
graph's flow run with the engine's own retries and timeouts, and Prefect's UI shows no task run per node.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import Task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from prefect.utilities.annotations import quote

from mnemoflow.graphs.compiler import NodeAttempt, NodeWrapper, retryable
from mnemoflow.graphs.spec import NodeSpec, RetrySpec
from mnemoflow.nodes.context import RunContext

__all__ = ["node_task", "node_wrapper", "retry_delays", "run_node_as_task"]


def retry_delays(retry: RetrySpec) -> list[float]:
    """The wait before each retry: exponential from ``initial_interval``, capped at ``max_interval``."""
    return [min(retry.initial_interval * retry.backoff_factor**number, retry.max_interval) for number in range(retry.max_attempts - 1)]


def _should_retry(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry a node's own failures, not bad input or errors their owner already retried (as the engine does)."""
    return not isinstance(state.data, BaseException) or retryable(state.data)


async def _attempt(attempt: NodeAttempt, state: Any, context: RunContext) -> dict[str, Any]:
    return await attempt(state, context)


def node_task(step: str, node: NodeSpec) -> Task[..., Any]:
    """The Prefect task that runs the attempts of ``node`` (named by its step, ``stats/count`` in a subgraph)."""
    options: dict[str, Any] = {}
    if node.retry is not None:
        options = {
            "retries": node.retry.max_attempts - 1,
            "retry_delay_seconds": retry_delays(node.retry),
            "retry_jitter_factor": 0.5 if node.retry.jitter else None,
            "retry_condition_fn": _should_retry,
        }
    return Task(
        _attempt,
        name=step,
        task_run_name=step,
        timeout_seconds=node.timeout,
        cache_policy=NO_CACHE,
        persist_result=False,
        log_prints=False,
        **options,
    )


def run_node_as_task(step: str, node: NodeSpec, attempt: NodeAttempt) -> NodeAttempt:
    """A :data:`~mnemoflow.graphs.compiler.NodeWrapper`: each call of the node is a task run of its flow run."""
    task = node_task(step, node)

    async def run(state: Any, context: RunContext) -> dict[str, Any]:
        # quote(): Prefect would otherwise walk the state and the context looking for futures
        result: dict[str, Any] = await task(quote(attempt), quote(state), quote(context))
        return result

    return run


def node_wrapper(mode: Literal["node", "graph"]) -> NodeWrapper | None:
    """How a flow runs a graph's nodes (``MNEMOFLOW_PREFECT_TASKS``): ``node``, each as a task of the flow run
    (:func:`run_node_as_task`); ``graph``, in the flow run itself, through the engine (no wrapper), which then owns
    each node's retries and timeout as it does outside Prefect. Either way the graph's flow run retries and resumes
    the run from its last checkpoint, and the run's record and report keep every node's attempts."""
    return run_node_as_task if mode == "node" else None
