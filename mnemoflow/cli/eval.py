"""``mnemoflow eval``: each mechanism against its baseline, on the configured model (the local one by default)."""

from __future__ import annotations

import tempfile
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mnemoflow.cli.common import fail, load_settings, model_for, progress_bar, run_async
from mnemoflow.errors import MnemoflowError

if TYPE_CHECKING:
    from mnemoflow.evaluation.harness import Evaluation, Item
    from mnemoflow.settings import Settings

__all__ = ["evaluate_command"]

RESULTS = Path("bench") / "results"


class Mechanism(StrEnum):
    all = "all"
    comorag = "comorag"
    tme = "tme"
    gmemory = "gmemory"
    experepair = "experepair"
    l2mac = "l2mac"


def evaluate_command(
    mechanism: Annotated[Mechanism, typer.Argument(help="The mechanism to evaluate, or all five.", show_default=False)],
    quick: Annotated[bool, typer.Option("--quick", help="The first 3 items of each data set only.")] = False,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many items (the first ones).")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Where to write the result (JSON, and its table beside it as .md); one mechanism only.")
    ] = None,
    book: Annotated[Path | None, typer.Option(help="ComoRAG: the text to index instead of the bundled story.")] = None,
    questions: Annotated[Path | None, typer.Option(help="ComoRAG: the questions file instead of the bundled one.")] = None,
    data: Annotated[
        Path | None, typer.Option(help="Another data file or folder than the bundled one (TME scenarios, G-Memory tasks, repositories, specifications).")
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="ExpeRepair: run the first N issues of each repository in the seed phase (static prompts, memory still recorded); default 1.",
        ),
    ] = None,
    systems: Annotated[
        str | None, typer.Option(help="Only these systems, comma-separated (default: the mechanism's, without optional ones such as comorag_umap); one mechanism only.")
    ] = None,
) -> None:
    """Run a mechanism and its baseline on the same model, data and budgets; print the table and write
    bench/results/eval-MECHANISM.json (and .md).

    The model is that of OPENAI_BASE_URL / OPENAI_API_KEY / MNEMOFLOW_LLM_MODEL, else the local server (started for
    the evaluation when it is not running). Memory goes to a throwaway SQLite store. Every data file is checked
    before the first model call.
    """
    from mnemoflow.evaluation import MECHANISMS, evaluation_class
    from mnemoflow.evaluation.harness import EvalOptions

    names = list(MECHANISMS) if mechanism is Mechanism.all else [mechanism.value]
    if mechanism is Mechanism.all and (out or book or questions or data or systems):
        fail("--out, --book, --questions, --data and --systems name one mechanism's files or systems: give a mechanism, not all")
    if (book or questions) and mechanism is not Mechanism.comorag:
        fail("--book and --questions are ComoRAG's: use --data for the other mechanisms")
    if data and mechanism is Mechanism.comorag:
        fail("ComoRAG reads --book and --questions, not --data")
    if seed is not None and mechanism is not Mechanism.experepair:
        fail("--seed is ExpeRepair's: give experepair")
    chosen = tuple(name.strip() for name in (systems or "").split(",") if name.strip())
    options = EvalOptions(quick=quick, limit=limit, book=book, questions=questions, data=data, seed=seed, systems=chosen)
    planned: list[tuple[Evaluation, list[Item]]] = []
    for name in names:
        try:
            evaluation = evaluation_class(name)(options)
            planned.append((evaluation, evaluation.select(evaluation.load())))
        except MnemoflowError as exc:
            fail(str(exc))
    settings = load_settings()
    with model_for(settings, "the evaluation") as endpoint:
        typer.echo(f"Evaluating on {endpoint.describe()}; memory in a throwaway SQLite store.", err=True)
        for evaluation, items in planned:
            result = _run(evaluation, items, settings)
            _report(result, out or RESULTS / f"eval-{evaluation.mechanism}.json")


def _run(evaluation: Evaluation, items: list[Item], settings: Settings) -> dict[str, Any]:
    from mnemoflow.evaluation.harness import evaluate

    with tempfile.TemporaryDirectory(prefix=f"mnemoflow-eval-{evaluation.mechanism}-") as workdir, progress_bar() as progress:
        return run_async(evaluate(evaluation, items, settings, Path(workdir), progress=progress))


def _report(result: dict[str, Any], path: Path) -> None:
    from mnemoflow.evaluation.report import markdown_table, write_result

    try:
        table = write_result(result, path)
    except OSError as exc:
        fail(f"cannot write the result to {path}: {exc}")
    typer.echo(markdown_table(result) + "\n")
    typer.echo(f"written to {path} and {table}", err=True)
