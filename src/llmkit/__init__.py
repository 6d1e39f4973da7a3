"""llmkit: a private, local workbench for open-weight language models.

import llmkit
m = llmkit.load("smollm2")
m.chat("What is the capital of France?")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from llmkit.model import Model, load
    from llmkit.params import SamplingParams
    from llmkit.store.store import ModelStore

# The public API, imported on first use so that `import llmkit` (and `llmkit --help`) does not
# pay for engines it will not use.
_LAZY = {
    "load": "llmkit.model",
    "Model": "llmkit.model",
    "SamplingParams": "llmkit.params",
    "ModelStore": "llmkit.store.store",
}

__all__ = ["Model", "ModelStore", "SamplingParams", "__version__", "load"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'llmkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The public API, not this module's own helpers (TYPE_CHECKING, Any, annotations...).
    return sorted(__all__)
