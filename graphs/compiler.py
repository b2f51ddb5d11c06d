"""Compile a checked graph to LangGraph: a ``StateGraph`` of wrapped nodes, then a compiled graph.

Each node receives its state, its validated config and the :class:`~mnemoflow.nodes.context.RunContext` that
LangGraph passes as the runtime context. Retry and timeout of a node become LangGraph's ``RetryPolicy``
and node timeout; under this engine they are the only retries of a node (transport retries stay in the
LLM gateway and the database driver).

Each attempt leaves a trace event (see :class:`~mnemoflow.nodes.context.TraceEvent`): when it ended or failed, its
model usage and calls (prompts, replies, figures) and, when it ended, the state fields it wrote, before and after,
previewed (:mod:`mnemoflow.graphs.preview`) within the run's budgets of detail.

A :data:`NodeWrapper` hands every attempt of a node to another executor, which then owns the node's retries
and timeout: the Prefect flows run each node as a task that way (see ``flows/tasks.py``).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import replace
from typing import Any, get_type_hints

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END as LANGGRAPH_END
from langgraph.graph import START as LANGGRAPH_START
from langgraph.graph import StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import RetryPolicy, Send
from pydantic import BaseModel

from mnemoflow.errors import MnemoflowError, NodeError
from mnemoflow.graphs.loader import LoadedGraph
from mnemoflow.graphs.preview import json_chars, preview_bounded
from mnemoflow.graphs.spec import END, START, NodeSpec, RetrySpec
from mnemoflow.llm import LLM
from mnemoflow.logging import pop_log_context, push_log_context
from mnemoflow.nodes.context import RunContext, Trace
from mnemoflow.nodes.registry import REGISTRY, NodeDefinition, Registry, RouterDefinition
from mnemoflow.redaction import redact_urls

__all__ = ["NodeAttempt", "NodeWrapper", "build_state_graph", "compile_graph", "retryable"]

NodeAttempt = Callable[[Any, RunContext], Awaitable[dict[str, Any]]]
"""One attempt of a node: its state and run context in, its state update out (traced and checked)."""

NodeWrapper = Callable[[str, NodeSpec, NodeAttempt], NodeAttempt]
"""Given a step name, its node spec and its attempt, the callable the graph runs instead; it owns the node's
retries and timeout (the compiler then sets neither)."""

STEP_WRITES_CHARS = 8000
"""Characters of JSON one step's writes may take on its trace event (the run's budget may leave less)."""


def _endpoint(name: str) -> str:
    return {START: LANGGRAPH_START, END: LANGGRAPH_END}.get(name, name)


def retryable(exc: BaseException) -> bool:
    """Node retries are for a node's own failures. mnemoflow errors were already retried by their owner
    (the LLM gateway, the database driver) or describe bad input, and a ValueError, TypeError or LookupError
    is a bug or bad data that the same attempt would meet again."""
    return not isinstance(exc, MnemoflowError | ValueError | TypeError | LookupError)


def _retry_policy(retry: RetrySpec | None) -> RetryPolicy | None:
    if retry is None:
        return None
    return RetryPolicy(
        initial_interval=retry.initial_interval,
        backoff_factor=retry.backoff_factor,
        max_interval=retry.max_interval,
        max_attempts=retry.max_attempts,
        jitter=retry.jitter,
        retry_on=retryable,
    )


def _count_usage(context: RunContext, node_llm: LLM) -> dict[str, Any] | None:
    """Add a node's model usage to its run's; the node's usage for its trace event, if it called the model."""
    if not node_llm.usage.calls:
        return None
    context.llm.usage.add(node_llm.usage)
    return node_llm.usage.as_dict()


def _traced_calls(trace: Trace, node_llm: LLM) -> tuple[list[dict[str, Any]] | None, int]:
    """The node's call records the run's trace has room for, and how many calls it leaves out."""
    kept: list[dict[str, Any]] = []
    omitted = node_llm.calls_omitted
    for call in node_llm.calls:
        record = call.as_dict()
        if trace.room_for_call(json_chars(record)):
            kept.append(record)
        else:
            omitted += 1
    return kept or None, omitted


def _reducer_fields(state_model: type[BaseModel]) -> frozenset[str]:
    """Fields of ``state_model`` that merge what a step writes (``Annotated[list[int], operator.add]``) instead of
    replacing their value; LangGraph takes the last metadata of a field that is a two-argument callable for its
    reducer, and so does this."""
    hints = get_type_hints(state_model, include_extras=True)
    merged = set()
    for name in state_model.model_fields:
        metadata = getattr(hints.get(name), "__metadata__", ())
        if metadata and callable(metadata[-1]) and _takes_two(metadata[-1]):
            merged.add(name)
    return frozenset(merged)


_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _takes_two(function: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature
        return False
    positional = [parameter for parameter in parameters if parameter.kind in _POSITIONAL]
    return len(positional) == 2


def _state_writes(state: BaseModel, update: Mapping[str, Any], merged: frozenset[str], max_chars: int) -> dict[str, Any]:
    """What a step wrote: per field its value before the step and the value written, previewed within ``max_chars``."""
    table: dict[str, Any] = {}
    for name, after in update.items():
        before = getattr(state, name, None)
        entry: dict[str, Any] = {"before": before, "after": after}
        if name in merged:
            entry["merged"] = True  # ``after`` is what was merged into ``before``, not the field's new value
        elif _equal(before, after):
            entry["unchanged"] = True
        table[name] = entry
    shown: dict[str, Any] = preview_bounded(table, max_chars, frame=2)  # the fields and their before/after frame the data
    return shown


def _equal(left: Any, right: Any) -> bool:
    try:
        return bool(left == right)
    except Exception:  # a value whose comparison is not a truth value (an array, say)
        return False


def _node_attempt(step: str, definition: NodeDefinition, config: BaseModel, state_model: type[BaseModel]) -> NodeAttempt:
    function, allowed = definition.function, definition.writes
    merged = _reducer_fields(state_model)

    async def attempt(state: Any, context: RunContext) -> dict[str, Any]:
        if isinstance(state, dict):  # a fanned-out branch may hand over a plain mapping
            state = state_model.model_validate(state)
        log, started_at, started = context.log, time.time(), time.perf_counter()
        node_llm = context.llm.fork()  # usage counted per node, exact even for parallel branches
        log_context = push_log_context(node=step)  # every line logged inside the node names it
        try:
            log.debug("node.start")
            update = await function(state, config, replace(context, llm=node_llm))
            if not allowed.issuperset(update):
                undeclared = sorted(set(update) - allowed)
                raise NodeError(f"node {step!r} ({definition.name}) wrote {undeclared}, which it does not declare in writes")
        except Exception as exc:
            elapsed = time.perf_counter() - started
            # the run record keeps the error; a foreign exception's text may quote a URL with its credentials
            error = redact_urls(f"{type(exc).__name__}: {exc}")
            calls, omitted = _traced_calls(context.trace, node_llm)  # the calls that led to the error
            context.trace.record(
                step, "error", started_at, elapsed, error, _count_usage(context, node_llm), calls=calls, calls_omitted=omitted
            )
            log.warning("node.error", seconds=round(elapsed, 6), error=str(exc))
            raise
        finally:
            pop_log_context(log_context)
        elapsed = time.perf_counter() - started
        trace = context.trace
        writes = _state_writes(state, update, merged, min(STEP_WRITES_CHARS, trace.writes_room))
        trace.writes_chars += json_chars(writes)
        calls, omitted = _traced_calls(trace, node_llm)
        usage = _count_usage(context, node_llm)
        trace.record(step, "end", started_at, elapsed, None, usage, writes=writes, calls=calls, calls_omitted=omitted)
        log.debug("node.end", node=step, seconds=round(elapsed, 6), llm_calls=node_llm.usage.calls)
        return update

    return attempt


def _as_langgraph_node(step: str, attempt: NodeAttempt) -> Callable[..., Any]:
    async def run(state: Any, runtime: Runtime[RunContext]) -> dict[str, Any]:
        return await attempt(state, runtime.context)

    run.__name__ = step
    return run


def _wrap_router(source: str, definition: RouterDefinition, config: BaseModel) -> Callable[[Any], str]:
    function, outcomes = definition.function, definition.outcomes

    def route(state: Any) -> str:
        outcome = function(state, config)
        if outcome not in outcomes:
            raise NodeError(f"router {definition.name} after {source!r} returned {outcome!r}, not one of {sorted(outcomes)}")
        return outcome

    return route


def _fan_out(over: str, item: str, target: str) -> Callable[[Any], list[Send]]:
    def send(state: Any) -> list[Send]:
        return [Send(target, state.model_copy(update={item: value})) for value in getattr(state, over)]

    return send


def build_state_graph(
    graph: LoadedGraph,
    registry: Registry = REGISTRY,
    *,
    step_prefix: str = "",
    wrap_node: NodeWrapper | None = None,
    state_model: type[BaseModel] | None = None,
) -> StateGraph[Any, RunContext, Any, Any]:
    """The ``StateGraph`` of a checked graph (``load_graph`` has run every check).

    Steps are named in traces by node name, prefixed by the subgraph node they run in (``stats/count``).
    With ``wrap_node``, every registered node runs through it and it owns their retries and timeouts; a
    subgraph node's own ``retry`` and ``timeout`` stay with LangGraph, around its wrapped inner nodes.
    A subgraph runs on its parent's state (``state_model``), which extends the state it declares, so a
    graph written for a smaller state (a team) plugs into a larger one (the team with a memory around it).
    """
    spec = graph.spec
    state_model = state_model or registry.states[spec.state]
    builder: StateGraph[Any, RunContext, Any, Any] = StateGraph(state_model, context_schema=RunContext)
    for name, node in spec.nodes.items():
        options: dict[str, Any] = {}
        if wrap_node is None or node.use is None:
            options["retry_policy"] = _retry_policy(node.retry)
            if node.timeout is not None:
                options["timeout"] = node.timeout
        step = step_prefix + name
        if node.use is not None:
            definition = registry.nodes[node.use]
            attempt = _node_attempt(step, definition, definition.config.model_validate(node.with_), state_model)
            builder.add_node(name, _as_langgraph_node(step, attempt if wrap_node is None else wrap_node(step, node, attempt)), **options)
        else:
            subgraph = build_state_graph(graph.subgraphs[name], registry, step_prefix=f"{step}/", wrap_node=wrap_node, state_model=state_model)
            builder.add_node(name, subgraph.compile(name=graph.subgraphs[name].spec.name), **options)
    for edge in spec.edges:
        builder.add_edge(_endpoint(edge.from_), _endpoint(edge.to))
    for route in spec.routes:
        router = registry.routers[route.router]
        router_config = router.config.model_validate(route.with_)
        targets: dict[Hashable, str] = {outcome: _endpoint(target) for outcome, target in route.outcomes.items()}
        builder.add_conditional_edges(route.from_, _wrap_router(route.from_, router, router_config), targets)
    for fanout in spec.fanouts:
        builder.add_conditional_edges(fanout.from_, _fan_out(fanout.over, fanout.item, fanout.to), [fanout.to])
    return builder


def compile_graph(
    graph: LoadedGraph,
    *,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
    registry: Registry = REGISTRY,
    wrap_node: NodeWrapper | None = None,
) -> CompiledStateGraph[Any, RunContext, Any, Any]:
    """Compile a checked graph, with a checkpointer when runs must survive a crash."""
    return build_state_graph(graph, registry, wrap_node=wrap_node).compile(checkpointer=checkpointer, name=graph.spec.name)
