"""Receiving webhooks, the pure part: the hooks file, the providers' signature schemes, payload to parameters.

No HTTP and no Prefect here: the server verifies a request with :func:`verify`, asks :func:`accepts` whether the
hook wants it, and starts the hook's deployment with :func:`map_parameters`' result.
"""

from mnemoflow.flows.server.hooks.config import HookSecrets, HooksFile, HookSpec, Provider, load_hooks, read_secrets
from mnemoflow.flows.server.hooks.mapping import accepts, map_parameters
from mnemoflow.flows.server.hooks.providers import (
    MAX_DELIVERY_ID,
    Delivery,
    HookRejected,
    sign_generic,
    sign_github,
    sign_slack,
    verify,
)

__all__ = [
    "MAX_DELIVERY_ID",
    "Delivery",
    "HookRejected",
    "HookSecrets",
    "HookSpec",
    "HooksFile",
    "Provider",
    "accepts",
    "load_hooks",
    "map_parameters",
    "read_secrets",
    "sign_generic",
    "sign_github",
    "sign_slack",
    "verify",
]
