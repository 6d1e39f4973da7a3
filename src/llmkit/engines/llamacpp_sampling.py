"""Sampling on a llama.cpp context: its native sampler chain, an argmax fast path, token constraints.

The sampler reads one output row of the context's latest decode. A TokenConstraint masks that row
in place (-inf where a token is not allowed) before the chain or the argmax chooses.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from llmkit.engines.base import SamplingStage, TokenConstraint
from llmkit.errors import InvalidParameterError
from llmkit.params import SamplingParams

if TYPE_CHECKING:
    from llmkit.engines.llamacpp import LlamaCppContext


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
        self.stage_names: list[str] = []  # the chain's samplers, in order, for explain()

        def add(sampler: Any, name: str) -> None:
            llama.llama_sampler_chain_add(chain, sampler)
            self.stage_names.append(name)

        penalised = (params.repeat_penalty, params.frequency_penalty, params.presence_penalty)
        if params.repeat_last_n and penalised != (1.0, 0.0, 0.0):
            penalties = llama.llama_sampler_init_penalties(
                engine.vocab_size, params.repeat_last_n, *penalised
            )
            # The penalties look back over the prompt too, as in llama.cpp's own tools.
            for token in list(history)[-params.repeat_last_n :]:
                llama.llama_sampler_accept(penalties, token)
            add(penalties, "penalties")
        self.constraint: TokenConstraint | None = constraint
        # Plain greedy decoding needs no chain: an argmax over the logits in place is cheaper than
        # llama.cpp copying the whole vocabulary into a candidate array for every token.
        self._plain_argmax = params.greedy and llama.llama_sampler_chain_n(chain) == 0
        self._vocab_size = engine.vocab_size
        self._logits_address = context.logits_address
        self._logits: tuple[int | None, np.ndarray | None] = (None, None)
        if params.greedy:
            add(llama.llama_sampler_init_greedy(), "greedy")
        else:
            if params.top_k > 0:
                add(llama.llama_sampler_init_top_k(params.top_k), "top_k")
            add(llama.llama_sampler_init_top_p(params.top_p, 1), "top_p")
            add(llama.llama_sampler_init_min_p(params.min_p, 1), "min_p")
            add(llama.llama_sampler_init_temp(params.temperature), "temperature")
            seed = params.seed if params.seed is not None else llama.LLAMA_DEFAULT_SEED
            add(llama.llama_sampler_init_dist(seed), "draw")

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

    def explain(self, output: int = -1) -> list[SamplingStage]:
        """Apply the chain's own samplers one at a time to a copy of the row, reading what each
        leaves; the final draw is not run."""
        llama = self.llama
        index = output if output < 0 else self.context.batch_index(output)
        row = np.array(self._logits_row(index), dtype=np.float32)
        if self.constraint is not None:
            mask_disallowed(row, self.constraint.allowed())
        size = row.size
        data = np.zeros(size, dtype=[("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
        data["id"], data["logit"] = np.arange(size), row
        pointer = data.ctypes.data_as(ctypes.POINTER(llama.llama_token_data))
        candidates = llama.llama_token_data_array(pointer, size, -1, False)
        stages = []
        for position, name in enumerate(self.stage_names):
            if name == "draw":
                break
            sampler = llama.llama_sampler_chain_get(self.chain, position)
            llama.llama_sampler_apply(sampler, ctypes.byref(candidates))
            left = data[: candidates.size]
            if name == "greedy":
                chosen = int(left["id"][candidates.selected])
                stages.append(SamplingStage(name, np.array([chosen]), np.array([1.0])))
                continue
            logits = left["logit"].astype(np.float64)
            order = np.argsort(-logits, kind="stable")
            shifted = np.exp(logits[order] - logits[order].max())
            stages.append(SamplingStage(name, left["id"][order].copy(), shifted / shifted.sum()))
        return stages

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
