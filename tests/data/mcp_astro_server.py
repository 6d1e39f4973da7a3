"""A tiny MCP server for the tests: `python mcp_astro_server.py` (stdio) or `... http PORT`."""

from __future__ import annotations

import os
import sys
import time

from mcp.server.mcpserver import MCPServer

server = MCPServer("astro-test")

DISTANCES_LY = {"vega": 25.0, "sirius": 8.6}


@server.tool()
def distance_ly(star: str) -> float:
    """Distance from the Sun to a bright star, in light-years."""
    return DISTANCES_LY[star.strip().lower()]


@server.tool()
def slow(seconds: float) -> str:
    """Sleep for a while, then answer."""
    time.sleep(seconds)
    return "done"


@server.tool()
def crash() -> str:
    """End the server process at once, as a server that dies mid-run does."""
    os._exit(3)


if __name__ == "__main__":
    if sys.argv[1:2] == ["http"]:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run()
