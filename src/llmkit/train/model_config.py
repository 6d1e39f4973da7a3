"""The shape of a model trained from nothing: the named sizes, or a JSON file of the same keys.

The keys are Hugging Face `LlamaConfig`'s own names, so a config file reads like any llama
`config.json`, and the model is plain llama: llama.cpp runs its GGUF export and `llmkit finetune`
loads it like any other model. Only the keys below are accepted; a typo is an error, not a default.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from llmkit.errors import InvalidParameterError


@dataclass(frozen=True)
class ModelShape:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    vocab_size: int  # for a trained tokenizer, its target size; a reused tokenizer sets its own
    max_position_embeddings: int  # the context length trained on (and llama.cpp's limit)
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    # Tied input and output embeddings: in a model this small the vocabulary matrices would
    # otherwise be most of its parameters.
    tie_word_embeddings: bool = True

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def checked(self) -> ModelShape:
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name in ("rope_theta", "rms_norm_eps"):
                if not (isinstance(value, (int, float)) and value > 0):
                    raise InvalidParameterError(f"{item.name} must be a positive number.")
            elif item.name == "tie_word_embeddings":
                if not isinstance(value, bool):
                    raise InvalidParameterError("tie_word_embeddings must be true or false.")
            elif not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise InvalidParameterError(
                    f"{item.name} must be a whole number of at least 1, not {value!r}."
                )
        if self.hidden_size % self.num_attention_heads:
            raise InvalidParameterError(
                f"hidden_size ({self.hidden_size}) must be a multiple of num_attention_heads "
                f"({self.num_attention_heads})."
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise InvalidParameterError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})."
            )
        if self.head_dim % 2:
            raise InvalidParameterError(
                f"The head size hidden_size / num_attention_heads ({self.head_dim}) must be even "
                "for rotary position embeddings."
            )
        if self.max_position_embeddings < 8:
            raise InvalidParameterError("max_position_embeddings must be at least 8 tokens.")
        if self.vocab_size < 260:
            raise InvalidParameterError(
                "vocab_size must be at least 260 (the 256 bytes and a few special tokens)."
            )
        return self

    def with_vocabulary(self, size: int) -> ModelShape:
        return replace(self, vocab_size=size)

    def parameters(self) -> int:
        """The parameter count, as torch would count it (tied embeddings counted once)."""
        hidden, kv = self.hidden_size, self.num_key_value_heads * self.head_dim
        attention = 2 * hidden * hidden + 2 * hidden * kv
        mlp = 3 * hidden * self.intermediate_size
        per_layer = attention + mlp + 2 * hidden
        embeddings = self.vocab_size * hidden * (1 if self.tie_word_embeddings else 2)
        return embeddings + self.num_hidden_layers * per_layer + hidden

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def transformers_config(self, bos_id: int, eos_id: int) -> Any:
        import transformers

        return transformers.LlamaConfig(
            **self.to_json(),
            head_dim=self.head_dim,
            bos_token_id=bos_id,
            eos_token_id=eos_id,
            attention_bias=False,
            mlp_bias=False,
            hidden_act="silu",
        )


SIZES = {
    # ~1.5M parameters: visibly better than a unigram model after a minute or two on two cores.
    "tiny": ModelShape(
        hidden_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=384,
        vocab_size=4096,
        max_position_embeddings=256,
    ),
    # ~14M parameters: writes plausible sentences after an hour or so on a laptop's CPU.
    "small": ModelShape(
        hidden_size=384,
        num_hidden_layers=6,
        num_attention_heads=6,
        num_key_value_heads=6,
        intermediate_size=1024,
        vocab_size=8192,
        max_position_embeddings=512,
    ),
}


def model_shape(size: str) -> ModelShape:
    """A named size (tiny, small) or the path of a JSON file with ModelShape's keys."""
    if size in SIZES:
        return SIZES[size]
    path = Path(size).expanduser()
    if not path.suffix == ".json" and not path.exists():
        raise InvalidParameterError(
            f"--size must be {', '.join(SIZES)} or a JSON config file, not {size!r}."
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise InvalidParameterError(
            f"Cannot read the model config {path} ({error.strerror or error})."
        ) from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidParameterError(
            f"The model config {path} is not valid JSON: {error}"
        ) from error
    if not isinstance(data, dict):
        raise InvalidParameterError(f"The model config {path} must be a JSON object.")
    known = {item.name for item in fields(ModelShape)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InvalidParameterError(
            f"The model config {path} has unknown keys {', '.join(unknown)}; "
            f"the keys are {', '.join(sorted(known))}."
        )
    # Keys left out take the tiny size's values, so a file may change only what it cares about.
    return replace(SIZES["tiny"], **data).checked()
