"""``mnemoflow ingest``: index texts for a memory mechanism."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mnemoflow.cli.common import NamespaceOption, StoreOption, fail, load_graph_or_fail, load_settings, progress_bar, with_parts

if TYPE_CHECKING:
    from mnemoflow.graphs.parts import RunParts
    from mnemoflow.graphs.runner import RunResult

__all__ = ["app"]

app = typer.Typer(
    help="Index texts for a memory mechanism.", epilog="Example: mnemoflow ingest comorag book.txt --book my-book", no_args_is_help=True
)


class Reduction(StrEnum):
    """How the semantic layer reduces the chunks' vectors before clustering them."""

    pca = "pca"
    umap = "umap"


@app.command("comorag", epilog="Example: mnemoflow ingest comorag book.txt --book my-book --title 'My Book'")
def comorag(
    file: Annotated[str, typer.Argument(help="A UTF-8 text file: the book.")],
    book: Annotated[str, typer.Option("--book", help="The book's id within the namespace.")],
    title: Annotated[str | None, typer.Option(help="The book's title; defaults to the file name.")] = None,
    kg: Annotated[bool, typer.Option("--kg/--no-kg", help="Extract entities and facts (2 model calls per chunk).")] = True,
    chunk_tokens: Annotated[int, typer.Option(help="Tokens per chunk at most.")] = 512,
    reduction: Annotated[
        Reduction | None,
        typer.Option(help="Reduction before the semantic clustering (default: the graph's, pca); umap needs the umap extra."),
    ] = None,
    store: StoreOption = None,
    namespace: NamespaceOption = None,
) -> None:
    """Index a book for ComoRAG (chunks, knowledge graph, semantic and episodic summaries); safe to run again."""
    path = Path(file)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {file}: {exc}")
    values = {"book_id": book, "title": title or path.stem, "text": text, "kg": kg, "chunk_tokens": chunk_tokens}
    settings = load_settings(store, namespace)
    loaded = load_graph_or_fail("comorag-ingest", settings)
    if reduction is not None:
        from mnemoflow.errors import MnemoflowError
        from mnemoflow.graphs import with_node_config
        from mnemoflow.nodes.comorag.clustering import require_umap

        try:
            if reduction is Reduction.umap:
                require_umap()  # before the extraction's model calls, not after them
            loaded = with_node_config(loaded, {"semantic": {"reduction": reduction.value}})
        except MnemoflowError as exc:
            fail(str(exc))

    async def work(parts: RunParts) -> RunResult:
        from mnemoflow.graphs import GraphRunner

        with progress_bar() as progress:
            async with GraphRunner.from_parts(loaded, parts, progress=progress) as runner:
                return await runner.run(values, namespace=settings.namespace)

    result = with_parts(settings, work, checkpointer=True)
    state, usage = result.state, result.llm_usage
    levels = state.get("semantic_levels", [])
    typer.echo(f"book {book!r}: {len(state.get('chunk_ids', []))} chunks (window {state.get('window')})")
    if kg:
        typer.echo(f"  entities: {len(state.get('entity_ids', []))}, facts: {state.get('facts')}, synonym links: {state.get('synonyms')}")
    typer.echo(f"  semantic summaries: {sum(levels)} ({', '.join(f'level {i}: {n}' for i, n in enumerate(levels, 1)) or 'none'})")
    typer.echo(f"  episodic summaries: {state.get('episodes')}")
    typer.echo(f"  LLM calls: {result.llm_calls} ({usage.get('cache_hits', 0)} from the cache, {usage.get('requests', 0)} requests)")
    typer.echo(result.summary(), err=True)
