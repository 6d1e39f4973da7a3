"""The PyTorch engine: Hugging Face folders or GGUF files (de-quantized), CUDA when available."""

from __future__ import annotations

import inspect
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from llmkit.engines.base import (
    DEFAULT_CONTEXT,
    EngineOptions,
    TokenizerFacts,
)
from llmkit.engines.torch_context import TorchContext
from llmkit.errors import ContextOverflowError, InvalidModelFileError, require_module
from llmkit.store.store import ModelManifest
from llmkit.store.weights import check_hf_weights

_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def byte_level_alphabet() -> list[str]:
    """GPT-2's byte-to-printable-character table (byte-level BPE vocabularies spell bytes this way)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    codes = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    table = dict(zip(printable, codes))
    return [chr(table[byte]) for byte in range(256)]


class TransformersEngine:
    name = "transformers"

    def __init__(self, manifest: ModelManifest, options: EngineOptions | None = None) -> None:
        options = options or EngineOptions()
        torch = require_module("torch", feature="The transformers engine", extra="torch")
        transformers = require_module(
            "transformers", feature="The transformers engine", extra="torch"
        )
        self.torch = torch
        if options.threads:
            torch.set_num_threads(options.threads)
        self.device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        path = manifest.weights_path
        load_args: dict[str, Any] = {}
        if manifest.format == "gguf":
            require_module("gguf", feature="Loading GGUF files into PyTorch", extra="torch")
            folder, load_args["gguf_file"] = str(path.parent), path.name
        else:
            folder = str(path)
            # Pickled weights can run code when loaded: refused unless the model was imported
            # with --allow-pickle (recorded in its manifest).
            kind = check_hf_weights(Path(folder), allow_pickle=manifest.allow_pickle)
            load_args["use_safetensors"] = kind == "safetensors"
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(folder, **load_args)
            self.model = self._load_model(transformers, folder, dtype, load_args)
        except (OSError, ValueError) as error:
            raise InvalidModelFileError(f"transformers could not load {path}: {error}") from error
        self.model.eval()
        # transformers 5 renamed `past_key_values` to `cache`; pass whichever this version takes.
        forward_parameters = inspect.signature(self.model.forward).parameters
        self._cache_argument = "cache" if "cache" in forward_parameters else "past_key_values"
        maximum = manifest.info.context_length or DEFAULT_CONTEXT
        self.context_length = int(options.context_length or min(maximum, DEFAULT_CONTEXT))
        self._vocabulary = self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer))))
        self._special_ids = set(self.tokenizer.all_special_ids) | {
            index for index, token in self.tokenizer.added_tokens_decoder.items() if token.special
        }
        decoder = getattr(getattr(self.tokenizer, "backend_tokenizer", None), "decoder", None)
        self._byte_level = type(decoder).__name__ == "ByteLevel"
        self._byte_decoder = {char: byte for byte, char in enumerate(byte_level_alphabet())}
        self._facts = self._read_tokenizer_facts()
        self._context: TorchContext | None = None

    def _load_model(
        self, transformers: Any, folder: str, dtype: Any, load_args: dict[str, Any]
    ) -> Any:
        """The weights, on the engine's device (engines/tokenizer_only.py loads none)."""
        model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **load_args)
        return model.to(self.device)

    def _read_tokenizer_facts(self) -> TokenizerFacts:
        tokenizer = self.tokenizer
        # The logits are as wide as the output layer, which may exceed the tokenizer's list.
        width = self.model.get_output_embeddings().weight.shape[0]
        bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        ends = {eos} if eos is not None else set()
        generation_eos = getattr(self.model.generation_config, "eos_token_id", None)
        if isinstance(generation_eos, int):
            ends.add(generation_eos)
        elif generation_eos:
            ends.update(int(token) for token in generation_eos)
        # Whether plain tokenization puts a BOS in front, asked of the tokenizer itself.
        sample = tokenizer("a", add_special_tokens=True)["input_ids"]
        add_bos = bos is not None and bool(sample) and sample[0] == bos
        return TokenizerFacts(
            vocab_size=max(width, len(self._vocabulary)),
            bos_id=bos,
            eos_id=eos,
            end_of_generation_ids=frozenset(ends),
            add_bos=add_bos,
            special_ids=frozenset(int(i) for i in tokenizer.all_special_ids),
        )

    @property
    def tokenizer_facts(self) -> TokenizerFacts:
        return self._facts

    # ---- vocabulary ----------------------------------------------------------------------
    def tokenize(self, text: str, *, add_bos: bool = False) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        bos = self.tokenizer.bos_token_id
        return [bos, *ids] if add_bos and bos is not None else list(ids)

    def token_bytes(self, token_id: int) -> bytes:
        # Ids past the tokenizer's list (padding rows of the output layer) spell nothing.
        piece = self._vocabulary[token_id] if 0 <= token_id < len(self._vocabulary) else None
        if piece is None:
            return b""
        if token_id in self._special_ids:
            return piece.encode()
        if self._byte_level:
            return bytes(self._byte_decoder.get(char, 0) for char in piece)
        byte = _BYTE_TOKEN.match(piece)
        if byte:
            return bytes([int(byte.group(1), 16)])
        return piece.replace("\u2581", " ").encode()

    def token_id(self, text: str) -> int | None:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids[0] if len(ids) == 1 else None

    # ---- evaluation ----------------------------------------------------------------------
    @property
    def context(self) -> TorchContext:
        if self._context is None:
            self._context = self.new_context(1, self.context_length)
        return self._context

    def new_context(self, sequences: int, sequence_length: int) -> TorchContext:
        if self.model is None:
            raise ContextOverflowError("The model is closed.")
        return TorchContext(
            self.model,
            sequences=sequences,
            sequence_length=sequence_length,
            device=self.device,
            cache_argument=self._cache_argument,
        )

    def embed(self, token_ids: Sequence[int]) -> list[float]:
        token_ids = list(token_ids)
        if not token_ids:
            raise ContextOverflowError("There is nothing to embed: the text has no tokens.")
        if len(token_ids) > self.context_length:
            raise ContextOverflowError(
                f"The text is {len(token_ids)} tokens but the context window holds "
                f"{self.context_length}; shorten it."
            )
        torch = self.torch
        with torch.inference_mode():
            # The base model (no language-model head): its last hidden state is after the final norm.
            output = self.model.base_model(
                input_ids=torch.tensor([token_ids], device=self.device), use_cache=False
            )
        pooled = output.last_hidden_state[0].float().mean(dim=0).cpu().numpy()
        norm = float(np.linalg.norm(pooled))
        return (pooled / norm if norm > 0 else pooled).tolist()

    def attention(self, token_ids: Sequence[int]) -> np.ndarray:
        token_ids = list(token_ids)
        if not token_ids or len(token_ids) > self.context_length:
            raise ContextOverflowError(
                f"Attention needs 1 to {self.context_length} tokens (got {len(token_ids)})."
            )
        torch, model = self.torch, self.model
        # Only the eager implementation returns the weights (SDPA fuses them away).
        previous = model.config._attn_implementation
        model.set_attn_implementation("eager")
        try:
            with torch.inference_mode():
                output = model(
                    input_ids=torch.tensor([token_ids], device=self.device),
                    output_attentions=True,
                    use_cache=False,
                )
        finally:
            model.set_attn_implementation(previous)
        return torch.stack([layer[0] for layer in output.attentions]).float().cpu().numpy()

    def close(self) -> None:
        if self._context is not None:
            self._context.close()
            self._context = None
        self.model = None
