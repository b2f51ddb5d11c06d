"""``mnemoflow demo``: the main job on the embedded defaults."""

from __future__ import annotations

import json
from importlib import resources
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mnemoflow.cli.common import StoreOption, load_settings, progress_bar, with_parts

if TYPE_CHECKING:
    from mnemoflow.graphs.parts import RunParts
    from mnemoflow.graphs.runner import RunResult

__all__ = ["demo"]

BOOK_ID = "the-salt-road"


def demo(
    namespace: Annotated[str, typer.Option(help="Namespace the demo book and its workspaces are stored in.")] = "demo",
    store: StoreOption = None,
) -> None:
    """The main job: index a bundled story with ComoRAG, then answer three questions about it.

    Uses the model configured by OPENAI_BASE_URL / OPENAI_API_KEY, or the offline stand-in when none is.
    """
    data = resources.files("mnemoflow.nodes.comorag").joinpath("data")
    story = data.joinpath("the-salt-road.txt").read_text(encoding="utf-8")
    questions: list[dict[str, Any]] = json.loads(data.joinpath("questions.json").read_text(encoding="utf-8"))
    title = story.split("\n", 1)[0].strip()
    settings = load_settings(store, namespace)

    async def work(parts: RunParts) -> tuple[RunResult, list[tuple[dict[str, Any], RunResult]]]:
        from mnemoflow.graphs import GraphRunner, load_graph

        with progress_bar() as progress:
            async with GraphRunner.from_parts(load_graph("comorag-ingest"), parts, progress=progress) as ingest:
                indexed = await ingest.run({"book_id": BOOK_ID, "title": title, "text": story}, namespace=settings.namespace)
            answers = []
            async with GraphRunner.from_parts(load_graph("comorag-qa"), parts) as qa:
                for number, item in enumerate(questions):
                    progress(f"answering question {number + 1} of {len(questions)}", number, len(questions))
                    values = {"question": item["question"], "book_id": BOOK_ID, "options": item.get("options", {})}
                    answers.append((item, await qa.run(values, namespace=settings.namespace)))
        return indexed, answers

    indexed, answers = with_parts(settings, work, checkpointer=True)
    model = "the offline model (no OPENAI_BASE_URL or OPENAI_API_KEY set)" if indexed.offline_model else settings.llm.model
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
        typer.echo(f"   {final.get('cycle', 0)} cycles, {max(probes, 0)} probes, {result.llm_calls} LLM calls, {result.tokens} tokens")
        typer.echo(f"   workspace: mnemoflow comorag show {final.get('question_id')} --namespace {settings.namespace}")
    if indexed.offline_model:
        typer.echo("\nThe offline model is a deterministic stand-in, not a model: configure one to see real answers.")
