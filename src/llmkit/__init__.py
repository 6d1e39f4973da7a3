"""llmkit: a private, local workbench for open-weight language models.

import llmkit
m = llmkit.load("smollm2")
m.chat("What is the capital of France?")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from llmkit.params import SamplingParams
    from llmkit.model import Model, load
    from llmkit.store.store import ModelStore

_LAZY = {
    "load": "llmkit.model",
    "Model": "llmkit.model",
    "SamplingParams": "llmkit.params",
    "ModelStore": "llmkit.store.store",
}


def __getattr__(name: str) -> Any:
    # Lazy, so `import llmkit` (and `llmkit --help`) does not pay for engines it will not use.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'llmkit' has no attribute {name!r}")


__all__ = ["Model", "ModelStore", "SamplingParams", "__version__", "load"]
