"""The engine protocol: the token-level primitives every path (loop, batching, serving) is written over.

An engine loads weights and knows its vocabulary. It opens *contexts*: a KV cache holding N
independent sequences, evaluated together by one `decode()` call over a batch of items. Each
sequence has its own sampler, which may carry a token constraint (a grammar compiled from a JSON
schema). Nothing above this module knows which engine it talks to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from llmkit.params import SamplingParams


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


@dataclass(frozen=True)
class BatchItem:
    """Tokens appended to one sequence in a decode call.

    With want_logits, the logits after the item's last token become one output row; rows are
    numbered 0, 1, ... in the order of the items that asked for them. With all_logits as well,
    every token of the item gets its row, in order (scoring a text: the prediction after each
    of its tokens).
    """

    sequence: int
    tokens: Sequence[int]
    want_logits: bool = True
    all_logits: bool = False


@dataclass(frozen=True)
class TokenizerFacts:
    """What the layers above need to know about a vocabulary, read once from the engine."""

    vocab_size: int
    bos_id: int | None
    eos_id: int | None
    end_of_generation_ids: frozenset[int]  # every token the engine treats as "stop here"
    add_bos: bool  # whether raw text is tokenized with a BOS in front
    # Control tokens (chat markers and the like) that no grammar may spell out as text.
    special_ids: frozenset[int] = frozenset()


class TokenConstraint(Protocol):
    """Allows only some next tokens (a compiled grammar); a sampler consults it every step."""

    def allowed(self) -> np.ndarray:
        """A boolean mask over the vocabulary: True where the token may come next."""
        ...

    def accept(self, token_id: int) -> None:
        """Advance past the sampled token."""
        ...

    @property
    def finished(self) -> bool:
        """True when the constrained text is complete (only end-of-generation may follow)."""
        ...


@dataclass(frozen=True)
class SamplingStage:
    """The candidates left after one step of a sampler chain, with their probabilities then."""

    name: str  # "penalties", "top_k", "top_p", "min_p", "temperature", "greedy"
    ids: np.ndarray  # token ids, most likely first
    probabilities: np.ndarray  # softmax over the candidates left, after this step


class Sampler(Protocol):
    def sample(self, output: int = -1) -> int:
        """Choose the next token from output row `output` of the context's latest decode
        (-1: the last row), remember it for penalties, and advance any constraint."""
        ...

    def explain(self, output: int = -1) -> list[SamplingStage]:
        """What each step of this sampler's chain leaves of output row `output`, in order,
        computed by the same steps `sample` runs (nothing is sampled or remembered)."""
        ...


class Context(Protocol):
    """A KV cache with `sequences` independent sequences, each up to `sequence_length` tokens."""

    sequences: int
    sequence_length: int

    def decode(self, items: Sequence[BatchItem]) -> None:
        """Evaluate every item's tokens in one pass; raises ContextOverflowError on failure
        (the cache of the sequences involved is then cleared)."""
        ...

    def cached(self, sequence: int) -> Sequence[int]:
        """The tokens whose keys and values the sequence holds, in order."""
        ...

    def keep_prefix(self, sequence: int, length: int) -> None:
        """Forget every cached token of the sequence from position `length` on (0 clears it)."""
        ...

    def copy_sequence(self, source: int, target: int) -> None:
        """Make `target` hold what `source` holds (its own cache is dropped first), so both
        can go on from there: n choices of one prompt read it once and fork. Takes effect by
        the next decode call, which may carry both sequences."""
        ...

    def logits(self, output: int = -1) -> np.ndarray:
        """The float32 logits of one output row of the latest decode (a view: copy to keep)."""
        ...

    def new_sampler(
        self,
        params: SamplingParams,
        history: Sequence[int],
        constraint: TokenConstraint | None = None,
    ) -> Sampler:
        """A sampler reading this context's outputs; `history` feeds the repetition penalties."""
        ...

    def close(self) -> None: ...


class Engine(Protocol):
    name: str
    context_length: int  # the default length of one sequence

    @property
    def tokenizer_facts(self) -> TokenizerFacts: ...

    def tokenize(self, text: str, *, add_bos: bool = False) -> list[int]:
        """Token ids of text; special tokens written in the text (e.g. <|im_end|>) are parsed."""
        ...

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes a token stands for (special tokens rendered as their text)."""
        ...

    def token_id(self, text: str) -> int | None:
        """The id of a single token written as text, or None when it is not one token."""
        ...

    @property
    def context(self) -> Context:
        """The engine's own one-sequence context, used by the single-request generation loop."""
        ...

    def new_context(self, sequences: int, sequence_length: int) -> Context:
        """A fresh context for batched work (the batch scheduler's slots)."""
        ...

    def embed(self, token_ids: Sequence[int]) -> list[float]:
        """A unit-length vector for the tokens (mean-pooled hidden states)."""
        ...

    def attention(self, token_ids: Sequence[int]) -> np.ndarray:
        """Attention weights, shape (layers, heads, tokens, tokens): row i is what token i
        attends to. Raises InvalidParameterError where the engine cannot expose them."""
        ...

    def close(self) -> None: ...
