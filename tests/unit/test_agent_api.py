"""The agent API at the top level, exactly as users write it: llmkit.Agent, llmkit.tool, llmkit.mcp_tools."""

from __future__ import annotations

import subprocess
import sys

import llmkit


def test_agent_tool_and_mcp_tools_are_top_level_names() -> None:
    from llmkit.agent import Agent, tool
    from llmkit.agent.mcp_client import mcp_tools

    assert llmkit.Agent is Agent and llmkit.tool is tool and llmkit.mcp_tools is mcp_tools
    assert {"Agent", "tool", "mcp_tools"} <= set(dir(llmkit)) == set(llmkit.__all__)


def test_the_decorator_works_from_the_top_level() -> None:
    @llmkit.tool(confirm=True, timeout=10)
    def distance_ly(star: str) -> float:
        """Distance to a star.

        Args:
            star: Its name.
        """
        return 25.0

    made = distance_ly.__llmkit_tool__
    assert made.confirm and made.timeout == 10 and made.parameters["required"] == ["star"]
    assert distance_ly("Vega") == 25.0


def test_importing_llmkit_does_not_import_the_agent_or_mcp() -> None:
    code = (
        "import sys, llmkit; print('llmkit.agent' in sys.modules, 'mcp' in sys.modules); "
        "llmkit.Agent; print('llmkit.agent.loop' in sys.modules, 'mcp' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.split() == ["False", "False", "True", "False"]
