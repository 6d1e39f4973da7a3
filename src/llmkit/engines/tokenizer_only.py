"""A Hugging Face model's vocabulary without its weights: for a server whose generation runs elsewhere.

`llmkit serve --engine-url` / `--engine vllm` render and tokenize here and generate on an engine
server. For a Hugging Face folder that only needs the tokenizer and the model's configuration,
not tens of gigabytes of weights: the model is built on PyTorch's `meta` device (shapes, no data),
so the tokenizer facts (output width, end-of-generation ids) are read exactly as the transformers
engine reads them, and nothing can be evaluated.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, NoReturn

import numpy as np

from llmkit.engines.transformers import TransformersEngine
from llmkit.errors import InvalidParameterError


class TokenizerOnlyEngine(TransformersEngine):
    name = "tokenizer"

    def _load_model(
        self, transformers: Any, folder: str, dtype: Any, load_args: dict[str, Any]
    ) -> Any:
        torch = self.torch
        config = transformers.AutoConfig.from_pretrained(folder, **load_args)
        with torch.device("meta"):
            model = transformers.AutoModelForCausalLM.from_config(config)
        # The end-of-turn ids many chat models list only here; without the file, from_config's stands.
        with contextlib.suppress(OSError):
            model.generation_config = transformers.GenerationConfig.from_pretrained(folder)
        return model

    def _refuse(self) -> NoReturn:
        raise InvalidParameterError(
            "This model generates on an engine server; only its tokenizer is loaded here."
        )

    @property
    def context(self) -> Any:
        self._refuse()

    def new_context(self, sequences: int, sequence_length: int) -> Any:
        self._refuse()

    def embed(self, token_ids: Sequence[int]) -> list[float]:
        self._refuse()

    def attention(self, token_ids: Sequence[int]) -> np.ndarray:
        self._refuse()
