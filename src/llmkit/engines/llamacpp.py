"""The llama.cpp engine (GGUF; CPU, or GPU offload when the build has it), on the low-level API.

Working on llama_decode and llama.cpp's native sampler chain directly keeps the per-token path short:
no logits are copied into Python, and the prompt's cached prefix is reused between turns.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from llmkit import system_memory
from llmkit.engines.base import DEFAULT_CONTEXT, EngineOptions, reusable_prefix
from llmkit.errors import (
    ContextOverflowError,
    InvalidModelFileError,
    InvalidParameterError,
    require_module,
)
from llmkit.params import SamplingParams
from llmkit.store.store import ModelManifest

_state: dict[str, Any] = {}


def _bindings() -> Any:
    """Import llama_cpp once, initialise the backend and route its logging to nowhere."""
    if "module" not in _state:
        llama = require_module("llama_cpp", feature="The llama.cpp engine", extra="llamacpp")
        llama.llama_backend_init()
        _state["module"] = llama
        # llama_get_logits_ith again, typed to return a plain address: the greedy path compares it
        # with the address of its cached numpy view instead of wrapping a new pointer every token.
        function = ctypes.cast(llama.llama_cpp._lib.llama_get_logits_ith, ctypes.c_void_p).value
        _state["logits_address"] = ctypes.CFUNCTYPE(
            ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32
        )(function)
        set_llama_logging(verbose=False)
    return _state["module"]


def set_llama_logging(verbose: bool) -> None:
    llama = _state["module"]

    @llama.llama_log_callback
    def _log(level: int, text: bytes, user_data: Any) -> None:
        if verbose:
            os.write(2, text)

    _state["log_callback"] = _log  # keep a reference: C holds only the pointer
    llama.llama_log_set(_log, ctypes.c_void_p(0))


def kv_cache_bytes(info: dict[str, Any], context_length: int) -> int:
    """Memory for the KV cache in f16: keys and values, every layer, every position."""
    layers = info.get("layers") or 0
    heads = info.get("heads") or 1
    kv_heads = info.get("kv_heads") or heads
    head_dim = (info.get("embedding_length") or 0) // heads
    return 2 * layers * context_length * kv_heads * head_dim * 2


class LlamaCppSampler:
    """llama.cpp's own sampler chain, configured from SamplingParams."""

    def __init__(
        self,
        engine: LlamaCppEngine,
        params: SamplingParams,
        history: Sequence[int],
        context: Any = None,
        grammar: str | None = None,
    ) -> None:
        llama = engine.llama
        # A batch scheduler passes its own multi-sequence context; by default the engine's own.
        self.llama, self.context = llama, context or engine.context
        chain = llama.llama_sampler_chain_init(llama.llama_sampler_chain_default_params())
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
        if grammar is not None:
            # A GBNF grammar (root rule "root") masks every token that would break it.
            constraint = llama.llama_sampler_init_grammar(engine.vocab, grammar.encode(), b"root")
            if not constraint:
                llama.llama_sampler_free(chain)
                raise InvalidParameterError("The grammar for this request could not be parsed.")
            add(constraint)
        # Plain greedy decoding needs no chain: an argmax over the logits in place is cheaper than
        # llama.cpp copying the whole vocabulary into a candidate array for every token.
        self._plain_argmax = (
            params.greedy and grammar is None and llama.llama_sampler_chain_n(chain) == 0
        )
        self._vocab_size = engine.vocab_size
        self._logits_address, self._logits = _state["logits_address"], (None, None)
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
        self.chain = chain

    def sample(self, index: int = -1) -> int:
        """Sample from the logits of output `index` of the last decoded batch (-1: the last one)."""
        if self._plain_argmax:
            return int(self._logits_row(index).argmax())
        return self.llama.llama_sampler_sample(self.chain, self.context, index)

    def _logits_row(self, index: int) -> np.ndarray:
        """The logits of output `index` as a numpy view, re-made only when llama.cpp moves them."""
        address = self._logits_address(self.context, index)
        if not address:
            raise InvalidParameterError(f"There are no logits for output {index}.")
        cached_address, view = self._logits
        if address != cached_address:
            row = (ctypes.c_float * self._vocab_size).from_address(address)
            view = np.frombuffer(row, dtype=np.float32)
            self._logits = (address, view)
        return view

    def __del__(self) -> None:
        if getattr(self, "chain", None):
            self.llama.llama_sampler_free(self.chain)
            self.chain = None


class LlamaCppEngine:
    name = "llamacpp"

    def __init__(self, manifest: ModelManifest, options: EngineOptions | None = None) -> None:
        options = options or EngineOptions()
        if manifest.format != "gguf":
            raise InvalidModelFileError(
                f"The llama.cpp engine needs a GGUF file; '{manifest.name}' is a Hugging Face folder "
                "(use --engine transformers)."
            )
        llama = self.llama = _bindings()
        if options.verbose:
            set_llama_logging(verbose=True)
        maximum = int(manifest.info.get("context_length") or DEFAULT_CONTEXT)
        context_length = options.context_length or min(maximum, DEFAULT_CONTEXT)
        if context_length < 16:
            raise InvalidParameterError("The context length must be at least 16 tokens.")
        if context_length > maximum:
            raise InvalidParameterError(
                f"'{manifest.name}' was trained for at most {maximum:,} tokens of context; "
                f"{context_length:,} was requested."
            )
        needed = kv_cache_bytes(manifest.info, context_length)
        available = system_memory.memory_info()[1]
        if available is not None and needed + manifest.size_bytes > available:
            raise ContextOverflowError(
                f"A {context_length:,}-token context needs about {(needed + manifest.size_bytes) / 2**30:.1f} GiB "
                f"but only {available / 2**30:.1f} GiB of memory is free; choose a smaller --context."
            )

        model_params = llama.llama_model_default_params()
        if options.gpu_layers >= 0:
            # llama.cpp's default (-1) already offloads every layer when the build has a GPU.
            model_params.n_gpu_layers = options.gpu_layers
        self.model = llama.llama_model_load_from_file(
            str(manifest.weights_path).encode(), model_params
        )
        if not self.model:
            raise InvalidModelFileError(f"llama.cpp could not load {manifest.weights_path}.")
        self.vocab = llama.llama_model_get_vocab(self.model)
        self.vocab_size = llama.llama_vocab_n_tokens(self.vocab)

        threads = options.threads or max(1, os.cpu_count() or 1)
        context_params = llama.llama_context_default_params()
        context_params.n_ctx = context_length
        context_params.n_batch = context_params.n_ubatch = min(512, context_length)
        context_params.n_threads = context_params.n_threads_batch = threads
        context_params.no_perf = True
        self.context = llama.llama_init_from_model(self.model, context_params)
        if not self.context:
            llama.llama_model_free(self.model)
            raise ContextOverflowError(
                f"llama.cpp could not create a {context_length:,}-token context."
            )
        self._adapter = None
        self.adapter_scale = options.adapter_scale
        if options.adapter_path:
            self._load_adapter(options.adapter_path)
        self.context_length = llama.llama_n_ctx(self.context)
        self.batch_size = context_params.n_batch
        self.memory = llama.llama_get_memory(self.context)
        self._tokens: list[int] = []
        self._pieces: dict[int, bytes] = {}
        self._one_token = (llama.llama_token * 1)()
        self._one_batch = llama.llama_batch_get_one(self._one_token, 1)
        self.last_reused_tokens = 0

    def _load_adapter(self, path: str) -> None:
        # The adapter belongs to the model (llama.cpp frees it with the model); it only has to be
        # switched on in each context that should use it.
        self._adapter = self.llama.llama_adapter_lora_init(self.model, str(path).encode())
        if not self._adapter:
            self.close()
            raise InvalidModelFileError(
                f"llama.cpp could not load the LoRA adapter {path} over this base model."
            )
        self.apply_adapter(self.context)

    def apply_adapter(self, context: Any) -> None:
        """Switch this engine's LoRA adapter (if any) on in a context made from its model."""
        if self._adapter is None:
            return
        llama = self.llama
        adapters = (llama.llama_adapter_lora_p_ctypes * 1)(self._adapter)
        scales = (ctypes.c_float * 1)(self.adapter_scale)
        if llama.llama_set_adapters_lora(context, adapters, 1, scales) != 0:
            raise InvalidModelFileError("llama.cpp could not apply the LoRA adapter.")

    # ---- vocabulary ----------------------------------------------------------------------
    def tokenize(self, text: str, *, add_bos: bool = False) -> list[int]:
        llama, data = self.llama, text.encode()
        capacity = len(data) + 8
        buffer = (llama.llama_token * capacity)()
        count = llama.llama_tokenize(self.vocab, data, len(data), buffer, capacity, False, True)
        if count < 0:  # the buffer was too small; llama.cpp says how large it must be
            capacity = -count
            buffer = (llama.llama_token * capacity)()
            count = llama.llama_tokenize(self.vocab, data, len(data), buffer, capacity, False, True)
        ids = list(buffer[:count])
        return [llama.llama_vocab_bos(self.vocab), *ids] if add_bos else ids

    def token_bytes(self, token_id: int) -> bytes:
        piece = self._pieces.get(token_id)
        if piece is None:
            buffer = ctypes.create_string_buffer(64)
            size = self.llama.llama_token_to_piece(self.vocab, token_id, buffer, 64, 0, True)
            if size < 0:
                buffer = ctypes.create_string_buffer(-size)
                size = self.llama.llama_token_to_piece(self.vocab, token_id, buffer, -size, 0, True)
            piece = self._pieces[token_id] = buffer.raw[:size]
        return piece

    def token_id(self, text: str) -> int | None:
        ids = self.tokenize(text)
        return ids[0] if len(ids) == 1 else None

    # ---- evaluation ----------------------------------------------------------------------
    def prefill(self, token_ids: Sequence[int]) -> int:
        token_ids = list(token_ids)
        reused = reusable_prefix(self._tokens, token_ids)
        if reused:
            self.llama.llama_memory_seq_rm(self.memory, 0, reused, -1)
        else:
            # A fresh start: clearing (rather than removing positions) also rewinds llama.cpp's
            # cell search, so the new tokens sit at the front of the cache and attention spans
            # only the cells in use.
            self.llama.llama_memory_clear(self.memory, True)
        self._tokens = token_ids[:reused]
        for start in range(reused, len(token_ids), self.batch_size):
            chunk = token_ids[start : start + self.batch_size]
            array = (self.llama.llama_token * len(chunk))(*chunk)
            self._decode(self.llama.llama_batch_get_one(array, len(chunk)), chunk)
        self.last_reused_tokens = reused
        return reused

    def decode(self, token_id: int) -> None:
        self._one_token[0] = token_id
        self._decode(self._one_batch, (token_id,))

    def _decode(self, batch: Any, token_ids: Sequence[int]) -> None:
        status = self.llama.llama_decode(self.context, batch)
        if status != 0:
            # The KV cache is in an unknown state now: forget it, so the next prefill starts clean.
            self.llama.llama_memory_clear(self.memory, True)
            self._tokens = []
            raise ContextOverflowError(
                f"llama.cpp could not evaluate the tokens (status {status})."
            )
        self._tokens.extend(token_ids)

    def new_sampler(self, params: SamplingParams, history: Sequence[int]) -> LlamaCppSampler:
        return LlamaCppSampler(self, params, history)

    def close(self) -> None:
        if getattr(self, "context", None):
            self.llama.llama_free(self.context)
            self.context = None
        if getattr(self, "model", None):
            self.llama.llama_model_free(self.model)
            self.model = None

    def __del__(self) -> None:
        self.close()
