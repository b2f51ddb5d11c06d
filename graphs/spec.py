"""The graph file format, as pydantic models; ``GraphSpec.model_json_schema()`` is its JSON Schema.

A graph names registered nodes and wires them::

    name: text-stats
    state: text.TextState          # a registered state model
    input: [text]                  # fields the caller provides
    output: [total_words]          # fields that are the run's result
    max_steps: 40                  # bound on steps; required when the graph has a cycle
    retry: {max_attempts: 2}       # a failed run is tried again from its last checkpoint (under Prefect)
    nodes:
      split: {use: text.split_sentences, with: {min_length: 2}, retry: {max_attempts: 2}, timeout: 10}
      count: {use: text.count_words}
    edges:
      - {from: START, to: split}
    fanouts:
      - {from: split, over: sentences, item: sentence, to: count}
    routes:
      - {from: total, router: text.until_rounds, outcomes: {again: note, done: END}}
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["END", "START", "EdgeSpec", "FanOutSpec", "GraphSpec", "NodeSpec", "RetrySpec", "RouteSpec", "RunRetrySpec"]

START = "START"
END = "END"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class RetrySpec(_Strict):
    """How often the engine retries a failing node (LangGraph's retry policy)."""

    max_attempts: int = Field(3, ge=1, le=20, description="Attempts in all, the first included.")
    initial_interval: float = Field(0.5, ge=0, le=600, description="Seconds before the first retry.")
    backoff_factor: float = Field(2.0, ge=1, le=10, description="Multiplier of the interval after each retry.")
    max_interval: float = Field(60.0, ge=0, le=3600, description="Longest wait between retries, in seconds.")
    jitter: bool = Field(True, description="Randomize the waits.")


class RunRetrySpec(_Strict):
    """How often a whole run is tried when it fails: each retry resumes from its last checkpoint.

    The Prefect flows apply it as the flow's retries; ``mnemoflow run`` does not retry a run.
    """

    max_attempts: int = Field(1, ge=1, le=20, description="Attempts in all, the first included.")
    delay: float = Field(10.0, ge=0, le=3600, description="Seconds between attempts.")


class NodeSpec(_Strict):
    """A step of the graph: a registered node (``use``) or another graph file (``graph``)."""

    use: str | None = Field(None, description="Dotted name of a registered node.")
    graph: str | None = Field(None, description="A graph file run as one step: a path relative to this file, or a library name.")
    with_: dict[str, Any] = Field(default_factory=dict, alias="with", description="Config of the node.")
    retry: RetrySpec | None = Field(None, description="Retry policy; none by default.")
    timeout: float | None = Field(None, gt=0, le=86_400, description="Seconds a single attempt may take.")
    description: str = ""

    @model_validator(mode="after")
    def _one_kind(self) -> NodeSpec:
        if (self.use is None) == (self.graph is None):
            raise ValueError("a node needs exactly one of 'use' (a registered node) or 'graph' (a graph file)")
        if self.graph is not None and self.with_:
            raise ValueError("'with' configures a registered node; a subgraph node takes none")
        return self


class EdgeSpec(_Strict):
    """Always go from one node to another (``START`` and ``END`` included)."""

    from_: str = Field(alias="from")
    to: str


class RouteSpec(_Strict):
    """Go where a router says: each outcome it can return maps to a target."""

    from_: str = Field(alias="from")
    router: str = Field(description="Dotted name of a registered router.")
    with_: dict[str, Any] = Field(default_factory=dict, alias="with", description="Config of the router.")
    outcomes: dict[str, str] = Field(description="Outcome -> target node or END.")


class FanOutSpec(_Strict):
    """Run ``to`` once per item of the list field ``over``, in parallel; ``item`` holds each item.

    Results merge through the reducer of the fields ``to`` writes, in the order of the items.
    """

    from_: str = Field(alias="from")
    over: str = Field(description="A list field of the state.")
    item: str = Field(description="The state field each run of the node sees its item in.")
    to: str


class GraphSpec(_Strict):
    """A graph file."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$", description="Name of the graph; library files are found by it.")
    version: int = Field(1, ge=1)
    description: str = ""
    state: str = Field(description="Dotted name of a registered state model.")
    input: list[str] = Field(default_factory=list, description="State fields the caller provides.")
    output: list[str] = Field(
        default_factory=list,
        description="State fields that are a run's result: what `mnemoflow run` prints and a Prefect run returns; "
        "none: every field (vectors left out).",
    )
    requires: list[str] = Field(
        default_factory=list,
        description="Registered preconditions checked before a new run's first step (comorag.book_indexed: the "
        "book is indexed in the run's namespace).",
    )
    max_steps: int | None = Field(None, ge=1, le=100_000, description="Most steps a run may take; required with cycles.")
    retry: RunRetrySpec = Field(default_factory=RunRetrySpec, description="Retries of the whole run (Prefect flow retries).")
    nodes: dict[str, NodeSpec] = Field(min_length=1)
    edges: list[EdgeSpec] = Field(default_factory=list)
    routes: list[RouteSpec] = Field(default_factory=list)
    fanouts: list[FanOutSpec] = Field(default_factory=list)
