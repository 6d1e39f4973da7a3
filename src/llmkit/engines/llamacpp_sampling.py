"""Sampling on a llama.cpp context: its native sampler chain, an argmax fast path, token constraints.

The sampler reads one output row of the context's latest decode. A TokenConstraint masks that row
in place (-inf where a token is not allowed) before the chain or the argmax chooses; a GBNF grammar
instead runs inside the chain, as llama.cpp's own grammar sampler.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from llmkit.engines.base import TokenConstraint
from llmkit.errors import InvalidParameterError
from llmkit.params import SamplingParams

if TYPE_CHECKING:
    from llmkit.engines.llamacpp import LlamaCppContext


class GbnfConstraint:
    """A GBNF grammar (root rule "root"), applied by llama.cpp's grammar sampler in the chain.

    Made per request; the sampler it is given to owns the native grammar. `allowed()` and
    `finished` ask that grammar (a pass over the whole vocabulary), `accept` is the chain's.
    """

    def __init__(self, llama: Any, vocab: Any, vocab_size: int, eog_ids: frozenset[int], text: str):
        self.llama, self.vocab, self.vocab_size, self.eog_ids = llama, vocab, vocab_size, eog_ids
        self.text = text
        self._native: Any = None  # the grammar sampler inside a chain, once bound
        probe = self.new_native()  # a grammar that does not parse is refused at once
        llama.llama_sampler_free(probe)

    def new_native(self) -> Any:
        native = self.llama.llama_sampler_init_grammar(self.vocab, self.text.encode(), b"root")
        if not native:
            raise InvalidParameterError("The grammar for this request could not be parsed.")
        return native

    def bind(self, native: Any) -> None:
        self._native = native

    def allowed(self) -> np.ndarray:
        llama = self.llama
        data = np.zeros(self.vocab_size, dtype=[("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
        data["id"] = np.arange(self.vocab_size)
        pointer = data.ctypes.data_as(ctypes.POINTER(llama.llama_token_data))
        candidates = llama.llama_token_data_array(pointer, self.vocab_size, -1, False)
        llama.llama_sampler_apply(self._native, ctypes.byref(candidates))
        return data["logit"] != -np.inf

    def accept(self, token_id: int) -> None:
        pass  # the chain accepts every sampled token into its grammar itself

    @property
    def finished(self) -> bool:
        return set(np.flatnonzero(self.allowed()).tolist()) <= self.eog_ids


class LlamaCppSampler:
    """llama.cpp's own sampler chain, configured from SamplingParams, over one context's outputs."""

    def __init__(
        self,
        context: LlamaCppContext,
        params: SamplingParams,
        history: Sequence[int],
        constraint: TokenConstraint | None = None,
    ) -> None:
        llama = self.llama = context.llama
        self.context = context
        engine = context.engine
        chain = llama.llama_sampler_chain_init(llama.llama_sampler_chain_default_params())
        self.chain = chain
        add = lambda sampler: llama.llama_sampler_chain_add(chain, sampler)  # noqa: E731
        penalised = (params.repeat_penalty, params.frequency_penalty, params.presence_penalty)
        if params.repeat_last_n and penalised != (1.0, 0.0, 0.0):
            penalties = llama.llama_sampler_init_penalties(
                engine.vocab_size, params.repeat_last_n, *penalised
            )
            # The penalties look back over the prompt too, as in llama.cpp's own tools. Only they
            # are fed the prompt: a grammar in the chain must see just the generated tokens.
            for token in list(history)[-params.repeat_last_n :]:
                llama.llama_sampler_accept(penalties, token)
            add(penalties)
        self.constraint: TokenConstraint | None = constraint
        if isinstance(constraint, GbnfConstraint):
            add(constraint.new_native())
            constraint.bind(
                llama.llama_sampler_chain_get(chain, llama.llama_sampler_chain_n(chain) - 1)
            )
            self.constraint = None  # the chain applies and advances it
        # Plain greedy decoding needs no chain: an argmax over the logits in place is cheaper than
        # llama.cpp copying the whole vocabulary into a candidate array for every token.
        self._plain_argmax = params.greedy and llama.llama_sampler_chain_n(chain) == 0
        self._vocab_size = engine.vocab_size
        self._logits_address = context.logits_address
        self._logits: tuple[int | None, np.ndarray | None] = (None, None)
        if params.greedy:
            add(llama.llama_sampler_init_greedy())
        else:
            if params.top_k > 0:
                add(llama.llama_sampler_init_top_k(params.top_k))
            add(llama.llama_sampler_init_top_p(params.top_p, 1))
            add(llama.llama_sampler_init_min_p(params.min_p, 1))
            add(llama.llama_sampler_init_temp(params.temperature))
            seed = params.seed if params.seed is not None else llama.LLAMA_DEFAULT_SEED
            add(llama.llama_sampler_init_dist(seed))

    def sample(self, output: int = -1) -> int:
        """Sample from output row `output` of the context's latest decode (-1: the last one)."""
        index = output if output < 0 else self.context.batch_index(output)
        constraint = self.constraint
        if constraint is not None:
            mask_disallowed(self._logits_row(index), constraint.allowed())
        if self._plain_argmax:
            token = int(self._logits_row(index).argmax())
        else:
            token = self.llama.llama_sampler_sample(self.chain, self.context.pointer, index)
        if constraint is not None:
            constraint.accept(token)
        return token

    def _logits_row(self, index: int) -> np.ndarray:
        """The logits of batch position `index` as a numpy view, re-made only when they move."""
        address = self._logits_address(self.context.pointer, index)
        if not address:
            raise InvalidParameterError(f"There are no logits for output {index}.")
        cached_address, view = self._logits
        if address != cached_address or view is None:
            row = (ctypes.c_float * self._vocab_size).from_address(address)
            view = np.frombuffer(row, dtype=np.float32)
            self._logits = (address, view)
        return view

    def __del__(self) -> None:
        if getattr(self, "chain", None):
            self.llama.llama_sampler_free(self.chain)
            self.chain = None


def mask_disallowed(row: np.ndarray, allowed: np.ndarray) -> None:
    """Write -inf into the logits (in place) wherever the mask says no; ids past it are refused."""
    allowed = np.asarray(allowed, dtype=bool)
    size = min(row.size, allowed.size)
    np.copyto(row[:size], -np.inf, where=~allowed[:size])
    row[size:] = -np.inf
