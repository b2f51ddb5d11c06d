"""The MCP server of ``mnemoflow mcp``: mnemoflow's memory as tools and resources for MCP clients.

``create_server(settings)`` builds the server (tools, resources, and the parts it opens when it starts);
``http_app(server, settings, host=...)`` wraps it for streamable HTTP with the host check and the token guard;
``check_bind(host, settings)`` refuses to listen beyond loopback without a token. The SDK loads when first used.
"""

import typing

from mnemoflow import lazy

if typing.TYPE_CHECKING:
    from mnemoflow.flows.mcp.access import check_bind
    from mnemoflow.flows.mcp.http import MCP_PATH, http_app
    from mnemoflow.flows.mcp.server import SERVER_NAME, create_server

__getattr__, __dir__ = lazy.members(
    __name__,
    {
        "MCP_PATH": "mnemoflow.flows.mcp.http",
        "SERVER_NAME": "mnemoflow.flows.mcp.server",
        "check_bind": "mnemoflow.flows.mcp.access",
        "create_server": "mnemoflow.flows.mcp.server",
        "http_app": "mnemoflow.flows.mcp.http",
    },
)

__all__ = ["MCP_PATH", "SERVER_NAME", "check_bind", "create_server", "http_app"]
