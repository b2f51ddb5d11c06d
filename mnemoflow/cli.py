"""The ``mnemoflow`` command. Heavy layers are imported inside commands so ``--help`` stays fast."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from mnemoflow.errors import MnemoflowError

if TYPE_CHECKING:
    from mnemoflow.memory.protocol import Embedder, GraphStore
    from mnemoflow.settings import Settings

__all__ = ["app"]

T = TypeVar("T")

app = typer.Typer(name="mnemoflow", help="Memory mechanisms for LLM agents, as declarative workflows.", no_args_is_help=True)
store_app = typer.Typer(help="Set up and inspect the memory store.", no_args_is_help=True)
app.add_typer(store_app, name="store")
graphs_app = typer.Typer(help="List, check, show and render graph files.", no_args_is_help=True)
app.add_typer(graphs_app, name="graphs")
ingest_app = typer.Typer(help="Index texts for a memory mechanism.", no_args_is_help=True)
app.add_typer(ingest_app, name="ingest")

NamespaceOption = Annotated[str | None, typer.Option(help="Namespace to use; defaults to MNEMOFLOW_NAMESPACE.")]
BackendOption = Annotated[str | None, typer.Option(help="sqlite or neo4j; defaults to MNEMOFLOW_STORE_BACKEND.")]


def _settings(backend: str | None = None, namespace: str | None = None) -> Settings:
    from pydantic import ValidationError

    from mnemoflow.logging import configure_logging
    from mnemoflow.settings import Settings, StoreSettings

    try:
        settings = Settings()
        if backend is not None:
            settings = settings.model_copy(update={"store": StoreSettings(backend=backend)})
        if namespace is not None:
            settings = settings.model_copy(update={"namespace": namespace})
    except ValidationError as exc:
        _fail(f"invalid configuration:\n{exc}")
    configure_logging(settings.log)
    return settings


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _run(work: Callable[[GraphStore, Embedder], Awaitable[T]], settings: Settings) -> T:
    """Open the configured store, run ``work`` against it, close it; mnemoflow errors become exit code 2."""
    from mnemoflow.memory import embedder_from_settings, store_from_settings

    async def main() -> T:
        embedder = embedder_from_settings(settings)
        store = store_from_settings(settings, embedder)
        try:
            await store.setup()
            return await work(store, embedder)
        finally:
            await store.close()

    try:
        return asyncio.run(main())
    except MnemoflowError as exc:
        raise _fail(str(exc)) from None


@app.command()
def demo(
    namespace: Annotated[str, typer.Option(help="Namespace the demo book and its workspaces are stored in.")] = "demo",
    backend: BackendOption = None,
) -> None:
    """The main job: index a bundled story with ComoRAG, then answer three questions about it.

    Uses the model configured by OPENAI_BASE_URL / OPENAI_API_KEY, or the offline stand-in when none is.
    """
    import json
    from importlib import resources

    from mnemoflow.graphs import GraphRunner, load_graph
    from mnemoflow.llm import llm_from_settings
    from mnemoflow.memory.checkpoints import open_checkpointer

    data = resources.files("mnemoflow.nodes.comorag").joinpath("data")
    story = data.joinpath("the-salt-road.txt").read_text(encoding="utf-8")
    questions = json.loads(data.joinpath("questions.json").read_text(encoding="utf-8"))
    title = story.split("\n", 1)[0].strip()
    settings = _settings(backend, namespace)

    async def work(store: GraphStore, embedder: Embedder) -> Any:
        llm = llm_from_settings(settings)
        try:
            async with open_checkpointer(settings) as checkpointer:
                ingest = GraphRunner(load_graph("comorag-ingest"), store=store, embedder=embedder, llm=llm, settings=settings, checkpointer=checkpointer)
                async with ingest:
                    indexed = await ingest.run({"book_id": "the-salt-road", "title": title, "text": story}, namespace=settings.namespace)
                answers = []
                qa = GraphRunner(load_graph("comorag-qa"), store=store, embedder=embedder, llm=llm, settings=settings, checkpointer=checkpointer)
                async with qa:
                    for item in questions:
                        values = {"question": item["question"], "book_id": "the-salt-road", "options": item.get("options", {})}
                        answers.append((item, await qa.run(values, namespace=settings.namespace)))
                return indexed, answers, llm.offline
        finally:
            await llm.aclose()

    indexed, answers, offline = _run(work, settings)
    model = "the offline model (no OPENAI_BASE_URL or OPENAI_API_KEY set)" if offline else settings.llm.model
    state = indexed.state
    typer.echo(f"Indexed {title!r} in the {settings.store.backend} store (namespace {settings.namespace!r}) with {model}:")
    typer.echo(
        f"  {len(state.get('chunk_ids', []))} chunks, {len(state.get('entity_ids', []))} entities, {state.get('facts')} facts, "
        f"{sum(state.get('semantic_levels', []))} semantic and {state.get('episodes')} episodic summaries; "
        f"{indexed.llm_calls} LLM calls ({indexed.llm_usage.get('cache_hits', 0)} from the cache)"
    )
    for number, (item, result) in enumerate(answers, 1):
        final = result.state
        probes = len(final.get("probe_history", [])) - (1 if final.get("probe_history") else 0)
        typer.echo(f"\n{number}. {item['question']}")
        for letter, option in item.get("options", {}).items():
            typer.echo(f"     {letter}) {option}")
        typer.echo(f"   answer: {final.get('final_answer')}   ({final.get('status')}; expected: {item['answer']})")
        typer.echo(
            f"   {final.get('cycle', 0)} cycles, {max(probes, 0)} probes, {result.llm_calls} LLM calls, {result.tokens} tokens"
        )
        typer.echo(f"   workspace: mnemoflow comorag show {final.get('question_id')} --namespace {settings.namespace}")
    if offline:
        typer.echo("\nThe offline model is a deterministic stand-in, not a model: configure one to see real answers.")


comorag_app = typer.Typer(help="Inspect ComoRAG's indexes and question workspaces.", no_args_is_help=True)
app.add_typer(comorag_app, name="comorag")


@comorag_app.command("show")
def comorag_show(
    question_id: Annotated[str, typer.Argument(help="The question's id, as `mnemoflow demo` prints it.")],
    namespace: NamespaceOption = None,
    backend: BackendOption = None,
) -> None:
    """Print a question's workspace: its cycles, probes and memory units."""
    import mnemoflow.nodes.comorag.model  # noqa: F401  (registers the workspace's kinds)

    settings = _settings(backend, namespace)

    async def work(store: GraphStore, embedder: Embedder) -> Any:
        return await store.neighbourhood(
            settings.namespace, question_id, depth=3, relationship_types=["HAS_CYCLE", "ISSUED", "YIELDED"], direction="out"
        )

    workspace = _run(work, settings)
    if not workspace.nodes:
        raise _fail(f"no question {question_id!r} in namespace {settings.namespace!r}")
    question, *others = workspace.nodes
    props = question.properties
    typer.echo(f"{props.get('question')}\n  status: {props.get('status')}, final answer: {props.get('final_answer')}")
    for node in others:
        indent = {1: "  ", 2: "    ", 3: "      "}[workspace.distances[node.id]]
        if node.kind == "Cycle":
            typer.echo(f"{indent}cycle {node.properties.get('index')}: prediction {node.properties.get('prediction')!r}")
        elif node.kind == "Probe":
            typer.echo(f"{indent}probe: {node.properties.get('text') or node.text}")
        else:
            cue = " ".join((node.text or "").split())
            typer.echo(f"{indent}{node.properties.get('layer', node.kind)} unit: {cue[:140]}{'...' if len(cue) > 140 else ''}")


l2mac_app = typer.Typer(help="Work with L2MAC runs' file stores.", no_args_is_help=True)
app.add_typer(l2mac_app, name="l2mac")


@l2mac_app.command("export")
def l2mac_export(
    run: Annotated[str, typer.Argument(help="The run id (or its thread id), as `mnemoflow run` prints it.")],
    to: Annotated[Path, typer.Option("--to", help="Folder to write the files into; must be empty or missing.")],
    force: Annotated[
        bool, typer.Option(help="Write into a folder that is not empty, overwriting files of the same paths.")
    ] = False,
    namespace: NamespaceOption = None,
    backend: BackendOption = None,
) -> None:
    """Write an L2MAC run's final file tree (the current version of every file) to a folder."""
    from mnemoflow.nodes.l2mac.export import export_files

    settings = _settings(backend, namespace)

    async def work(store: GraphStore, embedder: Embedder) -> list[str]:
        return await export_files(store, settings.namespace, run, to, force=force)

    written = _run(work, settings)
    typer.echo(f"wrote {len(written)} file(s) to {to}")
    for path in written:
        typer.echo(f"  {path}")


@store_app.command("setup")
def store_setup(backend: BackendOption = None) -> None:
    """Create the store's schema (constraints, indexes, migrations); safe to run again."""
    settings = _settings(backend)

    async def work(store: GraphStore, embedder: Embedder) -> int:
        return await store.schema_version()

    version = _run(work, settings)
    typer.echo(f"{settings.store.backend} store ready at schema version {version}")


@store_app.command("info")
def store_info(namespace: NamespaceOption = None, backend: BackendOption = None) -> None:
    """Print the schema version and the number of records in a namespace."""
    settings = _settings(backend, namespace)

    async def work(store: GraphStore, embedder: Embedder) -> tuple[int, int, int]:
        return (
            await store.schema_version(),
            await store.count_nodes(settings.namespace),
            await store.count_relationships(settings.namespace),
        )

    version, nodes, relationships = _run(work, settings)
    typer.echo(f"backend: {settings.store.backend}\nschema version: {version}")
    typer.echo(f"namespace {settings.namespace!r}: {nodes} nodes, {relationships} relationships")


def _register_project_nodes() -> None:
    """Import MNEMOFLOW_NODE_MODULES, so graph files can use a project's own nodes."""
    from mnemoflow.nodes import import_node_modules
    from mnemoflow.settings import Settings

    try:
        import_node_modules(Settings().node_module_names)
    except MnemoflowError as exc:
        raise _fail(str(exc)) from None


def _load(reference: str) -> Any:
    from mnemoflow.graphs import load_graph

    _register_project_nodes()
    try:
        return load_graph(reference)
    except FileNotFoundError as exc:
        raise _fail(str(exc)) from None
    except MnemoflowError as exc:
        raise _fail(f"{reference} is not a valid graph:\n{exc}") from None


@graphs_app.command("list")
def graphs_list() -> None:
    """The shipped graphs, with their descriptions."""
    import yaml

    from mnemoflow.graphs import library_graphs

    for path in library_graphs():
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        description = " ".join(str(data.get("description", "")).split())
        typer.echo(f"{path.stem:<24} {description}")


@graphs_app.command("validate")
def graphs_validate(references: Annotated[list[str], typer.Argument(help="Graph files or library names.")]) -> None:
    """Check graph files; exit 1 and list every problem (file:line:column) when one is invalid."""
    from mnemoflow.graphs import load_graph

    _register_project_nodes()
    failed = False
    for reference in references:
        try:
            graph = load_graph(reference)
        except FileNotFoundError as exc:
            typer.secho(f"{reference}: {exc}", fg=typer.colors.RED, err=True)
            failed = True
        except MnemoflowError as exc:
            typer.secho(str(exc), fg=typer.colors.RED, err=True)
            failed = True
        else:
            typer.echo(f"{graph.path}: ok ({graph.spec.name} v{graph.spec.version}, {len(graph.spec.nodes)} nodes)")
    if failed:
        raise typer.Exit(code=1)


@graphs_app.command("show")
def graphs_show(reference: Annotated[str, typer.Argument(help="A graph file or library name.")]) -> None:
    """Describe a graph: its state, input and each node with its documentation."""
    from mnemoflow.nodes import REGISTRY

    graph = _load(reference)
    spec = graph.spec
    typer.echo(f"{spec.name} v{spec.version} ({graph.path})\n{' '.join(spec.description.split())}\n")
    typer.echo(f"state: {spec.state}   input: {', '.join(spec.input) or '-'}   max_steps: {spec.max_steps or '-'}\n")
    for name, node in spec.nodes.items():
        if node.use is not None:
            definition = REGISTRY.nodes[node.use]
            typer.echo(f"{name}: {node.use} {node.with_ or ''}".rstrip())
            typer.echo(f"    {definition.doc.splitlines()[0]}")
            typer.echo(f"    reads {', '.join(sorted(definition.reads)) or '-'}; writes {', '.join(sorted(definition.writes)) or '-'}")
        else:
            typer.echo(f"{name}: graph {node.graph}")
    for route in spec.routes:
        outcomes = ", ".join(f"{outcome} -> {target}" for outcome, target in route.outcomes.items())
        typer.echo(f"route after {route.from_}: {route.router} ({outcomes})")


@graphs_app.command("render")
def graphs_render(reference: Annotated[str, typer.Argument(help="A graph file or library name.")]) -> None:
    """Print the graph as Mermaid text (paste it into any Mermaid viewer)."""
    from mnemoflow.graphs import to_mermaid

    typer.echo(to_mermaid(_load(reference)), nl=False)


@graphs_app.command("schema")
def graphs_schema() -> None:
    """Print the JSON Schema of graph files, for editors."""
    import json

    from mnemoflow.graphs import GraphSpec

    typer.echo(json.dumps(GraphSpec.model_json_schema(by_alias=True), indent=2))


@app.command("run")
def run(
    graph: Annotated[str, typer.Argument(help="A graph file or library name.")],
    input: Annotated[str, typer.Option("--input", help="Input as JSON, or @file holding JSON.")] = "{}",
    thread: Annotated[str | None, typer.Option(help="Thread id: run again with the same id to resume.")] = None,
    store: Annotated[str | None, typer.Option(help="sqlite or neo4j; defaults to MNEMOFLOW_STORE_BACKEND.")] = None,
    namespace: NamespaceOption = None,
    field: Annotated[str | None, typer.Option(help="Print only this field of the final state.")] = None,
) -> None:
    """Run a graph (or resume one on --thread) and print its final state and a one-line summary."""
    import json

    from mnemoflow.graphs import run_graph
    from mnemoflow.llm import llm_from_settings
    from mnemoflow.memory.checkpoints import open_checkpointer

    loaded = _load(graph)
    try:
        text = Path(input[1:]).read_text(encoding="utf-8") if input.startswith("@") else input
        values = json.loads(text)
    except (OSError, json.JSONDecodeError) as exc:
        raise _fail(f"--input: {exc}") from None
    if not isinstance(values, dict):
        raise _fail("--input must be a JSON object of state fields")
    settings = _settings(store, namespace)

    async def work(memory: GraphStore, embedder: Embedder) -> Any:
        llm = llm_from_settings(settings)
        try:
            async with open_checkpointer(settings) as checkpointer:
                return await run_graph(
                    loaded,
                    values,
                    store=memory,
                    embedder=embedder,
                    llm=llm,
                    settings=settings,
                    checkpointer=checkpointer,
                    namespace=settings.namespace,
                    thread_id=thread,
                    live_interval=1.0,  # `mnemoflow serve` shows the run while it runs
                )
        finally:
            await llm.aclose()

    result = _run(work, settings)
    if field is not None:
        if field not in result.state:
            raise _fail(f"--field {field!r} is not in the final state: {', '.join(result.state)}")
        typer.echo(json.dumps(result.state[field], indent=2, default=str))
    else:
        typer.echo(json.dumps(result.state, indent=2, default=str))
    typer.echo(result.summary(), err=True)


@ingest_app.command("comorag")
def ingest_comorag(
    file: Annotated[str, typer.Argument(help="A UTF-8 text file: the book.")],
    book: Annotated[str, typer.Option("--book", help="The book's id within the namespace.")],
    title: Annotated[str | None, typer.Option(help="The book's title; defaults to the file name.")] = None,
    kg: Annotated[bool, typer.Option("--kg/--no-kg", help="Extract entities and facts (2 model calls per chunk).")] = True,
    chunk_tokens: Annotated[int, typer.Option(help="Tokens per chunk at most.")] = 512,
    store: Annotated[str | None, typer.Option(help="sqlite or neo4j; defaults to MNEMOFLOW_STORE_BACKEND.")] = None,
    namespace: NamespaceOption = None,
) -> None:
    """Index a book for ComoRAG (chunks, knowledge graph, semantic and episodic summaries); safe to run again."""

    from mnemoflow.graphs import run_graph
    from mnemoflow.llm import llm_from_settings, uses_offline_model
    from mnemoflow.memory.checkpoints import open_checkpointer

    path = Path(file)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(f"cannot read {file}: {exc}") from None
    values = {"book_id": book, "title": title or path.stem, "text": text, "kg": kg, "chunk_tokens": chunk_tokens}
    loaded = _load("comorag-ingest")
    settings = _settings(store, namespace)
    model = "the offline model" if uses_offline_model(settings) else settings.llm.model
    typer.echo(f"Ingesting {path.name} as book {book!r} into the {settings.store.backend} store "
               f"(namespace {settings.namespace!r}) with {model}; progress is logged below.", err=True)  # fmt: skip

    async def work(memory: GraphStore, embedder: Embedder) -> Any:
        llm = llm_from_settings(settings)
        try:
            async with open_checkpointer(settings) as checkpointer:
                return await run_graph(
                    loaded, values, store=memory, embedder=embedder, llm=llm, settings=settings,
                    checkpointer=checkpointer, namespace=settings.namespace,
                )  # fmt: skip
        finally:
            await llm.aclose()

    try:
        result = _run(work, settings)
    except ValueError as exc:  # e.g. an empty book, or input the state model refuses
        raise _fail(str(exc)) from None
    state, usage = result.state, result.llm_usage
    levels = state.get("semantic_levels", [])
    typer.echo(f"book {book!r}: {len(state.get('chunk_ids', []))} chunks (window {state.get('window')})")
    if kg:
        typer.echo(f"  entities: {len(state.get('entity_ids', []))}, facts: {state.get('facts')}, synonym links: {state.get('synonyms')}")
    typer.echo(f"  semantic summaries: {sum(levels)} ({', '.join(f'level {i}: {n}' for i, n in enumerate(levels, 1)) or 'none'})")
    typer.echo(f"  episodic summaries: {state.get('episodes')}")
    typer.echo(f"  LLM calls: {result.llm_calls} ({usage.get('cache_hits', 0)} from the cache, {usage.get('requests', 0)} requests)")
    typer.echo(result.summary(), err=True)


prefect_app = typer.Typer(help="Prepare a Prefect server for mnemoflow's flows.", no_args_is_help=True)
app.add_typer(prefect_app, name="prefect")


@prefect_app.command("setup")
def prefect_setup(
    pool: Annotated[str, typer.Option(help="Name of the process work pool prefect.yaml deploys to.")] = "mnemoflow",
    silence: Annotated[float, typer.Option(help="Seconds without a heartbeat after which a run is rescheduled.")] = 90.0,
    model_slots: Annotated[
        int | None, typer.Option(help="Create or resize the limit MNEMOFLOW_PREFECT_MODEL_LIMIT names to this many requests.")
    ] = None,
) -> None:
    """Create the work pool, the automation that reschedules runs whose worker died and, with --model-slots, the
    shared model limit, on the server PREFECT_API_URL names; safe to run again."""
    from datetime import timedelta

    from mnemoflow.flows.setup import ensure_model_limit, setup_prefect

    settings = _settings()

    async def work() -> list[str]:
        done = await setup_prefect(pool, silence=timedelta(seconds=silence))
        if model_slots is not None:
            name = settings.prefect.model_limit
            if name is None:
                raise _fail("--model-slots needs MNEMOFLOW_PREFECT_MODEL_LIMIT: the name of the limit")
            await ensure_model_limit(name, model_slots)
            done.append(f"the model limit {name!r} allows {model_slots} requests at once")
        return done

    for line in asyncio.run(work()):
        typer.echo(line)


chat_app = typer.Typer(help="Talk to a memory mechanism in the terminal.", no_args_is_help=True)
app.add_typer(chat_app, name="chat")


@chat_app.command("tme")
def chat_tme(
    session: Annotated[str, typer.Option(help="Conversation id: the same id continues the same task memory.")],
    namespace: NamespaceOption = None,
    store: BackendOption = None,
) -> None:
    """A conversation with the Task Memory Engine: one turn per line of input, the task tree printed after each.

    Reads standard input, so a script can drive it too; an empty line is skipped, /tree prints the tree, /quit
    (or end of input) stops.
    """
    from functools import partial

    from mnemoflow.graphs import GraphRunner, load_graph
    from mnemoflow.llm import llm_from_settings
    from mnemoflow.nodes.tme.memory import load_conversation
    from mnemoflow.nodes.tme.session import one_turn_at_a_time

    settings = _settings(store, namespace)
    interactive = sys.stdin.isatty()

    async def work(memory: GraphStore, embedder: Embedder) -> None:
        llm = llm_from_settings(settings)
        runner = GraphRunner(load_graph("tme-turn"), store=memory, embedder=embedder, llm=llm, settings=settings, checkpointer=None, live_interval=1.0)

        async def tree() -> None:
            conversation = await load_conversation(memory, settings.namespace, session)
            typer.echo(f"-- task memory after turn {conversation.turns} --\n{conversation.forest.render()}")

        try:
            await tree()
            while True:
                line = await asyncio.to_thread(_read_line, "you> " if interactive else "")
                if line is None or line.strip() == "/quit":
                    break
                if line.strip() == "/tree":
                    await tree()
                    continue
                if not line.strip():
                    continue
                values = {"session": session, "utterance": line.strip()}
                try:
                    result = await one_turn_at_a_time(settings.namespace, session, partial(runner.run, values, namespace=settings.namespace))
                except MnemoflowError as exc:
                    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
                    continue
                typer.echo(f"assistant> {result.state['response']}")
                for problem in result.state["errors"]:
                    typer.secho(f"  not applied: {problem}", fg=typer.colors.YELLOW)
                if result.state["stale"]:
                    typer.echo(f"  marked stale: {', '.join(result.state['stale'])}")
                await tree()
        finally:
            await runner.flush()
            await llm.aclose()

    _run(work, settings)


def _read_line(prompt: str) -> str | None:
    try:
        return input(prompt)
    except EOFError:
        return None


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on; anything but loopback needs MNEMOFLOW_UI_TOKEN.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8765,
) -> None:
    """Serve the webhook receiver (POST /hooks/NAME) and the web UI (graphs, runs, memory)."""
    import uvicorn
    from prefect.settings import PREFECT_API_URL

    from mnemoflow.flows.server.app import check_bind, create_app

    settings = _settings()
    _register_project_nodes()
    try:
        check_bind(host, settings)
        server_app = create_app(settings)
    except MnemoflowError as exc:
        raise _fail(str(exc)) from None
    hooks = f"hooks from {settings.hooks.file}" if settings.hooks.file else "no hooks (MNEMOFLOW_HOOKS_FILE is unset)"
    typer.echo(f"mnemoflow serving http://{host}:{port}/ ({settings.store.backend} store, {hooks})")
    if settings.hooks.file and not PREFECT_API_URL.value():
        typer.secho("warning: PREFECT_API_URL is not set: hooks will answer 503 until it is", fg=typer.colors.YELLOW, err=True)
    uvicorn.run(server_app, host=host, port=port, log_level=settings.log.level, proxy_headers=False)


@app.command("settings")
def show_settings() -> None:
    """Print the effective settings (secrets hidden)."""
    settings = _settings()
    typer.echo(settings.model_dump_json(indent=2))


def main() -> None:  # pragma: no cover - console entry point
    app(sys.argv[1:])
