"""The checks a graph passes before it runs; ``load_graph`` parses, loads subgraphs and checks them all."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any, get_origin

from pydantic import BaseModel, ValidationError

from mnemoflow.errors import UsageError
from mnemoflow.graphs.loader import LoadedGraph, Positions, Problem, find_graph, parse_graph_file, raise_problems, suggest
from mnemoflow.graphs.spec import END, START, GraphSpec
from mnemoflow.nodes.builtins import load_builtin_nodes
from mnemoflow.nodes.registry import REGISTRY, Registry

__all__ = ["graph_reads_writes", "load_graph", "successors", "with_node_config", "with_route_config"]


def load_graph(reference: str | Path, registry: Registry = REGISTRY) -> LoadedGraph:
    """Load a graph by path or library name with its subgraphs; raise ``GraphSpecError`` listing every problem.

    The default registry gets the built-in nodes first, so a library graph always finds its nodes.
    """
    if registry is REGISTRY:
        load_builtin_nodes()
    path = find_graph(str(reference))
    problems: list[Problem] = []
    graph = _load(path, registry, problems, stack=())
    raise_problems(problems)
    assert graph is not None
    return graph


def with_node_config(graph: LoadedGraph, config: dict[str, dict[str, Any]], registry: Registry = REGISTRY) -> LoadedGraph:
    """``graph`` with these nodes' ``with:`` values set over the file's (budgets fitted to a model, say), checked
    again; raises ``UsageError`` for a node the graph does not have and ``GraphSpecError`` for a bad value."""
    nodes = dict(graph.spec.nodes)
    for name, values in config.items():
        if name not in nodes or nodes[name].use is None:
            raise UsageError(f"{graph.spec.name} has no registered node {name!r}; its nodes: {sorted(nodes)}")
        nodes[name] = nodes[name].model_copy(update={"with_": {**nodes[name].with_, **values}})
    variant = replace(graph, spec=graph.spec.model_copy(update={"nodes": nodes}))
    raise_problems(check_graph(variant, registry))
    return variant


def with_route_config(graph: LoadedGraph, config: dict[str, dict[str, Any]], registry: Registry = REGISTRY) -> LoadedGraph:
    """``graph`` with the ``with:`` values of the routes leaving these nodes set over the file's (a loop's bound,
    say), checked again; raises ``UsageError`` for a node no route leaves and ``GraphSpecError`` for a bad value."""
    routes = {route.from_ for route in graph.spec.routes}
    if missing := sorted(set(config) - routes):
        raise UsageError(f"{graph.spec.name} has no route from {missing}; its routes leave {sorted(routes)}")
    updated = [
        route.model_copy(update={"with_": {**route.with_, **config[route.from_]}}) if route.from_ in config else route
        for route in graph.spec.routes
    ]
    variant = replace(graph, spec=graph.spec.model_copy(update={"routes": updated}))
    raise_problems(check_graph(variant, registry))
    return variant


def _load(path: Path, registry: Registry, problems: list[Problem], stack: tuple[Path, ...]) -> LoadedGraph | None:
    spec, positions, found = parse_graph_file(path)
    problems += found
    if spec is None:
        return None
    graph = LoadedGraph(spec, path, positions)
    for name, node in spec.nodes.items():
        if node.graph is None:
            continue
        where = ("nodes", name, "graph")
        try:
            sub_path = find_graph(node.graph, relative_to=path.parent)
        except FileNotFoundError as exc:
            problems.append(positions.problem(where, "missing-subgraph", f"node {name!r}: {exc}"))
            continue
        if sub_path in (*stack, path):
            chain = " -> ".join(p.name for p in (*stack, path, sub_path))
            problems.append(positions.problem(where, "recursive-subgraph", f"node {name!r} includes itself: {chain}"))
            continue
        subgraph = _load(sub_path, registry, problems, (*stack, path))
        if subgraph is not None:
            graph.subgraphs[name] = subgraph
    problems += check_graph(graph, registry)
    return graph


def successors(spec: GraphSpec) -> dict[str, set[str]]:
    """Where each node (and START) may go next: edges, route targets and fan-out targets."""
    following: dict[str, set[str]] = {START: set(), **{name: set() for name in spec.nodes}}
    for edge in spec.edges:
        following.setdefault(edge.from_, set()).add(edge.to)
    for route in spec.routes:
        following.setdefault(route.from_, set()).update(route.outcomes.values())
    for fanout in spec.fanouts:
        following.setdefault(fanout.from_, set()).add(fanout.to)
    return following


def graph_reads_writes(graph: LoadedGraph, registry: Registry) -> tuple[set[str], set[str]]:
    """What a whole graph needs as input and what it may write, for using it as a subgraph node."""
    writes: set[str] = set()
    for name, node in graph.spec.nodes.items():
        if node.use in registry.nodes:
            writes |= registry.nodes[node.use].writes
        elif name in graph.subgraphs:
            writes |= graph_reads_writes(graph.subgraphs[name], registry)[1]
    return set(graph.spec.input), writes


def check_graph(graph: LoadedGraph, registry: Registry) -> list[Problem]:
    """Every check of one graph file (its subgraphs are checked on their own)."""
    spec, at = graph.spec, graph.positions
    problems: list[Problem] = []
    state = registry.states.get(spec.state)
    if state is None:
        problems.append(
            at.problem(("state",), "unknown-state", f"state model {spec.state!r} is not registered", suggest(spec.state, registry.states.keys()))
        )
    fields = set(state.model_fields) if state else set()
    for index, name in enumerate(spec.input):
        if state and name not in fields:
            problems.append(at.problem(("input", index), "unknown-field", f"input {name!r} is not a field of {spec.state}", suggest(name, fields)))
    for index, name in enumerate(spec.output):
        if state and name not in fields:
            problems.append(at.problem(("output", index), "unknown-field", f"output {name!r} is not a field of {spec.state}", suggest(name, fields)))
    for index, name in enumerate(spec.requires):
        check = registry.preconditions.get(name)
        if check is None:
            hint = suggest(name, registry.preconditions.keys()) or f"registered: {', '.join(sorted(registry.preconditions)) or 'none'}"
            problems.append(at.problem(("requires", index), "unknown-precondition", f"precondition {name!r} is not registered", hint))
        elif state and not issubclass(state, check.state):
            problems.append(at.problem(("requires", index), "state-mismatch", f"{name} checks {check.state.__name__}, not {state.__name__}"))
        elif missing := sorted(check.reads - set(spec.input)):
            problems.append(
                at.problem(("requires", index), "precondition-input", f"{name} reads {', '.join(missing)}, which the graph's input does not list")
            )

    reads: dict[str, set[str]] = {}
    writes: dict[str, set[str]] = {}
    where: tuple[str | int, ...]
    for name, node in spec.nodes.items():
        where = ("nodes", name)
        if name in (START, END) or not name.isidentifier():
            problems.append(at.problem(where, "bad-node-name", f"node name {name!r} must be an identifier other than START and END"))
        if node.use is not None:
            definition = registry.nodes.get(node.use)
            if definition is None:
                hint = "that is a router: use it in 'routes'" if node.use in registry.routers else suggest(node.use, registry.nodes.keys())
                problems.append(at.problem((*where, "use"), "unknown-node", f"node {name!r} uses {node.use!r}, which is not registered", hint))
                continue
            if state and not issubclass(state, definition.state):
                problems.append(
                    at.problem((*where, "use"), "state-mismatch", f"{node.use} works on {definition.state.__name__}, not on {state.__name__}")
                )
            problems += _check_config(at, (*where, "with"), f"node {name!r} ({node.use})", definition.config, node.with_)
            reads[name], writes[name] = set(definition.reads), set(definition.writes)
        elif name in graph.subgraphs:
            subgraph = graph.subgraphs[name]
            sub_state = registry.states.get(subgraph.spec.state)
            if state and sub_state and not issubclass(state, sub_state):  # the subgraph runs on this graph's state
                problems.append(
                    at.problem(
                        (*where, "graph"),
                        "state-mismatch",
                        f"subgraph {subgraph.spec.name!r} works on {subgraph.spec.state}, which {spec.state} does not extend",
                    )
                )
            reads[name], writes[name] = graph_reads_writes(subgraph, registry)

    known = set(spec.nodes)
    exits: dict[str, list[str]] = {}

    def check_target(path: tuple[str | int, ...], target: str, allow_end: bool = True) -> None:
        allowed = known | ({END} if allow_end else set())
        if target not in allowed:
            problems.append(at.problem(path, "unknown-target", f"{target!r} is not a node of this graph", suggest(target, allowed)))

    for index, edge in enumerate(spec.edges):
        if edge.from_ != START and edge.from_ not in known:
            problems.append(at.problem(("edges", index, "from"), "unknown-source", f"{edge.from_!r} is not a node of this graph", suggest(edge.from_, known | {START})))
        check_target(("edges", index, "to"), edge.to)
        exits.setdefault(edge.from_, []).append("edge")
    for index, route in enumerate(spec.routes):
        where = ("routes", index)
        if route.from_ not in known:
            problems.append(at.problem((*where, "from"), "unknown-source", f"{route.from_!r} is not a node of this graph", suggest(route.from_, known)))
        exits.setdefault(route.from_, []).append("route")
        for outcome, target in route.outcomes.items():
            check_target((*where, "outcomes", outcome), target)
        router = registry.routers.get(route.router)
        if router is None:
            hint = "that is a node: use it in 'nodes'" if route.router in registry.nodes else suggest(route.router, registry.routers.keys())
            problems.append(at.problem((*where, "router"), "unknown-router", f"router {route.router!r} is not registered", hint))
            continue
        problems += _check_config(at, (*where, "with"), f"router {route.router}", router.config, route.with_)
        missing = sorted(router.outcomes - set(route.outcomes))
        if missing:
            problems.append(
                at.problem((*where, "outcomes"), "missing-outcome", f"{route.router} can return {', '.join(map(repr, missing))} but the route does not map it")
            )
        for outcome in sorted(set(route.outcomes) - router.outcomes):
            problems.append(
                at.problem((*where, "outcomes", outcome), "unknown-outcome", f"{route.router} never returns {outcome!r}", suggest(outcome, router.outcomes) or f"it returns {', '.join(sorted(router.outcomes))}")
            )
        if route.from_ in known:
            reads.setdefault(f"route:{index}", set()).update(router.reads)
    for index, fanout in enumerate(spec.fanouts):
        where = ("fanouts", index)
        if fanout.from_ not in known:
            problems.append(at.problem((*where, "from"), "unknown-source", f"{fanout.from_!r} is not a node of this graph", suggest(fanout.from_, known)))
        check_target((*where, "to"), fanout.to, allow_end=False)
        exits.setdefault(fanout.from_, []).append("fan-out")
        for key in ("over", "item"):
            value = getattr(fanout, key)
            if state and value not in fields:
                problems.append(at.problem((*where, key), "unknown-field", f"{key} {value!r} is not a field of {spec.state}", suggest(value, fields)))
        if state and fanout.over in fields and get_origin(state.model_fields[fanout.over].annotation) is not list:
            problems.append(at.problem((*where, "over"), "not-a-list", f"fan-out over {fanout.over!r}, which is not a list field"))
    for source, kinds in exits.items():
        if len(set(kinds)) > 1 or kinds.count("route") > 1 or kinds.count("fan-out") > 1:
            problems.append(
                at.problem(_first_exit_path(spec, source), "ambiguous-exit", f"{source!r} leaves by {', '.join(kinds)}; give a node edges, one route or one fan-out")
            )
    if START not in exits:
        problems.append(at.problem(("edges",), "no-start", "no edge leaves START", "add {from: START, to: <first node>}"))
    if problems:
        return problems
    return _check_structure(spec, at, reads, writes, state)


def _first_exit_path(spec: GraphSpec, source: str) -> tuple[str | int, ...]:
    for group in ("edges", "routes", "fanouts"):
        for index, item in enumerate(getattr(spec, group)):
            if item.from_ == source:
                return (group, index, "from")
    return ("nodes", source)


def _check_config(at: Positions, where: tuple[str | int, ...], owner: str, model: type[BaseModel], values: dict[str, Any]) -> list[Problem]:
    try:
        model.model_validate(values)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = ".".join(str(part) for part in error["loc"])
            hint = suggest(str(error["loc"][0]), set(model.model_fields)) if error["type"] == "extra_forbidden" else ""
            if error["type"] == "extra_forbidden" and not hint:
                hint = f"it takes: {', '.join(model.model_fields) or 'no config'}"
            problems.append(at.problem((*where, *error["loc"]), "bad-config", f"{owner}: {key}: {error['msg']}", hint))
        return problems
    return []


def _reachable(start: str, edges: dict[str, set[str]]) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for following in edges.get(todo.pop(), set()):
            if following not in seen:
                seen.add(following)
                todo.append(following)
    return seen


def _strongly_connected(nodes: Iterable[str], edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components in no particular order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, set()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, set())))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
    return components


def _check_structure(
    spec: GraphSpec, at: Positions, reads: dict[str, set[str]], writes: dict[str, set[str]], state: type[BaseModel] | None
) -> list[Problem]:
    problems: list[Problem] = []
    following = successors(spec)
    node_edges = {name: {target for target in targets if target != END} for name, targets in following.items()}
    reachable = _reachable(START, following)
    for name in spec.nodes:
        if name not in reachable:
            problems.append(at.problem(("nodes", name), "unreachable", f"node {name!r} cannot be reached from START"))
    backwards: dict[str, set[str]] = {}
    for source, targets in following.items():
        for target in targets:
            backwards.setdefault(target, set()).add(source)
    reaches_end = _reachable(END, backwards)
    for name in spec.nodes:
        if name in reachable and name not in reaches_end:
            problems.append(at.problem(("nodes", name), "no-path-to-end", f"node {name!r} has no path to END", "every run must be able to finish"))

    route_sources = {route.from_: route for route in spec.routes}
    has_cycle = False
    for component in _strongly_connected(spec.nodes, node_edges):
        members = set(component)
        if len(component) == 1 and component[0] not in node_edges.get(component[0], set()):
            continue
        has_cycle = True
        exits = [
            source
            for source in members
            if source in route_sources and any(target not in members for target in route_sources[source].outcomes.values())
        ]
        if not exits:
            cycle = " -> ".join(sorted(members))
            first = sorted(members)[0]
            problems.append(
                at.problem(("nodes", first), "cycle-without-exit", f"the cycle {cycle} has no exit", "route one of its nodes through a router with an outcome that leaves the cycle")
            )
    if has_cycle and spec.max_steps is None:
        problems.append(at.problem(("nodes",), "unbounded-loop", "the graph has a cycle but no max_steps", "set max_steps: the most steps a run may take"))

    if state is not None:
        problems += _check_dataflow(spec, at, reads, writes, state, backwards)
    return problems


def _check_dataflow(
    spec: GraphSpec, at: Positions, reads: dict[str, set[str]], writes: dict[str, set[str]], state: type[BaseModel], backwards: dict[str, set[str]]
) -> list[Problem]:
    """A field read must come from the input, a default of the state model, or a node before the reader."""
    given = set(spec.input) | {name for name, field in state.model_fields.items() if not field.is_required()}
    following = successors(spec)
    fanned = {fanout.to: fanout.item for fanout in spec.fanouts}
    problems = []
    readers: list[tuple[str, str, set[str], tuple[str | int, ...]]] = [
        (repr(name), name, reads[name], ("nodes", name)) for name in spec.nodes if name in reads
    ]
    readers += [
        (f"route from {route.from_!r}", route.from_, reads.get(f"route:{index}", set()), ("routes", index))
        for index, route in enumerate(spec.routes)
    ]
    for label, node, needed, where in readers:
        is_route = label.startswith("route")
        on_cycle = any(node in _reachable(nxt, following) for nxt in following.get(node, set()) if nxt != END)
        ancestors = _reachable(node, backwards) - {START, node}
        if is_route or on_cycle:
            ancestors.add(node)  # a route runs after its node; a node on a cycle sees its own earlier writes
        available = set(given) | ({fanned[node]} if node in fanned and not is_route else set())
        for ancestor in ancestors:
            available |= writes.get(ancestor, set())
        for field in sorted(needed - available):
            problems.append(
                at.problem(
                    where,
                    "unwritten-field",
                    f"{label} reads {field!r}, which no earlier node, input or default provides",
                    "add it to 'input' or write it in a node before",
                )
            )
    return problems
