"""Graph nodes as Prefect tasks: the UI shows each step with its state, duration and retries.

Under Prefect the task owns a node's retries and timeout, read from the node's ``retry`` and ``timeout`` in
the graph file; the compiler then gives LangGraph neither (see :data:`mnemoflow.graphs.compiler.NodeWrapper`). The task
takes no part in resuming: LangGraph's checkpoints do that, so tasks neither cache nor persist results.
"""

from __future__ import annotations

from typing import Any

from prefect import Task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from prefect.utilities.annotations import quote

from mnemoflow.graphs.compiler import NodeAttempt, retryable
from mnemoflow.graphs.spec import NodeSpec, RetrySpec
from mnemoflow.nodes.context import RunContext

__all__ = ["node_task", "retry_delays", "run_node_as_task"]


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
