"""Text embeddings from a served model, through its engine's `embed` (mean-pooled hidden states).

Chat models are not trained as embedders, so these vectors are fine for trying an API out and for
rough similarity, not a substitute for a dedicated embedding model.
"""

from __future__ import annotations

from typing import Any


class Embedder:
    """Turns text into the model's tokens (as raw completion does) and asks the engine for a vector."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def embed(self, text: str) -> tuple[list[float], int]:
        """A unit-length vector for the text, and how many tokens it took."""
        tokens = len(self.model.raw_prompt_ids(text))
        # An empty input is embedded as the engine's stand-in (BOS): one token.
        return self.model.embed(text), max(tokens, 1)

    def close(self) -> None:
        pass  # the engine owns its embedding context and frees it with the model
