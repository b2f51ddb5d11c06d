"""Create a flow run of a Prefect deployment through the Prefect API (``PREFECT_API_URL``).

Prefect's own webhooks exist only in Prefect Cloud; the open-source server takes
``POST /deployments/{id}/create_flow_run``, which the Prefect client calls here. The idempotency key makes
a retried trigger return the run the first one created, so a delivery never starts two runs.
"""

from __future__ import annotations

from typing import Any

import httpx
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL

from mnemoflow.errors import MnemoflowError
from mnemoflow.redaction import redact_urls

__all__ = ["TriggerRefused", "TriggerUnavailable", "create_flow_run"]


class TriggerUnavailable(MnemoflowError):
    """Prefect cannot take the run now (unreachable, failing, or the deployment is not there yet): retry later."""

    code = "trigger-unavailable"


class TriggerRefused(MnemoflowError):
    """Prefect refused the run's parameters; retrying the same delivery will not help."""

    code = "trigger-refused"


def _api_url() -> str:
    return redact_urls(PREFECT_API_URL.value() or "(PREFECT_API_URL is not set)")


async def create_flow_run(deployment: str, parameters: dict[str, Any], *, idempotency_key: str, tags: list[str]) -> str:
    """Create a flow run of ``deployment`` ("flow/deployment") and return its id."""
    if not PREFECT_API_URL.value():
        raise TriggerUnavailable("PREFECT_API_URL is not set: point it at the Prefect server that holds the deployments")
    try:
        async with get_client() as client:
            found = await client.read_deployment_by_name(deployment)
            run = await client.create_flow_run_from_deployment(
                found.id, parameters=parameters, idempotency_key=idempotency_key, tags=tags
            )
    except ObjectNotFound as exc:
        raise TriggerUnavailable(
            f"deployment {deployment!r} is not on the Prefect server at {_api_url()}: deploy it (prefect deploy --all)"
        ) from exc
    except httpx.HTTPStatusError as exc:
        detail = redact_urls(exc.response.text[:500])
        if exc.response.status_code in (400, 409, 422):
            raise TriggerRefused(f"Prefect refused the run of {deployment!r}: {detail}") from exc
        raise TriggerUnavailable(f"Prefect answered {exc.response.status_code} for {deployment!r}: {detail}") from exc
    except RecursionError as exc:
        raise TriggerRefused(f"the parameters of the run of {deployment!r} are nested too deeply to send") from exc
    except (httpx.TransportError, OSError, RuntimeError) as exc:
        raise TriggerUnavailable(
            f"the Prefect API at {_api_url()} is unreachable: {type(exc).__name__}: {redact_urls(str(exc))}"
        ) from exc
    except Exception as exc:  # any other failure is a reply we cannot read (an HTML page, unexpected fields)
        raise TriggerUnavailable(
            f"the Prefect API at {_api_url()} gave a reply that could not be read: {type(exc).__name__}: {redact_urls(str(exc))[:500]}"
        ) from exc
    return str(run.id)
