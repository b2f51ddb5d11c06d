"""``mnemoflow demo``: the main job on the embedded defaults."""

from __future__ import annotations

import json
from importlib import resources
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mnemoflow.cli.common import StoreOption, load_settings, model_for, progress_bar, with_parts
from mnemoflow.settings import LLMSettings, Settings, load_group

if TYPE_CHECKING:
    from mnemoflow.graphs.loader import LoadedGraph
    from mnemoflow.graphs.parts import RunParts
    from mnemoflow.graphs.runner import RunResult

__all__ = ["demo"]

BOOK_ID = "the-salt-road"


def demo(
    namespace: Annotated[str, typer.Option(help="Namespace the demo book and its workspaces are stored in.")] = "demo",
    store: StoreOption = None,
    offline: Annotated[
        bool, typer.Option("--offline", help="Use the deterministic offline stand-in instead of a model.")
    ] = False,
) -> None:
    """The main job: index a bundled story with ComoRAG, then answer three questions about it.

    Uses the model of OPENAI_BASE_URL / OPENAI_API_KEY, else the local model server (started for the demo when it is
    not running); the offline stand-in only when asked (--offline or MNEMOFLOW_LLM_OFFLINE=1).
    """
    data = resources.files("mnemoflow.nodes.comorag").joinpath("data")
    story = data.joinpath("the-salt-road.txt").read_text(encoding="utf-8")
    questions: list[dict[str, Any]] = json.loads(data.joinpath("questions.json").read_text(encoding="utf-8"))
    title = story.split("\n", 1)[0].strip()
    settings = _demo_settings(load_settings(store, namespace), offline=offline)
    with model_for(settings, "the demo", hint="or run the demo on the offline stand-in: mnemoflow demo --offline") as endpoint:
        small = endpoint.kind == "local"

        async def work(parts: RunParts) -> tuple[RunResult, list[tuple[dict[str, Any], RunResult]]]:
            from mnemoflow.graphs import GraphRunner, load_graph, with_node_config
            from mnemoflow.graphs.budgets import SMALL_MODEL_BUDGETS, SMALL_MODEL_INPUTS

            def graph(name: str) -> LoadedGraph:
                return with_node_config(load_graph(name), SMALL_MODEL_BUDGETS[name]) if small else load_graph(name)

            def inputs(name: str) -> dict[str, Any]:
                return SMALL_MODEL_INPUTS[name] if small else {}

            with progress_bar() as progress:
                async with GraphRunner.from_parts(graph("comorag-ingest"), parts, progress=progress) as ingest:
                    book = {"book_id": BOOK_ID, "title": title, "text": story, **inputs("comorag-ingest")}
                    indexed = await ingest.run(book, namespace=settings.namespace)
                answers = []
                async with GraphRunner.from_parts(graph("comorag-qa"), parts) as qa:
                    for number, item in enumerate(questions):
                        progress(f"answering question {number + 1} of {len(questions)}", number, len(questions))
                        values = {"question": item["question"], "book_id": BOOK_ID, "options": item.get("options", {})}
                        answers.append((item, await qa.run({**values, **inputs("comorag-qa")}, namespace=settings.namespace)))
            return indexed, answers

        indexed, answers = with_parts(settings, work, checkpointer=True)
    state = indexed.state
    typer.echo(
        f"Indexed {title!r} in the {settings.store.backend} store (namespace {settings.namespace!r}) with "
        f"{endpoint.describe()}, embeddings by {settings.embedding.provider}:"
    )
    graph = "no knowledge graph" if state.get("kg") is False else f"{len(state.get('entity_ids', []))} entities, {state.get('facts')} facts"
    typer.echo(
        f"  {len(state.get('chunk_ids', []))} chunks, {graph}, "
        f"{sum(state.get('semantic_levels', []))} semantic and {state.get('episodes')} episodic summaries; "
        f"{indexed.llm_calls} LLM calls ({indexed.llm_usage.get('cache_hits', 0)} from the cache)"
    )
    for number, (item, result) in enumerate(answers, 1):
        final = result.state
        probes = len(final.get("probe_history", [])) - (1 if final.get("probe_history") else 0)
        typer.echo(f"\n{number}. {item['question']}")
        for letter, option in item.get("options", {}).items():
            typer.echo(f"     {letter}) {option}")
        typer.echo(f"   answer:   {final.get('final_answer')}   ({final.get('status')})")
        typer.echo(f"   expected: {item['answer']}")
        typer.echo(f"   {final.get('cycle', 0)} cycles, {max(probes, 0)} probes, {result.llm_calls} LLM calls, {result.tokens} tokens")
        typer.echo(f"   workspace: mnemoflow comorag show {final.get('question_id')} --namespace {settings.namespace}")
    if endpoint.kind == "offline":
        typer.echo("\nThe offline model is a deterministic stand-in, not a model: drop --offline (or MNEMOFLOW_LLM_OFFLINE) to see real answers.")
    elif endpoint.kind == "local":
        typer.echo(
            f"\n{endpoint.model} is a 135M-parameter model: it shows the pipeline on a real model (with budgets fitted "
            "to it: no knowledge graph, shorter summaries and contexts, one probing cycle), and reads badly. For "
            "answers worth reading, point OPENAI_BASE_URL (and OPENAI_API_KEY) at OpenAI or any OpenAI-compatible "
            "server (Ollama, vLLM, llama.cpp's llama-server) and set MNEMOFLOW_LLM_MODEL; see the README's Models."
        )


def _demo_settings(settings: Settings, *, offline: bool) -> Settings:
    """The settings with ``--offline`` applied."""
    return settings.model_copy(update={"llm": load_group(LLMSettings, offline=True)}) if offline else settings
