"""Tools from real MCP servers (tests/data/mcp_astro_server.py), over stdio and streamable HTTP."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.helpers.cli import run_cli
from tests.unit.test_agent import agent_with, call_text

import llmkit
from llmkit.agent.functions import ToolError, call_tool
from llmkit.agent.mcp_client import McpError

SERVER = Path(__file__).parents[1] / "data" / "mcp_astro_server.py"
COMMAND = f"python {SERVER}"


@pytest.fixture(scope="module")
def stdio_tools():
    with llmkit.mcp_tools(COMMAND, tool_timeout=3) as tools:
        yield {tool.name: tool for tool in tools}


def test_a_stdio_server_s_tools_are_llmkit_tools(stdio_tools) -> None:
    distance = stdio_tools["distance_ly"]
    assert set(stdio_tools) == {"distance_ly", "slow", "crash"}
    assert distance.description == "Distance from the Sun to a bright star, in light-years."
    assert distance.parameters["required"] == ["star"] and "title" not in distance.parameters
    assert call_tool(distance, {"star": "Vega"}) == "25.0"
    # The server's error and a call that outlives its timeout are observations, not crashes.
    with pytest.raises(ToolError, match="raised McpToolFailed: Error executing tool"):
        call_tool(distance, {"star": "Nowhere"})
    started = time.monotonic()
    with pytest.raises(ToolError, match="did not finish within 3 seconds"):
        call_tool(stdio_tools["slow"], {"seconds": 30})
    assert time.monotonic() - started < 6


def test_the_loop_calls_an_mcp_tool(stdio_tools) -> None:
    replies = [
        call_text("distance_ly", {"star": "Sirius"}),
        call_text("final_answer", {"answer": "8.6 light-years"}),
    ]
    agent = agent_with(lambda prompt: replies, [stdio_tools["distance_ly"]])
    result = agent.run("How far is Sirius?")
    assert result.steps[0].tool == "distance_ly" and result.steps[0].result == "8.6"
    assert result.answer == "8.6 light-years" and result.stopped == "answer"


def test_a_server_that_dies_mid_run_is_an_observation_and_later_calls_fail_fast() -> None:
    tools = llmkit.mcp_tools(COMMAND, tool_timeout=5)
    named = {tool.name: tool for tool in tools}
    started = time.monotonic()
    with pytest.raises(ToolError, match="crash raised McpToolFailed: the MCP server failed"):
        call_tool(named["crash"], {})
    with pytest.raises(ToolError, match="distance_ly raised McpToolFailed"):
        call_tool(named["distance_ly"], {"star": "Vega"})
    tools.close()
    tools.close()  # twice is harmless
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        ("no-such-command-here", "could not be used: FileNotFoundError"),
        (f"{sys.executable} -c \"import sys; sys.exit('bad config')\"", "(it said: bad config)"),
        ("http://127.0.0.1:9/mcp", "could not be used: ConnectError"),
    ],
)
def test_a_server_that_fails_to_start_is_one_sentence(server: str, expected: str) -> None:
    started = time.monotonic()
    with pytest.raises(McpError, match=r"The MCP server .* could not be used") as caught:
        llmkit.mcp_tools(server, timeout=20)
    assert expected in str(caught.value)
    assert time.monotonic() - started < 20


def test_a_server_that_never_answers_times_out() -> None:
    started = time.monotonic()
    with pytest.raises(McpError, match="did not start within 2 seconds"):
        llmkit.mcp_tools(f'{sys.executable} -c "import time; time.sleep(60)"', timeout=2)
    assert time.monotonic() - started < 15


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_streamable_http_server_s_tools() -> None:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, str(SERVER), "http", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        with llmkit.mcp_tools(f"http://127.0.0.1:{port}/mcp") as tools:
            distance = next(tool for tool in tools if tool.name == "distance_ly")
            assert call_tool(distance, {"star": "vega"}) == "25.0"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_cli_uses_an_mcp_server(builtin_model_path) -> None:
    result = run_cli(
        "agent", "smollm2", "--mcp", COMMAND, "--max-steps", "1", "--json",
        "How far is Vega in light-years? Use distance_ly.",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    trace = json.loads(result.stdout)
    assert trace["steps"][0]["tool"] in ("distance_ly", "slow", "crash")
    assert trace["steps"][0]["error"] is None or "raised" in trace["steps"][0]["error"]


def test_the_cli_says_when_an_mcp_server_does_not_start() -> None:
    result = run_cli("agent", "smollm2", "--mcp", "no-such-command-here", "task")
    assert result.returncode != 0
    assert "The MCP server 'no-such-command-here' could not be used" in result.stderr
    assert "Traceback" not in result.stderr
