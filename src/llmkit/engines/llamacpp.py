"""The llama.cpp engine (GGUF; CPU, or GPU offload when the build has it), on the low-level API.

Working on llama_decode and llama.cpp's native sampler chain directly keeps the per-token path short:
no logits are copied into Python. A LlamaCppContext is one llama.cpp context holding N sequences
(the engine's own holds one; the batch scheduler's one per slot), each with its own KV cells.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from llmkit import system_memory
from llmkit.engines.base import (
    DEFAULT_CONTEXT,
    BatchItem,
    EngineOptions,
    TokenConstraint,
    TokenizerFacts,
)
from llmkit.engines.llamacpp_sampling import LlamaCppSampler
from llmkit.errors import (
    ContextOverflowError,
    InvalidModelFileError,
    InvalidParameterError,
    require_module,
)
from llmkit.params import SamplingParams
from llmkit.store.store import ModelManifest

_state: dict[str, Any] = {}
EMBEDDING_CONTEXT = 512  # the most tokens one embedding input may have
_FIRST_ROW = [0]  # the output rows of a one-token decode (never changed in place)


def _bindings() -> Any:
    """Import llama_cpp once, initialise the backend and route its logging to nowhere."""
    if "module" not in _state:
        llama = require_module("llama_cpp", feature="The llama.cpp engine", extra="llamacpp")
        llama.llama_backend_init()
        _state["module"] = llama
        # llama_get_logits_ith again, typed to return a plain address: the greedy path compares it
        # with the address of its cached numpy view instead of wrapping a new pointer every token.
        function = ctypes.cast(llama.llama_cpp._lib.llama_get_logits_ith, ctypes.c_void_p).value
        if function is None:
            raise RuntimeError("llama.cpp's library has no llama_get_logits_ith.")
        _state["logits_address"] = ctypes.CFUNCTYPE(
            ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32
        )(function)
        set_llama_logging(verbose=False)
    return _state["module"]


def bindings() -> Any:
    """llama-cpp-python's low-level module, initialised, with llama.cpp's log quiet."""
    return _bindings()


def set_llama_logging(verbose: bool) -> None:
    llama = _state["module"]

    @llama.llama_log_callback
    def _log(level: int, text: bytes, user_data: Any) -> None:
        if verbose:
            os.write(2, text)

    _state["log_callback"] = _log  # keep a reference: C holds only the pointer
    llama.llama_log_set(_log, ctypes.c_void_p(0))


class LlamaCppContext:
    """A llama.cpp context with `sequences` sequences of `sequence_length` tokens each.

    Positions come from the tokens each sequence holds, kept here in Python. Output rows of a
    decode map to batch positions, which is how llama.cpp numbers logits.
    """

    def __init__(
        self, engine: LlamaCppEngine, pointer: Any, sequences: int, sequence_length: int
    ) -> None:
        llama = self.llama = engine.llama
        self.engine, self.pointer = engine, pointer
        self.sequences, self.sequence_length = sequences, sequence_length
        self.memory = llama.llama_get_memory(pointer)
        self.batch_limit = llama.llama_n_batch(pointer)  # the most tokens one llama_decode takes
        self.logits_address = _state["logits_address"]
        self._tokens: list[list[int]] = [[] for _ in range(sequences)]
        self._rows: list[int] = []  # batch position of each output row of the latest decode
        self._batch: Any = None
        self._batch_capacity = 0
        # The single-token step of sequence 0 (the loop's every step) skips filling a batch.
        self._one_token = (llama.llama_token * 1)()
        self._one_batch = llama.llama_batch_get_one(self._one_token, 1)

    # ---- evaluation ----------------------------------------------------------------------
    def decode(self, items: Sequence[BatchItem]) -> None:
        first = items[0] if items else None
        if (
            len(items) == 1
            and first
            and first.sequence == 0
            and first.want_logits
            and not first.all_logits
        ):
            # One sequence, positions following on from its cache: llama.cpp's simple batch.
            item = items[0]
            tokens = item.tokens
            if len(tokens) == 1:
                self._one_token[0] = tokens[0]
                self._run(self._one_batch, (0,), 1)
                self._tokens[0].extend(tokens)
                self._rows = _FIRST_ROW
                return
            # llama.cpp aborts on more tokens than n_batch in one call: evaluate in pieces.
            for start in range(0, len(tokens), self.batch_limit):
                piece = list(tokens[start : start + self.batch_limit])
                array = (self.llama.llama_token * len(piece))(*piece)
                self._run(self.llama.llama_batch_get_one(array, len(piece)), (0,), len(piece))
                self._tokens[0].extend(piece)
                self._rows = [len(piece) - 1]
            return
        count = sum(len(item.tokens) for item in items)
        if count == 0:
            self._rows = []
            return
        batch = self._batch_for(count)
        rows: list[int] = []
        position = 0
        for item in items:
            if not 0 <= item.sequence < self.sequences:
                raise InvalidParameterError(f"This context has no sequence {item.sequence}.")
            cached = self._tokens[item.sequence]
            start, last = len(cached), len(item.tokens) - 1
            for offset, token in enumerate(item.tokens):
                batch.token[position] = token
                batch.pos[position] = start + offset
                batch.n_seq_id[position] = 1
                batch.seq_id[position][0] = item.sequence
                wants = item.want_logits and (offset == last or item.all_logits)
                batch.logits[position] = wants
                if wants:
                    rows.append(position)
                position += 1
        batch.n_tokens = count
        self._run(batch, {item.sequence for item in items}, count)
        for item in items:
            self._tokens[item.sequence].extend(item.tokens)
        self._rows = rows

    def _batch_for(self, count: int) -> Any:
        if count > self.batch_limit:
            raise ContextOverflowError(
                f"{count:,} tokens in one step are more than this context evaluates at once "
                f"({self.batch_limit:,})."
            )
        if count > self._batch_capacity:
            if self._batch is not None:
                self.llama.llama_batch_free(self._batch)
            self._batch_capacity = min(self.batch_limit, max(count, 512))
            self._batch = self.llama.llama_batch_init(self._batch_capacity, 0, 1)
        return self._batch

    def _run(self, batch: Any, sequences: Any, count: int) -> None:
        status = self.llama.llama_decode(self.pointer, batch)
        if status != 0:
            # The cache of these sequences is in an unknown state now: forget it.
            for sequence in sequences:
                self.keep_prefix(sequence, 0)
            self._rows = []
            raise ContextOverflowError(
                f"llama.cpp could not evaluate the tokens (status {status})."
            )

    def batch_index(self, output: int) -> int:
        """The batch position llama.cpp keeps output row `output` under."""
        try:
            return self._rows[output]
        except IndexError:
            raise InvalidParameterError(f"There are no logits for output {output}.") from None

    # ---- the cache ---------------------------------------------------------------------
    def cached(self, sequence: int) -> Sequence[int]:
        return self._tokens[sequence]

    def keep_prefix(self, sequence: int, length: int) -> None:
        if length == 0 and self.sequences == 1:
            # A fresh start: clearing (rather than removing positions) also rewinds llama.cpp's
            # cell search, so the new tokens sit at the front of the cache and attention spans
            # only the cells in use.
            self.llama.llama_memory_clear(self.memory, True)
        elif length < len(self._tokens[sequence]):
            self.llama.llama_memory_seq_rm(self.memory, sequence, length, -1)
        del self._tokens[sequence][length:]

    def copy_sequence(self, source: int, target: int) -> None:
        for sequence in (source, target):
            if not 0 <= sequence < self.sequences:
                raise InvalidParameterError(f"This context has no sequence {sequence}.")
        if source == target:
            return
        # Each sequence has a stream of its own (kv_unified is off), so llama.cpp copies the
        # whole stream's buffers, which it allows only for the full range (-1, -1). The copy is
        # queued and done at the start of the next llama_decode, before that batch is read.
        self.llama.llama_memory_seq_cp(self.memory, source, target, -1, -1)
        self._tokens[target] = list(self._tokens[source])

    # ---- outputs -----------------------------------------------------------------------
    def logits(self, output: int = -1) -> np.ndarray:
        index = output if output < 0 else self.batch_index(output)
        address = self.logits_address(self.pointer, index)
        if not address:
            raise InvalidParameterError(f"There are no logits for output {output}.")
        row = (ctypes.c_float * self.engine.vocab_size).from_address(address)
        return np.frombuffer(row, dtype=np.float32)

    def new_sampler(
        self,
        params: SamplingParams,
        history: Sequence[int],
        constraint: TokenConstraint | None = None,
    ) -> LlamaCppSampler:
        return LlamaCppSampler(self, params, history, constraint)

    def close(self) -> None:
        if getattr(self, "_batch", None) is not None:
            self.llama.llama_batch_free(self._batch)
            self._batch = None
        if getattr(self, "pointer", None):
            self.llama.llama_free(self.pointer)
            self.pointer = None

    def __del__(self) -> None:
        self.close()


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
        maximum = manifest.info.context_length or DEFAULT_CONTEXT
        context_length = options.context_length or min(maximum, DEFAULT_CONTEXT)
        if context_length < 16:
            raise InvalidParameterError("The context length must be at least 16 tokens.")
        if context_length > maximum:
            raise InvalidParameterError(
                f"'{manifest.name}' was trained for at most {maximum:,} tokens of context; "
                f"{context_length:,} was requested."
            )
        needed = manifest.info.kv_cache_bytes(context_length)
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
        self.threads = options.threads or max(1, os.cpu_count() or 1)
        self._adapter = None
        self.adapter_scale = options.adapter_scale
        self._pieces: dict[int, bytes] = {}
        self._facts: TokenizerFacts | None = None
        self._embedding: tuple[Any, Any] | None = None  # (context, batch), made on first embed()
        self._embedding_lock = threading.Lock()
        self._context: LlamaCppContext | None = None
        try:
            if options.adapter_path:
                self._load_adapter(options.adapter_path)
            self._context = self._open_context(1, context_length)
        except BaseException:
            self.close()
            raise
        self.context_length = llama.llama_n_ctx(self._context.pointer)

    def _load_adapter(self, path: str) -> None:
        # The adapter belongs to the model (llama.cpp frees it with the model); it only has to be
        # switched on in each context that should use it.
        self._adapter = self.llama.llama_adapter_lora_init(self.model, str(path).encode())
        if not self._adapter:
            raise InvalidModelFileError(
                f"llama.cpp could not load the LoRA adapter {path} over this base model."
            )

    def _apply_adapter(self, pointer: Any) -> None:
        """Switch this engine's LoRA adapter (if any) on in a context made from its model."""
        if self._adapter is None:
            return
        llama = self.llama
        adapters = (llama.llama_adapter_lora_p_ctypes * 1)(self._adapter)
        scales = (ctypes.c_float * 1)(self.adapter_scale)
        if llama.llama_set_adapters_lora(pointer, adapters, 1, scales) != 0:
            raise InvalidModelFileError("llama.cpp could not apply the LoRA adapter.")

    def _open_context(self, sequences: int, sequence_length: int) -> LlamaCppContext:
        llama = self.llama
        params = llama.llama_context_default_params()
        # With several sequences, each gets a full window of its own (the cache is split evenly).
        params.n_ctx = sequence_length * sequences
        params.n_seq_max = sequences
        params.kv_unified = False
        # One decode may carry a whole window; llama.cpp computes it in micro-batches of 512.
        params.n_batch = params.n_ctx
        params.n_ubatch = min(512, params.n_ctx)
        params.n_threads = params.n_threads_batch = self.threads
        params.no_perf = True
        pointer = llama.llama_init_from_model(self.model, params)
        if not pointer:
            raise ContextOverflowError(
                f"llama.cpp could not create a {sequences}-sequence context of "
                f"{sequence_length:,} tokens each; choose a smaller --context or --parallel."
                if sequences > 1
                else f"llama.cpp could not create a {sequence_length:,}-token context."
            )
        try:
            self._apply_adapter(pointer)  # a fine-tune stored as a LoRA adapter runs here too
        except BaseException:
            llama.llama_free(pointer)
            raise
        return LlamaCppContext(self, pointer, sequences, sequence_length)

    # ---- the protocol: contexts ------------------------------------------------------------
    @property
    def context(self) -> LlamaCppContext:
        assert self._context is not None, "the engine is closed"
        return self._context

    def new_context(self, sequences: int, sequence_length: int) -> LlamaCppContext:
        if sequences < 1 or sequence_length < 1:
            raise InvalidParameterError("A context needs at least one sequence of one token.")
        return self._open_context(sequences, sequence_length)

    # ---- vocabulary ----------------------------------------------------------------------
    @property
    def tokenizer_facts(self) -> TokenizerFacts:
        if self._facts is None:
            llama, vocab = self.llama, self.vocab
            bos, eos = llama.llama_vocab_bos(vocab), llama.llama_vocab_eos(vocab)
            ends = frozenset(
                i for i in range(self.vocab_size) if llama.llama_vocab_is_eog(vocab, i)
            )
            control = frozenset(
                i for i in range(self.vocab_size) if llama.llama_vocab_is_control(vocab, i)
            )
            self._facts = TokenizerFacts(
                vocab_size=self.vocab_size,
                bos_id=bos if bos >= 0 else None,
                eos_id=eos if eos >= 0 else None,
                end_of_generation_ids=ends,
                add_bos=bool(llama.llama_vocab_get_add_bos(vocab)),
                special_ids=control,
            )
        return self._facts

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

    # ---- embeddings ----------------------------------------------------------------------
    def attention(self, token_ids: Sequence[int]) -> np.ndarray:
        raise InvalidParameterError(
            "llama.cpp does not expose attention weights; use the transformers engine "
            "(--engine transformers)."
        )

    def embed(self, token_ids: Sequence[int]) -> list[float]:
        """Mean-pooled hidden states in a context of their own, scaled to unit length.

        Chat models are not trained as embedders: fine for trying an API out and for rough
        similarity, not a substitute for a dedicated embedding model.
        """
        ids = list(token_ids) or [self.llama.llama_vocab_bos(self.vocab)]
        if len(ids) > EMBEDDING_CONTEXT:
            raise ContextOverflowError(
                f"The input is {len(ids)} tokens; embeddings take at most {EMBEDDING_CONTEXT}."
            )
        llama = self.llama
        with self._embedding_lock:  # one context: one embedding at a time
            context, batch = self._embedding_context()
            llama.llama_memory_clear(llama.llama_get_memory(context), True)
            for index, token in enumerate(ids):
                batch.token[index], batch.pos[index] = token, index
                batch.n_seq_id[index], batch.seq_id[index][0], batch.logits[index] = 1, 0, True
            batch.n_tokens = len(ids)
            if llama.llama_decode(context, batch) != 0:
                raise ContextOverflowError("llama.cpp could not evaluate the input for embeddings.")
            pointer = llama.llama_get_embeddings_seq(context, 0)
            size = llama.llama_model_n_embd(self.model)
            vector = np.ctypeslib.as_array(pointer, shape=(size,)).astype(np.float64)
        norm = float(np.linalg.norm(vector)) or 1.0
        return (vector / norm).tolist()

    def _embedding_context(self) -> tuple[Any, Any]:
        """Created on first use: most engines never embed, and the context costs memory."""
        if self._embedding is None:
            llama = self.llama
            params = llama.llama_context_default_params()
            params.n_ctx = params.n_batch = params.n_ubatch = EMBEDDING_CONTEXT
            params.n_seq_max = 1
            params.embeddings = True
            params.pooling_type = llama.LLAMA_POOLING_TYPE_MEAN
            params.n_threads = params.n_threads_batch = self.threads
            params.no_perf = True
            context = llama.llama_init_from_model(self.model, params)
            if not context:
                raise ContextOverflowError("llama.cpp could not create a context for embeddings.")
            self._embedding = (context, llama.llama_batch_init(EMBEDDING_CONTEXT, 0, 1))
        return self._embedding

    def close(self) -> None:
        embedding = getattr(self, "_embedding", None)
        if embedding is not None:
            context, batch = embedding
            self.llama.llama_batch_free(batch)
            self.llama.llama_free(context)
            self._embedding = None
        own_context = getattr(self, "_context", None)
        if own_context is not None:
            own_context.close()
            self._context = None
        if getattr(self, "model", None):
            self.llama.llama_model_free(self.model)
            self.model = None

    def __del__(self) -> None:
        self.close()
