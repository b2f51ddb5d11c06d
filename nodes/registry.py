"""Registration of nodes, routers and state models, so a graph file can name them and be checked.

A node is an async function ``(state, config, context) -> dict`` that returns the fields it changes::

    @node("text.split_sentences", state=TextState, reads={"text"}, writes={"sentences"})
    async def split_sentences(state: TextState, config: NoConfig, context: RunContext) -> dict[str, Any]:
        "Split the text into sentences."
        ...

A router is a plain function ``(state, config) -> outcome`` with the outcomes it can return declared.

A precondition is an async function ``(values, store, namespace) -> None`` that a graph names in ``requires:``;
it reads memory before the first step of a new run (and before a Prefect run starts its retried subflow) and raises :class:`~mnemoflow.errors.PreconditionError` when what the run
needs is not there (a book not indexed in the run's namespace), naming what is missing and what exists.
"""

from __future__ import annotations

import importlib
import inspect
import re
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict

from mnemoflow.errors import RegistrationError
from mnemoflow.memory.protocol import GraphStore
from mnemoflow.nodes.context import RunContext

__all__ = [
    "REGISTRY",
    "NoConfig",
    "NodeDefinition",
    "PreconditionDefinition",
    "PreconditionFunction",
    "NodeFunction",
    "Registry",
    "RouterDefinition",
    "RouterFunction",
    "import_node_modules",
    "node",
    "precondition",
    "router",
    "state_model",
]

StateT = TypeVar("StateT", bound=BaseModel)
ConfigT = TypeVar("ConfigT", bound=BaseModel)
NodeFunction = Callable[[Any, Any, RunContext], Awaitable[dict[str, Any]]]
RouterFunction = Callable[[Any, Any], str]
PreconditionFunction = Callable[[Mapping[str, Any], GraphStore, str], Awaitable[None]]
_DOTTED = re.compile(r"[a-z][a-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")


class NoConfig(BaseModel):
    """Config of a node or router that takes no parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class NodeDefinition:
    """A registered node."""

    name: str
    function: NodeFunction
    state: type[BaseModel]
    reads: frozenset[str]
    writes: frozenset[str]
    config: type[BaseModel]
    doc: str


@dataclass(frozen=True)
class RouterDefinition:
    """A registered router: picks the next node by returning one of its declared outcomes."""

    name: str
    function: RouterFunction
    state: type[BaseModel]
    reads: frozenset[str]
    outcomes: frozenset[str]
    config: type[BaseModel]
    doc: str


@dataclass(frozen=True)
class PreconditionDefinition:
    """A registered precondition: what must exist before a run of a graph that requires it starts."""

    name: str
    function: PreconditionFunction
    state: type[BaseModel]
    reads: frozenset[str]
    doc: str


class Registry:
    """Nodes, routers, preconditions and state models by name."""

    def __init__(self) -> None:
        self.nodes: dict[str, NodeDefinition] = {}
        self.routers: dict[str, RouterDefinition] = {}
        self.preconditions: dict[str, PreconditionDefinition] = {}
        self.states: dict[str, type[BaseModel]] = {}
        self._lock = threading.Lock()

    def add_state(self, name: str, model: type[BaseModel]) -> None:
        _check_name(name, "state model")
        with self._lock:
            if self.states.get(name, model) is not model:
                raise RegistrationError(f"state model {name!r} is already registered as {self.states[name].__qualname__}")
            self.states[name] = model

    def add_node(self, definition: NodeDefinition) -> None:
        with self._lock:
            if definition.name in self.nodes or definition.name in self.routers:
                raise RegistrationError(f"{definition.name!r} is already registered")
            self.nodes[definition.name] = definition

    def add_router(self, definition: RouterDefinition) -> None:
        with self._lock:
            if definition.name in self.nodes or definition.name in self.routers:
                raise RegistrationError(f"{definition.name!r} is already registered")
            self.routers[definition.name] = definition

    def add_precondition(self, definition: PreconditionDefinition) -> None:
        with self._lock:
            if definition.name in self.preconditions:
                raise RegistrationError(f"precondition {definition.name!r} is already registered")
            self.preconditions[definition.name] = definition


REGISTRY = Registry()
"""Where the decorators register; :func:`~mnemoflow.nodes.builtins.load_builtin_nodes` fills it with the mechanisms' nodes."""


def _check_name(name: str, what: str) -> None:
    if not _DOTTED.fullmatch(name):
        raise RegistrationError(f"{what} name {name!r} must be dotted, like 'package.name'")


def _check_fields(name: str, state: type[BaseModel], fields: set[str], what: str) -> frozenset[str]:
    unknown = sorted(set(fields) - set(state.model_fields))
    if unknown:
        raise RegistrationError(
            f"{name}: {what} {', '.join(unknown)} not fields of {state.__name__} "
            f"(fields: {', '.join(state.model_fields)})"
        )
    return frozenset(fields)


def _check_config(name: str, config: type[BaseModel]) -> type[BaseModel]:
    if config.model_config.get("extra") != "forbid":
        raise RegistrationError(
            f"{name}: config model {config.__name__} must refuse unknown keys "
            "(model_config = ConfigDict(extra=\"forbid\")), or a misspelt key under `with:` passes unnoticed"
        )
    return config


def _doc(function: Callable[..., Any], name: str) -> str:
    doc = inspect.getdoc(function)
    if not doc:
        raise RegistrationError(f"{name}: give the function a docstring; the CLI shows it")
    return doc


def state_model(name: str, registry: Registry = REGISTRY) -> Callable[[type[StateT]], type[StateT]]:
    """Register a pydantic state model under a dotted name that graph files use in ``state:``."""

    def register(model: type[StateT]) -> type[StateT]:
        registry.add_state(name, model)
        return model

    return register


def node(
    name: str,
    *,
    state: type[BaseModel],
    reads: set[str],
    writes: set[str],
    config: type[BaseModel] = NoConfig,
    registry: Registry = REGISTRY,
) -> Callable[[NodeFunction], NodeFunction]:
    """Register an async node function: ``(state, config, context) -> dict`` of the fields it writes."""
    _check_name(name, "node")

    def register(function: NodeFunction) -> NodeFunction:
        if not inspect.iscoroutinefunction(function):
            raise RegistrationError(f"node {name}: must be an async function")
        registry.add_node(
            NodeDefinition(
                name=name,
                function=function,
                state=state,
                reads=_check_fields(name, state, reads, "reads"),
                writes=_check_fields(name, state, writes, "writes"),
                config=_check_config(name, config),
                doc=_doc(function, name),
            )
        )
        return function

    return register


def router(
    name: str,
    *,
    state: type[BaseModel],
    reads: set[str],
    outcomes: set[str],
    config: type[BaseModel] = NoConfig,
    registry: Registry = REGISTRY,
) -> Callable[[RouterFunction], RouterFunction]:
    """Register a router: ``(state, config) -> outcome``, one of ``outcomes``."""
    _check_name(name, "router")
    if not outcomes:
        raise RegistrationError(f"router {name}: declare the outcomes it can return")

    def register(function: RouterFunction) -> RouterFunction:
        if inspect.iscoroutinefunction(function):
            raise RegistrationError(f"router {name}: must be a plain function; routing does no I/O")
        registry.add_router(
            RouterDefinition(
                name=name,
                function=function,
                state=state,
                reads=_check_fields(name, state, reads, "reads"),
                outcomes=frozenset(outcomes),
                config=_check_config(name, config),
                doc=_doc(function, name),
            )
        )
        return function

    return register


def precondition(
    name: str, *, state: type[BaseModel], reads: set[str], registry: Registry = REGISTRY
) -> Callable[[PreconditionFunction], PreconditionFunction]:
    """Register a precondition: ``(values, store, namespace) -> None`` over the run's input ``values`` (the fields
    it ``reads``) and what the run's namespace holds, raising ``PreconditionError`` when the run cannot do its work."""
    _check_name(name, "precondition")

    def register(function: PreconditionFunction) -> PreconditionFunction:
        if not inspect.iscoroutinefunction(function):
            raise RegistrationError(f"precondition {name}: must be an async function")
        registry.add_precondition(
            PreconditionDefinition(
                name=name, function=function, state=state, reads=_check_fields(name, state, reads, "reads"), doc=_doc(function, name)
            )
        )
        return function

    return register


def import_node_modules(modules: Iterable[str]) -> None:
    """Import the modules that register a project's own nodes (``MNEMOFLOW_NODE_MODULES``), so that a worker
    process can run graphs that use them."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise RegistrationError(f"cannot import node module {module!r} (MNEMOFLOW_NODE_MODULES): {exc}") from exc
