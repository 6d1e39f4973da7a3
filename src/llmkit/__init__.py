"""llmkit: a private, local workbench for open-weight language models.

import llmkit
llmkit.pull("gemma3-base")  # a built-in, or hf:OWNER/REPO[:QUANT]
m = llmkit.load("smollm2")
m.chat("What is the capital of France?")

agent = llmkit.Agent("smollm2", tools=[my_function])
agent.run("A task my_function helps with").answer
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from llmkit.agent.functions import tool
    from llmkit.agent.loop import Agent
    from llmkit.agent.mcp_client import mcp_tools
    from llmkit.model import Model, load
    from llmkit.params import SamplingParams
    from llmkit.store.hub import pull
    from llmkit.store.store import ModelStore

# The public API, imported on first use so that `import llmkit` (and `llmkit --help`) does not
# pay for engines it will not use.
_LAZY = {
    "load": "llmkit.model",
    "Model": "llmkit.model",
    "SamplingParams": "llmkit.params",
    "ModelStore": "llmkit.store.store",
    "pull": "llmkit.store.hub",
    "Agent": "llmkit.agent.loop",
    "tool": "llmkit.agent.functions",
    "mcp_tools": "llmkit.agent.mcp_client",
}

__all__ = [
    "Agent",
    "Model",
    "ModelStore",
    "SamplingParams",
    "__version__",
    "load",
    "mcp_tools",
    "pull",
    "tool",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'llmkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The public API, not this module's own helpers (TYPE_CHECKING, Any, annotations...).
    return sorted(__all__)
