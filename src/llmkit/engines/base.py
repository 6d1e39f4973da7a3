"""The engine protocol: the few token-level primitives the one generation loop is written over."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from llmkit.generation.params import SamplingParams


@dataclass(frozen=True)
class EngineOptions:
    """How to load a model: context size, threads, GPU offload, device."""

    context_length: int | None = None  # None: min(model maximum, 4096)
    threads: int | None = None
    gpu_layers: int = -1  # llama.cpp: -1 offloads everything when the build has a GPU backend
    device: str | None = None  # transformers: "cpu", "cuda", or None for automatic
    verbose: bool = False
    adapter_path: str | None = None  # llama.cpp: a GGUF LoRA adapter applied over the weights
    adapter_scale: float = 1.0


DEFAULT_CONTEXT = 4096


def reusable_prefix(cached: Sequence[int], prompt: Sequence[int]) -> int:
    """How many tokens of a new prompt are already in the KV cache.

    At least the last prompt token is always evaluated again, because its logits are needed.
    """
    shared = 0
    for old, new in zip(cached, prompt):
        if old != new:
            break
        shared += 1
    return min(shared, len(prompt) - 1)


class Sampler(Protocol):
    def sample(self) -> int:
        """Choose the next token from the engine's latest logits (and remember it for penalties)."""
        ...


class Engine(Protocol):
    name: str
    context_length: int

    def tokenize(self, text: str, *, add_bos: bool = False) -> list[int]:
        """Token ids of text; special tokens written in the text (e.g. <|im_end|>) are parsed."""
        ...

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes a token stands for (special tokens rendered as their text)."""
        ...

    def token_id(self, text: str) -> int | None:
        """The id of a single token written as text, or None when it is not one token."""
        ...

    def prefill(self, token_ids: Sequence[int]) -> int:
        """Evaluate a prompt, reusing any cached common prefix; return how many tokens were reused."""
        ...

    def decode(self, token_id: int) -> None:
        """Append one token to the sequence and compute the next logits."""
        ...

    def new_sampler(self, params: SamplingParams, history: Sequence[int]) -> Sampler: ...

    def close(self) -> None: ...
