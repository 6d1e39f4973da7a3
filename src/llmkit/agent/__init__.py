"""Agents: a model that calls your Python functions (and MCP servers' tools) to answer a task."""

from llmkit.agent.functions import Tool, ToolError, tool
from llmkit.agent.loop import Agent, AgentResult, Step

__all__ = ["Agent", "AgentResult", "Step", "Tool", "ToolError", "tool"]
