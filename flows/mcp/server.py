"""The MCP server of ``mnemoflow mcp``: tools that run the shipped graphs or read the store, and two resources.

The store, embedder, model gateway and checkpointer are opened once, when the server starts (its lifespan), from
the same settings as every other command; each graph gets one runner, made on first use. Every tool names its
namespace first: memory is explicit per call, never a server default. Errors are answered, never raised at the
client: a mnemoflow error as a tool error carrying its message (``isError``), anything else logged on stderr and
answered in one line.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from importlib.metadata import version
from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer, ResourceSecurity
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from pydantic import Field, ValidationError

from mnemoflow.errors import MnemoflowError
from mnemoflow.flows.mcp.replies import (
    AskReply,
    IngestReply,
    KindsReply,
    ReadReply,
    RetrieveReply,
    SearchReply,
    TreeReply,
    TurnReply,
    hit_of,
    read_reply,
    record_of,
)
from mnemoflow.flows.mcp.runs import Runners, relaying
from mnemoflow.graphs.parts import open_run_parts
from mnemoflow.graphs.runner import RunResult
from mnemoflow.logging import get_logger
from mnemoflow.memory.names import validate_namespace
from mnemoflow.nodes import load_builtin_nodes
from mnemoflow.nodes.tme.conversation import load_conversation
from mnemoflow.nodes.tme.session import one_turn_at_a_time
from mnemoflow.redaction import redact_urls
from mnemoflow.settings import Settings

__all__ = ["MAX_LINKS", "MAX_SEARCH_K", "SERVER_NAME", "create_server"]

SERVER_NAME = "mnemoflow"
MAX_SEARCH_K = 100
"""The most hits ``memory_search`` returns."""
MAX_LINKS = 1000
"""The most links ``memory_read`` lists (the store's page limit)."""

INSTRUCTIONS = (
    "Memory with structure for agents. Every tool takes a namespace first (a tenant or project): records are "
    "written and read in it only. comorag_ingest indexes a long text and comorag_ask answers questions about it; "
    "tme_turn keeps a task tree per conversation session; gmemory_retrieve recalls insights for a task; "
    "memory_search and memory_read browse the records. Resources: mnemoflow://{namespace}/kinds and "
    "mnemoflow://{namespace}/records/{id}."
)

Namespace = Annotated[
    str, Field(description="The memory namespace (tenant or project) to work in: 1 to 200 printable characters.")
]
Ctx = Context[Runners, Any]

_log = get_logger("mnemoflow.mcp")


def create_server(settings: Settings) -> MCPServer[Runners]:
    """The server over ``settings``' store and model; its parts open when it starts serving and close when it stops.
    The built-in nodes are registered here; a project's own (``MNEMOFLOW_NODE_MODULES``) by the caller."""
    load_builtin_nodes()

    @asynccontextmanager
    async def lifespan(server: MCPServer[Runners]) -> AsyncIterator[Runners]:
        async with open_run_parts(settings) as parts:  # with the checkpointer: runs get threads, as `mnemoflow run`'s
            runners = Runners(parts)
            _log.info("mcp.start", store=settings.store.backend, model=parts.llm.model)
            try:
                yield runners
            finally:
                await runners.aclose()  # the run records not yet written

    server: MCPServer[Runners] = MCPServer(
        SERVER_NAME, instructions=INSTRUCTIONS, version=version("mnemoflow"), lifespan=lifespan, log_level="WARNING"
    )
    for tool in (comorag_ingest, comorag_ask, tme_turn, tme_tree, gmemory_retrieve, memory_search, memory_read):
        server.add_tool(tool)
    # namespaces and ids are names, not paths: '/' and '..' in them are fine (percent-encoded in the URI)
    names = ResourceSecurity(reject_path_traversal=False, reject_absolute_paths=False)
    as_json: dict[str, Any] = {"mime_type": "application/json", "security": names}
    server.resource("mnemoflow://{namespace}/records/{id}", name="record", **as_json)(record_resource)
    server.resource("mnemoflow://{namespace}/kinds", name="kinds", **as_json)(kinds_resource)
    return server


@contextmanager
def _answered(tool: str) -> Iterator[None]:
    """Turn what a tool raises into a tool error the client reads: a mnemoflow error's or a validation error's
    message, or one line for a bug (whose traceback goes to the server's log, not to the client)."""
    try:
        yield
    except ToolError:
        raise
    except (MnemoflowError, ValidationError) as exc:  # bad input or a refused reply: the message says which
        raise ToolError(redact_urls(str(exc))) from exc
    except Exception as exc:
        _log.exception("mcp.tool_failed", tool=tool)
        raise ToolError(f"{tool} failed unexpectedly ({type(exc).__name__}); the server's log has the details") from exc


async def _run(ctx: Ctx, graph: str, namespace: str, values: dict[str, Any]) -> RunResult:
    """Run ``graph`` on ``values`` in ``namespace``, its progress sent to the calling request."""
    runner = await ctx.request_context.lifespan_context.runner(graph)
    async with relaying(partial(_report, ctx)) as relay:
        return await runner.run(values, namespace=namespace, progress=relay.progress, on_step_end=relay.node_finished)


async def _report(ctx: Ctx, progress: float, message: str) -> None:
    await ctx.report_progress(progress, None, message)


async def comorag_ingest(
    namespace: Namespace,
    book_id: Annotated[str, Field(description="The text's id in the namespace; ask about it with this id.")],
    text: Annotated[str, Field(description="The whole text (a book, a report, a long document).")],
    title: Annotated[str | None, Field(description="Its title; the book id when not given.")] = None,
    *,
    ctx: Ctx,
) -> IngestReply:
    """Index a long text for ComoRAG: chunks, entities and facts, semantic summaries and an episodic timeline.

    Runs the comorag-ingest graph (several model calls per chunk; progress is reported per step and chunk).
    Ingesting the same text again under the same book id changes nothing.
    """
    with _answered("comorag_ingest"):
        validate_namespace(namespace)
        values: dict[str, Any] = {"book_id": book_id, "text": text}
        if title is not None:
            values["title"] = title
        result = await _run(ctx, "comorag-ingest", namespace, values)
        return IngestReply(book_id=book_id, run_id=result.run_id, outputs=result.outputs)


async def comorag_ask(
    namespace: Namespace,
    book_id: Annotated[str, Field(description="The id the text was ingested under (comorag_ingest).")],
    question: Annotated[str, Field(description="A question about the text.")],
    *,
    ctx: Ctx,
) -> AskReply:
    """Answer a question about an ingested text with ComoRAG's probing cycles over its three-layer index.

    Runs the comorag-qa graph: retrieval, an answer attempt, and on an impasse new probes, up to five cycles.
    """
    with _answered("comorag_ask"):
        validate_namespace(namespace)
        result = await _run(ctx, "comorag-qa", namespace, {"book_id": book_id, "question": question})
        return AskReply(answer=str(result.state.get("final_answer") or ""), run_id=result.run_id, outputs=result.outputs)


async def tme_turn(
    namespace: Namespace,
    session: Annotated[str, Field(description="The conversation's id: the same id continues the same task memory.")],
    message: Annotated[str, Field(description="The user's message for this turn.")],
    *,
    ctx: Ctx,
) -> TurnReply:
    """One turn of a conversation with the Task Memory Engine: update the session's task tree, then answer.

    The message is split into a task and steps, each classified (new, update, revert, remove, depend, check) and
    applied to the tree; revisions mark dependent steps stale. Turns of one session run one at a time.
    """
    with _answered("tme_turn"):
        validate_namespace(namespace)
        runners = ctx.request_context.lifespan_context
        values = {"session": session, "utterance": message}
        result = await one_turn_at_a_time(namespace, session, partial(_run, ctx, "tme-turn", namespace, values))
        conversation = await load_conversation(runners.parts.store, namespace, session)
        return TurnReply(
            reply=str(result.state.get("response") or ""),
            not_applied=[str(problem) for problem in result.state.get("errors", [])],
            stale=[str(step) for step in result.state.get("stale", [])],
            tree=conversation.forest.render(),
        )


async def tme_tree(
    namespace: Namespace,
    session: Annotated[str, Field(description="The conversation's id (as given to tme_turn).")],
    *,
    ctx: Ctx,
) -> TreeReply:
    """The task tree of a Task Memory Engine session, as its last turn saved it (no model call)."""
    with _answered("tme_tree"):
        validate_namespace(namespace)
        conversation = await load_conversation(ctx.request_context.lifespan_context.parts.store, namespace, session)
        return TreeReply(session=session, turns=conversation.turns, tree=conversation.forest.render())


async def gmemory_retrieve(
    namespace: Namespace,
    task: Annotated[str, Field(description="The task a team of agents is about to work on.")],
    *,
    ctx: Ctx,
) -> RetrieveReply:
    """Recall G-Memory for a task: insights from similar past tasks, and their condensed trajectories.

    Runs the gmemory-retrieve graph: similar past queries, up to the insights they support, down to the
    key steps of their interactions.
    """
    with _answered("gmemory_retrieve"):
        validate_namespace(namespace)
        result = await _run(ctx, "gmemory-retrieve", namespace, {"task": task})
        return RetrieveReply(run_id=result.run_id, outputs=result.outputs)


async def memory_search(
    namespace: Namespace,
    query: Annotated[str, Field(description="Plain words; records whose text matches any of them, best first.")],
    kinds: Annotated[list[str] | None, Field(description="Only records of these kinds (mnemoflow://{namespace}/kinds).")] = None,
    k: Annotated[int, Field(ge=1, le=MAX_SEARCH_K, description="How many hits at most.")] = 10,
    *,
    ctx: Ctx,
) -> SearchReply:
    """Keyword search (BM25) over the text of a namespace's memory records; no model call."""
    with _answered("memory_search"):
        validate_namespace(namespace)
        store = ctx.request_context.lifespan_context.parts.store
        hits = await store.keyword_search(namespace, query, k=k, kinds=kinds)
        return SearchReply(hits=[hit_of(hit) for hit in hits])


async def memory_read(
    namespace: Namespace,
    id: Annotated[str, Field(description="A record's id (from memory_search, or a link of another record).")],
    links: Annotated[int, Field(ge=1, le=MAX_LINKS, description="How many of its relationships to list at most.")] = 20,
    *,
    ctx: Ctx,
) -> ReadReply:
    """One memory record in full, with its relationships to other records; no model call."""
    with _answered("memory_read"):
        validate_namespace(namespace)
        page = await ctx.request_context.lifespan_context.parts.store.neighbours(namespace, id, limit=links)
        if page.node is None:
            raise ToolError(f"no record {id!r} in namespace {namespace!r}")
        return read_reply(page)


async def record_resource(namespace: str, id: str, ctx: Ctx) -> str:
    """A memory record (as memory_read's ``record``)."""
    store = ctx.request_context.lifespan_context.parts.store
    with _read_errors():
        [node] = await store.get_nodes(validate_namespace(namespace), [id])
    if node is None:
        raise ResourceNotFoundError(f"no record {id!r} in namespace {namespace!r}")
    return record_of(node).model_dump_json()


async def kinds_resource(namespace: str, ctx: Ctx) -> str:
    """How many records of each kind a namespace holds."""
    store = ctx.request_context.lifespan_context.parts.store
    with _read_errors():
        kinds = await store.count_nodes_by_kind(validate_namespace(namespace))
    return KindsReply(namespace=namespace, kinds=kinds).model_dump_json()


@contextmanager
def _read_errors() -> Iterator[None]:
    """A mnemoflow error in a resource read becomes the read's error, with its message."""
    try:
        yield
    except MnemoflowError as exc:
        raise ResourceError(redact_urls(str(exc))) from exc
