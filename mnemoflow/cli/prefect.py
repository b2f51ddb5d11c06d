"""``mnemoflow prefect``: prepare a Prefect server for mnemoflow's flows."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer

from mnemoflow.cli.common import fail, load_settings, run_async

__all__ = ["app"]

app = typer.Typer(help="Prepare a Prefect server for mnemoflow's flows.", no_args_is_help=True)

NO_SERVER = (
    "PREFECT_API_URL is not set: mnemoflow prefect setup would prepare a temporary server that stops when it exits. "
    "Start one (prefect server start) and export PREFECT_API_URL=http://127.0.0.1:4200/api, or point it at yours."
)


@app.command(
    "setup",
    epilog="Example: mnemoflow prefect setup --silence 120",
)
def setup(
    pool: Annotated[str, typer.Option(help="Name of the process work pool prefect.yaml deploys to.")] = "mnemoflow",
    silence: Annotated[float, typer.Option(help="Seconds without a heartbeat after which a run is rescheduled.")] = 90.0,
    model_slots: Annotated[
        int | None, typer.Option(help="Create or resize the limit MNEMOFLOW_PREFECT_MODEL_LIMIT names to this many requests.")
    ] = None,
) -> None:
    """Create the work pool, the automation that reschedules runs whose worker died and, with --model-slots, the
    shared model limit, on the server PREFECT_API_URL names; safe to run again."""
    from prefect.settings import PREFECT_API_URL

    from mnemoflow.flows.setup import ensure_model_limit, setup_prefect

    if not PREFECT_API_URL.value():  # else Prefect starts a temporary server, and what setup makes goes with it
        fail(NO_SERVER)
    settings = load_settings()
    limit = settings.prefect.model_limit
    if model_slots is not None and limit is None:
        fail("--model-slots needs MNEMOFLOW_PREFECT_MODEL_LIMIT: the name of the limit")

    async def work() -> list[str]:
        done = await setup_prefect(pool, silence=timedelta(seconds=silence))
        if model_slots is not None and limit is not None:
            await ensure_model_limit(limit, model_slots)
            done.append(f"the model limit {limit!r} allows {model_slots} requests at once")
        return done

    for line in run_async(work()):
        typer.echo(line)
