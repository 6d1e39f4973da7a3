"""The shape of a transformer (layers, widths, heads, vocabulary) and the parameter count it implies.

A `ModelSpec` is built from a Hugging Face config.json, a GGUF header or the bundled catalog; every
estimate in the planner is computed from it, so the parameter count never comes from a model's name.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from llmkit.errors import InvalidModelFileError
from llmkit.store.model_info import ModelInfo, kv_lengths
from llmkit.store.store import describe_gguf

# Model types whose MLP is a plain up/activation/down (no gate) and whose norms are LayerNorms.
_PLAIN_MLP_TYPES = {"gpt2", "gpt_neox", "gptj", "phi", "falcon", "opt", "bloom", "starcoder2"}
# config.json leaves tie_word_embeddings out when it equals the model class's default.
_UNTIED_BY_DEFAULT = {
    "llama",
    "mistral",
    "mixtral",
    "qwen2",
    "qwen2_moe",
    "qwen3",
    "qwen3_moe",
    "phi3",
}
_QKV_BIAS_TYPES = {"qwen2", "qwen2_moe"}
_QK_NORM_TYPES = {"qwen3", "qwen3_moe", "gemma3", "gemma3_text", "olmo2"}
_FOUR_NORM_TYPES = {"gemma2", "gemma3", "gemma3_text"}


@dataclass(frozen=True)
class ModelSpec:
    """Everything about a model's architecture that memory and compute depend on."""

    name: str
    architecture: str
    hidden_size: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn_size: int
    vocab_size: int
    max_context: int | None = None
    tied_embeddings: bool = False
    gated_mlp: bool = True
    qkv_bias: bool = False
    qk_norm: bool = False
    norms_per_layer: int = 2
    norm_bias: bool = False
    mlp_bias: bool = False
    experts: int = 0  # 0 for a dense model
    experts_per_token: int = 0
    expert_ffn_size: int = 0
    sliding_window: int | None = None
    global_layer_every: int = 0  # Gemma 3: every 6th layer attends to the whole context
    source: str = "catalog"
    weight_bytes_override: int | None = None  # exact size of a quantized file's tensors
    native_dtype: str | None = None  # a GGUF file's quantization, or config.json's torch_dtype
    parameter_override: int | None = None  # exact count from a GGUF header's tensors

    # ---- widths --------------------------------------------------------------------------
    @property
    def q_width(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.head_dim

    # ---- parameter counts ----------------------------------------------------------------
    def embedding_parameters(self) -> int:
        return self.vocab_size * self.hidden_size

    def output_parameters(self) -> int:
        """The LM head; zero when it shares the embedding matrix."""
        return 0 if self.tied_embeddings else self.vocab_size * self.hidden_size

    def attention_parameters(self) -> int:
        """One layer's q, k, v, o projections (with biases and q/k norms where the model has them)."""
        h = self.hidden_size
        count = h * self.q_width + 2 * h * self.kv_width + self.q_width * h
        if self.qkv_bias:
            count += self.q_width + 2 * self.kv_width
        if self.qk_norm:
            count += 2 * self.head_dim
        return count

    def mlp_parameters(self) -> int:
        """One layer's feed-forward block: all experts and the router for a mixture of experts."""
        h = self.hidden_size
        if self.experts:
            return self.experts * 3 * h * self.expert_ffn_size + h * self.experts
        if self.gated_mlp:
            return 3 * h * self.ffn_size + (3 * self.ffn_size if self.mlp_bias else 0)
        return 2 * h * self.ffn_size + (self.ffn_size + h if self.mlp_bias else 0)

    def norm_parameters(self) -> int:
        return self.hidden_size * (2 if self.norm_bias else 1)

    def layer_parameters(self) -> int:
        return (
            self.attention_parameters()
            + self.mlp_parameters()
            + self.norms_per_layer * self.norm_parameters()
        )

    def linear_parameters(self) -> int:
        """Weights inside the transformer blocks' linear layers: what 4-bit quantization shrinks."""
        h = self.hidden_size
        attention = h * self.q_width * 2 + 2 * h * self.kv_width
        return self.layers * (attention + self.mlp_parameters())

    @property
    def parameters(self) -> int:
        if self.parameter_override:
            return self.parameter_override
        return (
            self.embedding_parameters()
            + self.output_parameters()
            + self.layers * self.layer_parameters()
            + self.norm_parameters()
        )

    @property
    def active_parameters(self) -> int:
        """Parameters used per token: a mixture of experts runs only a few experts for each."""
        if not self.experts:
            return self.parameters
        idle = self.experts - self.experts_per_token
        return self.parameters - self.layers * idle * 3 * self.hidden_size * self.expert_ffn_size

    def kv_layers_and_lengths(self, context: int) -> list[int]:
        """How many tokens each layer keeps in its KV cache: sliding-window layers keep fewer."""
        return kv_lengths(self.layers, context, self.sliding_window, self.global_layer_every)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["parameters"] = self.parameters
        return data


def spec_from_hf_config(config: dict[str, Any], *, name: str, source: str) -> ModelSpec:
    """A spec from a config.json dict (multimodal configs contribute their text model)."""
    if isinstance(config.get("text_config"), dict):
        merged = {**config["text_config"]}
        merged.setdefault("model_type", config.get("model_type"))
        config = merged
    model_type = str(config.get("model_type") or "unknown")
    required = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
    missing = [key for key in required if not config.get(key)]
    if missing:
        raise InvalidModelFileError(
            f"The config of '{name}' ({model_type}) lacks {', '.join(missing)}; "
            "the planner supports decoder-only models with Llama-style config keys."
        )
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or hidden // heads)
    experts = int(config.get("num_local_experts") or config.get("num_experts") or 0)
    tied_default = model_type not in _UNTIED_BY_DEFAULT
    sliding = config.get("sliding_window") if model_type in _FOUR_NORM_TYPES else None
    return ModelSpec(
        name=name,
        architecture=model_type,
        hidden_size=hidden,
        layers=int(config["num_hidden_layers"]),
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        ffn_size=int(config.get("intermediate_size") or 4 * hidden),
        vocab_size=int(config["vocab_size"]),
        max_context=config.get("max_position_embeddings"),
        tied_embeddings=bool(config.get("tie_word_embeddings", tied_default)),
        gated_mlp=model_type not in _PLAIN_MLP_TYPES,
        qkv_bias=model_type in _QKV_BIAS_TYPES or bool(config.get("attention_bias")),
        qk_norm=model_type in _QK_NORM_TYPES,
        norms_per_layer=4 if model_type in _FOUR_NORM_TYPES else 2,
        norm_bias=model_type in _PLAIN_MLP_TYPES,
        mlp_bias=bool(config.get("mlp_bias")) or model_type in _PLAIN_MLP_TYPES,
        experts=experts,
        experts_per_token=int(config.get("num_experts_per_tok") or 0) if experts else 0,
        expert_ffn_size=int(
            config.get("moe_intermediate_size") or config.get("intermediate_size") or 0
        )
        if experts
        else 0,
        sliding_window=int(sliding) if sliding else None,
        global_layer_every=int(config.get("sliding_window_pattern") or 6) if sliding else 0,
        source=source,
        native_dtype=config.get("torch_dtype") or config.get("dtype"),
    )


def spec_from_model_info(info: ModelInfo, *, name: str, source: str, **facts: Any) -> ModelSpec:
    """A spec from the store's typed description of a model; FACTS add what only the weights
    themselves tell (tensor names, exact byte counts)."""
    hidden, heads = info.embedding_length or 0, info.heads or 0
    if not hidden or not heads or not info.layers:
        raise InvalidModelFileError(
            f"The description of '{name}' lacks layer, width or head counts; it cannot be planned."
        )
    return ModelSpec(
        name=name,
        architecture=info.architecture or "unknown",
        hidden_size=hidden,
        layers=info.layers,
        heads=heads,
        kv_heads=info.kv_heads or heads,
        head_dim=info.key_width,
        ffn_size=info.feed_forward_length or 4 * hidden,
        vocab_size=info.vocab_size or 0,
        max_context=info.context_length,
        sliding_window=info.sliding_window,
        global_layer_every=info.global_layer_every,
        source=source,
        native_dtype=str(info.quantization).lower() if info.quantization else None,
        parameter_override=info.parameters,
        **facts,
    )


def spec_from_gguf(header: Any, *, name: str, source: str) -> ModelSpec:
    """A spec from a GGUF header: exact parameter count and weight bytes come from its tensors."""
    info = describe_gguf(header)
    tensor_names = {tensor.name for tensor in header.tensors}
    experts = int(header.arch_value("expert_count") or 0)
    expert_ffn = header.arch_value("expert_feed_forward_length") or info.feed_forward_length
    return spec_from_model_info(
        info,
        name=name,
        source=source,
        tied_embeddings="output.weight" not in tensor_names,
        qkv_bias="blk.0.attn_q.bias" in tensor_names,
        qk_norm="blk.0.attn_q_norm.weight" in tensor_names,
        norms_per_layer=4 if "blk.0.post_attention_norm.weight" in tensor_names else 2,
        experts=experts,
        experts_per_token=int(header.arch_value("expert_used_count") or 0),
        expert_ffn_size=int(expert_ffn or 0) if experts else 0,
        weight_bytes_override=sum(tensor.n_bytes for tensor in header.tensors),
    )
