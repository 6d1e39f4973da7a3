"""The PyTorch engine: Hugging Face folders or GGUF files (de-quantized), CUDA when available."""

from __future__ import annotations

import inspect
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmkit.engines.base import DEFAULT_CONTEXT, EngineOptions, reusable_prefix
from llmkit.errors import InvalidModelFileError, require_module
from llmkit.params import SamplingParams
from llmkit.engines.logits_sampler import LogitsSampler
from llmkit.store.store import ModelManifest

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
            if not any(Path(folder).glob("*.safetensors")):
                # Pickled checkpoints can run arbitrary code when loaded.
                raise InvalidModelFileError(
                    f"{folder} has no .safetensors weights; pickled (.bin) weights are refused "
                    "because loading them can run arbitrary code."
                )
            load_args["use_safetensors"] = True
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(folder, **load_args)
            self.model = transformers.AutoModelForCausalLM.from_pretrained(
                folder, dtype=dtype, **load_args
            ).to(self.device)
        except (OSError, ValueError) as error:
            raise InvalidModelFileError(f"transformers could not load {path}: {error}") from error
        self.model.eval()
        # transformers 5 renamed `past_key_values` to `cache`; pass whichever this version takes.
        forward_parameters = inspect.signature(self.model.forward).parameters
        self._cache_argument = "cache" if "cache" in forward_parameters else "past_key_values"
        maximum = manifest.info.get("context_length") or DEFAULT_CONTEXT
        self.context_length = int(options.context_length or min(maximum, DEFAULT_CONTEXT))
        self._vocabulary = self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer))))
        self._special_ids = set(self.tokenizer.all_special_ids) | {
            index for index, token in self.tokenizer.added_tokens_decoder.items() if token.special
        }
        decoder = getattr(getattr(self.tokenizer, "backend_tokenizer", None), "decoder", None)
        self._byte_level = type(decoder).__name__ == "ByteLevel"
        self._byte_decoder = {char: byte for byte, char in enumerate(byte_level_alphabet())}
        self._tokens: list[int] = []
        self._cache: Any = None
        self._logits: Any = None
        self.last_reused_tokens = 0

    # ---- vocabulary ----------------------------------------------------------------------
    def tokenize(self, text: str, *, add_bos: bool = False) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        bos = self.tokenizer.bos_token_id
        return [bos, *ids] if add_bos and bos is not None else list(ids)

    def token_bytes(self, token_id: int) -> bytes:
        piece = self._vocabulary[token_id]
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
    def prefill(self, token_ids: Sequence[int]) -> int:
        token_ids = list(token_ids)
        reused = reusable_prefix(self._tokens, token_ids)
        if reused == 0 or self._cache is None:
            from transformers import DynamicCache

            self._cache, reused = DynamicCache(), 0
        elif len(self._tokens) > reused:
            # A negative count removes that many positions (the form both transformers 4 and 5 accept).
            self._cache.crop(reused - len(self._tokens))
        self._tokens = token_ids[:reused]
        self._forward(token_ids[reused:])
        self.last_reused_tokens = reused
        return reused

    def decode(self, token_id: int) -> None:
        self._forward([token_id])

    def _forward(self, token_ids: list[int]) -> None:
        torch = self.torch
        with torch.inference_mode():
            inputs = torch.tensor([token_ids], device=self.device)
            output = self.model(
                input_ids=inputs, use_cache=True, **{self._cache_argument: self._cache}
            )
        self._cache = getattr(output, self._cache_argument)
        self._logits = output.logits[0, -1].float().cpu().numpy()
        self._tokens.extend(token_ids)

    def new_sampler(self, params: SamplingParams, history: Sequence[int]) -> LogitsSampler:
        return LogitsSampler(params, history, lambda: self._logits)

    def close(self) -> None:
        self._cache = None
        self.model = None
