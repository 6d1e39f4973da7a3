"""Text embeddings from a loaded GGUF model: a separate llama.cpp context that pools hidden states.

Chat models are not trained as embedders, so these vectors are fine for trying an API out and for
rough similarity, not a substitute for a dedicated embedding model.
"""

from __future__ import annotations

import math
import threading
from typing import Any

from llmkit.errors import ContextOverflowError, InvalidParameterError


class Embedder:
    def __init__(self, model: Any, context_length: int = 512) -> None:
        engine = model.engine
        if getattr(engine, "name", None) != "llamacpp":
            raise InvalidParameterError("Embeddings need the llama.cpp engine (a GGUF model).")
        llama = self.llama = engine.llama
        self.model, self.engine = model, engine
        params = llama.llama_context_default_params()
        params.n_ctx = params.n_batch = params.n_ubatch = context_length
        params.n_seq_max = 1
        params.embeddings = True
        params.pooling_type = llama.LLAMA_POOLING_TYPE_MEAN
        params.n_threads = params.n_threads_batch = llama.llama_n_threads(engine.context)
        params.no_perf = True
        self.context = llama.llama_init_from_model(engine.model, params)
        if not self.context:
            raise ContextOverflowError("llama.cpp could not create a context for embeddings.")
        self.context_length = context_length
        self.dimensions = llama.llama_model_n_embd(engine.model)
        self.batch = llama.llama_batch_init(context_length, 0, 1)
        self._lock = threading.Lock()  # one context: one embedding at a time

    def embed(self, text: str) -> tuple[list[float], int]:
        """A unit-length vector for the text, and how many tokens it took."""
        ids = self.model.raw_prompt_ids(text) or [self.llama.llama_vocab_bos(self.engine.vocab)]
        if len(ids) > self.context_length:
            raise ContextOverflowError(
                f"The input is {len(ids)} tokens; embeddings take at most {self.context_length}."
            )
        llama, batch = self.llama, self.batch
        with self._lock:
            llama.llama_memory_clear(llama.llama_get_memory(self.context), True)
            for index, token in enumerate(ids):
                batch.token[index], batch.pos[index] = token, index
                batch.n_seq_id[index], batch.seq_id[index][0], batch.logits[index] = 1, 0, True
            batch.n_tokens = len(ids)
            if llama.llama_decode(self.context, batch) != 0:
                raise ContextOverflowError("llama.cpp could not evaluate the input for embeddings.")
            pointer = llama.llama_get_embeddings_seq(self.context, 0)
            vector = [float(pointer[i]) for i in range(self.dimensions)]
        norm = math.sqrt(sum(value * value for value in vector)) or 1.0
        return [value / norm for value in vector], len(ids)

    def close(self) -> None:
        if getattr(self, "context", None):
            self.llama.llama_batch_free(self.batch)
            self.llama.llama_free(self.context)
            self.context = None
