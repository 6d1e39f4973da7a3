"""What a model is: its architecture, sizes, tokens, template and license, typed.

Read once from a GGUF header or a Hugging Face folder when the model enters the store, kept in its
manifest, and read from there by every layer: the engines (context limit, KV-cache memory), the
prompt format (tokens, template), the planner (its `ModelSpec` starts from these numbers) and `show`.
`kv_cache_bytes` is the one formula for the KV cache's size; the engine's memory check and
`llmkit plan` both use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class ModelInfo:
    """The facts about one model's weights. Any of them may be unknown (None) for odd files."""

    architecture: str | None = None
    model_name: str | None = None
    parameters: int | None = None
    layers: int | None = None
    heads: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None  # the width of one attention head's key; hidden / heads if absent
    embedding_length: int | None = None
    feed_forward_length: int | None = None
    context_length: int | None = None
    vocab_size: int | None = None
    quantization: str | None = None
    bos_token: str | None = None
    eos_token: str | None = None
    eot_token: str | None = None
    add_bos_token: bool | None = None
    tokenizer: str | None = None
    special_tokens: dict[str, int] = field(default_factory=dict)
    chat_template: str | None = None
    license: str | None = None
    # Layers that attend only to the last `sliding_window` tokens keep only that many in the KV
    # cache; every `global_layer_every`-th layer sees the whole context (Gemma 3).
    sliding_window: int | None = None
    global_layer_every: int = 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelInfo:
        """From a manifest's JSON; keys of other versions are ignored, missing ones unknown."""
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        if values.get("special_tokens") is None:
            values.pop("special_tokens", None)
        # Manifests of the first version did not record it; their models all wanted a BOS.
        values.setdefault("add_bos_token", True)
        if values.get("global_layer_every") is None:
            values.pop("global_layer_every", None)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    # ---- derived sizes -------------------------------------------------------------------
    @property
    def key_width(self) -> int:
        """Width of one head's key (and value) vector."""
        if self.head_dim:
            return self.head_dim
        heads = self.heads or 1
        return (self.embedding_length or 0) // heads

    @property
    def kv_width(self) -> int:
        """Width of one token's keys (or values) in one layer: KV heads × head width."""
        return (self.kv_heads or self.heads or 1) * self.key_width

    def kv_cache_bytes(self, context: int, *, batch: int = 1, bytes_per_value: int = 2) -> int:
        """The KV cache for `batch` sequences of `context` tokens (f16 unless told otherwise)."""
        return kv_cache_bytes(
            kv_width=self.kv_width,
            lengths=kv_lengths(
                self.layers or 0, context, self.sliding_window, self.global_layer_every
            ),
            batch=batch,
            bytes_per_value=bytes_per_value,
        )


def kv_lengths(
    layers: int, context: int, sliding_window: int | None, global_layer_every: int
) -> list[int]:
    """How many tokens each layer keeps in its KV cache: sliding-window layers keep fewer."""
    if not sliding_window or not global_layer_every:
        return [context] * layers
    return [
        context if (index + 1) % global_layer_every == 0 else min(context, sliding_window)
        for index in range(layers)
    ]


def kv_cache_bytes(*, kv_width: int, lengths: list[int], batch: int, bytes_per_value: int) -> int:
    """Keys and values (2) × width × bytes × sequences × the tokens every layer keeps."""
    return 2 * kv_width * bytes_per_value * batch * sum(lengths)
