"""Peak memory of chatting with, LoRA-tuning or fully fine-tuning a model, part by part.

Each part carries the formula it came from. The activation terms count the tensors PyTorch's
autograd saves for backward in a Llama-style decoder (RMSNorm upcast to fp32, scaled-dot-product
attention, gated MLP, Hugging Face's fp32 cross-entropy), which is what benchmarks/plan_accuracy.py
checks against measured peaks. The total is the peak, not the sum: activations are freed while
gradients are created, so the two are never all alive at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from llmkit.errors import InvalidParameterError
from llmkit.plan.dtypes import bytes_per_parameter, compute_bytes, is_quantized, normalize_dtype
from llmkit.plan.spec import ModelSpec
from llmkit.store.model_info import kv_cache_bytes

TASKS = ("chat", "lora", "qlora", "full")
OPTIMIZERS = {"adamw": 2, "adamw8bit": 2, "sgd": 1}  # state tensors per trainable parameter
ENGINES = ("auto", "llamacpp", "transformers")  # the names `llmkit run --engine` uses
ENGINE_ALIASES = {"llama.cpp": "llamacpp", "llama-cpp": "llamacpp", "torch": "transformers"}
LORA_MODULES = ("q", "k", "v", "o", "gate", "up", "down")
LORA_TARGET_SETS = {
    "all": LORA_MODULES,
    "attention": ("q", "k", "v", "o"),
    "qv": ("q", "v"),
    "mlp": ("gate", "up", "down"),
}
GIB = 1024**3
MIB = 1024**2
LLAMA_CPP_UBATCH = (
    512  # llama.cpp's default micro-batch: the prompt is evaluated this many at a time
)
CPU_RUNTIME_BYTES = (
    64 * MIB
)  # thread pools, kernels' scratch and allocator slack in a torch process
CUDA_CONTEXT_BYTES = 512 * MIB  # the CUDA context and cuBLAS workspace, outside torch's allocator
LLAMA_CPP_RUNTIME_BYTES = 16 * MIB


@dataclass(frozen=True)
class PlanRequest:
    """What the user wants to do; the defaults match `llmkit plan`'s."""

    task: str = "chat"
    dtype: str | None = None  # None: the file's own format for chat, bf16 for training
    batch_size: int = 1
    seq_len: int = 512  # training: tokens per sequence
    context: int | None = None  # chat: tokens held in the KV cache (prompt and answer)
    optimizer: str = "adamw"
    grad_checkpointing: bool = False
    lora_r: int = 16
    lora_targets: str = "all"
    device_type: str = "cpu"  # "cpu" or "cuda": decides the engine's overheads
    engine: str = "auto"
    attention: str = "sdpa"  # "eager" keeps the full attention matrix
    fsdp: int = 1  # training: processes FSDP shards weights, gradients and optimizer state over

    def validated(self, spec: ModelSpec) -> PlanRequest:
        """A copy with defaults filled in; raises InvalidParameterError for impossible values."""
        if self.task not in TASKS:
            raise InvalidParameterError(
                f"Unknown task '{self.task}'; choose one of {', '.join(TASKS)}."
            )
        if self.optimizer not in OPTIMIZERS:
            raise InvalidParameterError(
                f"Unknown optimizer '{self.optimizer}'; choose one of {', '.join(OPTIMIZERS)}."
            )
        engine = ENGINE_ALIASES.get(self.engine, self.engine)
        if engine not in ENGINES:
            raise InvalidParameterError(
                f"Unknown engine '{self.engine}'; choose one of {', '.join(ENGINES)}."
            )
        if self.attention not in ("sdpa", "eager"):
            raise InvalidParameterError("--attention must be 'sdpa' or 'eager'.")
        for label, value in (
            ("batch size", self.batch_size),
            ("sequence length", self.seq_len),
            ("LoRA rank", self.lora_r),
        ):
            if value < 1:
                raise InvalidParameterError(f"The {label} must be at least 1, not {value}.")
        if self.fsdp < 1:
            raise InvalidParameterError(f"--fsdp must be at least 1 process, not {self.fsdp}.")
        if self.fsdp > 1 and self.task == "chat":
            raise InvalidParameterError("--fsdp shards training; plan it with --task lora or full.")
        if self.context is not None and self.context < 1:
            raise InvalidParameterError(
                f"The context must be at least 1 token, not {self.context}."
            )
        lora_modules(self.lora_targets)
        dtype = self.dtype
        if dtype is None:
            dtype = (
                spec.native_dtype if self.task == "chat" and spec.native_dtype else None
            ) or "bf16"
        dtype = normalize_dtype(dtype)
        if self.task in ("full", "lora") and is_quantized(dtype):
            raise InvalidParameterError(
                f"Training with {dtype} weights is QLoRA: use --task qlora (or --dtype bf16/fp32)."
            )
        if self.task == "qlora" and not is_quantized(dtype):
            dtype = "nf4"
        context = self.context or min(spec.max_context or 4096, 4096)
        return replace(self, dtype=dtype, context=context, engine=engine)


def lora_modules(targets: str) -> tuple[str, ...]:
    """'all', 'attention', 'qv', 'mlp' or a comma list such as 'q,v,down' (q_proj etc. accepted)."""
    if targets in LORA_TARGET_SETS:
        return LORA_TARGET_SETS[targets]
    modules = tuple(
        part.strip().removesuffix("_proj") for part in targets.split(",") if part.strip()
    )
    unknown = [module for module in modules if module not in LORA_MODULES]
    if unknown or not modules:
        raise InvalidParameterError(
            f"Unknown LoRA target(s) {', '.join(unknown) or targets!r}; use all, attention, qv, mlp "
            f"or a comma list of {', '.join(LORA_MODULES)}."
        )
    return modules


@dataclass
class MemoryPart:
    key: str
    label: str
    bytes: float
    formula: str

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "bytes": round(self.bytes),
            "formula": self.formula,
        }


@dataclass
class MemoryEstimate:
    """The parts (which add up to the total) and the facts they were computed from."""

    spec: ModelSpec
    request: PlanRequest
    parts: list[MemoryPart] = field(default_factory=list)
    trainable_parameters: int = 0
    engine: str = "transformers"
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(part.bytes for part in self.parts)

    def part(self, key: str) -> float:
        return sum(part.bytes for part in self.parts if part.key == key)

    def add(self, key: str, label: str, value: float, formula: str) -> None:
        self.parts.append(MemoryPart(key, label, value, formula))

    def to_json(self) -> dict[str, Any]:
        return {
            "total_bytes": round(self.total),
            "parts": [part.to_json() for part in self.parts],
            "parameters": self.spec.parameters,
            "trainable_parameters": self.trainable_parameters,
            "engine": self.engine,
            "notes": self.notes,
        }


def gib(value: float) -> str:
    return f"{value / GIB:.2f} GiB" if abs(value) >= GIB / 10 else f"{value / MIB:.1f} MiB"


def estimate_memory(spec: ModelSpec, request: PlanRequest) -> MemoryEstimate:
    """The peak memory of the request, part by part."""
    request = request.validated(spec)
    if request.task == "chat":
        return _inference(spec, request)
    return _training(spec, request)


# ---- inference -----------------------------------------------------------------------------
def _inference_engine(spec: ModelSpec, request: PlanRequest) -> str:
    if request.engine != "auto":
        return request.engine
    # Quantized GGUF weights are what llama.cpp runs; full-precision weights are torch's.
    return "llamacpp" if is_quantized(request.dtype or "bf16") else "transformers"


def weight_bytes(spec: ModelSpec, dtype: str) -> tuple[float, str]:
    """Bytes of all weights in `dtype`; a GGUF file's own format uses its exact tensor sizes."""
    if spec.weight_bytes_override and dtype == spec.native_dtype:
        return float(spec.weight_bytes_override), "the tensor sizes in the GGUF file"
    if dtype == "nf4":
        # bitsandbytes quantizes the blocks' linear layers; embeddings and norms stay in bf16.
        linear = spec.linear_parameters()
        rest = spec.parameters - linear
        return linear * bytes_per_parameter("nf4") + rest * 2, (
            f"{linear:,} linear weights × {bytes_per_parameter('nf4'):.3f} B + {rest:,} others × 2 B"
        )
    per = bytes_per_parameter(dtype)
    return spec.parameters * per, f"{spec.parameters:,} parameters × {per:g} B ({dtype})"


def _inference(spec: ModelSpec, request: PlanRequest) -> MemoryEstimate:
    dtype = request.dtype or "bf16"
    engine = _inference_engine(spec, request)
    estimate = MemoryEstimate(spec, request, engine=engine)
    batch, context = request.batch_size, request.context or 1
    weights, weights_formula = weight_bytes(spec, dtype)
    estimate.add("weights", "weights", weights, weights_formula)

    kv_bytes = 2 if engine == "llamacpp" or dtype != "fp32" else 4
    lengths = spec.kv_layers_and_lengths(context)
    kv = kv_cache_bytes(
        kv_width=spec.kv_width, lengths=lengths, batch=batch, bytes_per_value=kv_bytes
    )
    windowed = " (sliding-window layers keep fewer)" if len(set(lengths)) > 1 else ""
    estimate.add(
        "kv_cache",
        "KV cache",
        kv,
        f"2 (K and V) × {spec.layers} layers × {spec.kv_width} (kv heads × head dim) × {context} tokens "
        f"× batch {batch} × {kv_bytes} B{windowed}",
    )

    h, f, v = spec.hidden_size, _token_ffn(spec), spec.vocab_size
    if engine == "llamacpp":
        chunk = min(context, LLAMA_CPP_UBATCH)
        layer = (3 * f + 6 * h) * 4
        if request.device_type == "cpu":
            # Without flash attention the scores of a micro-batch against the whole context are
            # materialised. The buffer's area reserved for a micro-batch of logits is never
            # touched when only the last token's logits are asked for, so it costs no RAM.
            compute = chunk * (spec.heads * context * 4 + layer)
            formula = f"{chunk} tokens per micro-batch × ({spec.heads} heads × {context} context × 4 B + (3·ffn + 6·hidden) × 4 B)"
        else:
            # On a GPU the whole reserved buffer is allocated: the larger of logits and one layer.
            compute = chunk * max(v * 4 + 2 * h * 4, layer)
            formula = (
                f"{chunk} tokens per micro-batch × max(vocab {v} × 4 B, (3·ffn + 6·hidden) × 4 B)"
            )
        estimate.add("activations", "compute buffer", compute, formula)
        estimate.add(
            "logits", "logits", batch * v * 4, f"batch {batch} × vocab {v} × 4 B (last token)"
        )
        overhead = LLAMA_CPP_RUNTIME_BYTES
    else:
        prompt = context
        cb = compute_bytes(dtype)
        per_token = (3 * f + 6 * h) * cb
        if request.attention == "eager":
            per_token += spec.heads * prompt * 4
        estimate.add(
            "activations",
            "activations (prompt)",
            batch * prompt * per_token,
            f"batch {batch} × {prompt} prompt tokens × (3·ffn + 6·hidden) × {cb} B — one layer at a time",
        )
        estimate.add(
            "logits",
            "logits",
            batch * v * 8,
            f"batch {batch} × vocab {v} × 8 B (last token, fp32 copy)",
        )
        overhead = CPU_RUNTIME_BYTES
    _add_overhead(estimate, request, overhead)
    if spec.max_context and context > spec.max_context:
        estimate.notes.append(
            f"{spec.name} supports {spec.max_context:,} tokens of context; {context:,} is beyond it."
        )
    return estimate


# ---- training ------------------------------------------------------------------------------
def _token_ffn(spec: ModelSpec) -> int:
    """The MLP width one token passes through (a mixture of experts runs only a few experts)."""
    if spec.experts:
        return spec.experts_per_token * spec.expert_ffn_size
    return spec.ffn_size


def lora_parameters(spec: ModelSpec, modules: tuple[str, ...], rank: int) -> int:
    """Trainable LoRA weights: rank × (inputs + outputs) of every targeted projection in every layer."""
    h, f = spec.hidden_size, spec.ffn_size
    shapes = {
        "q": (h, spec.q_width),
        "k": (h, spec.kv_width),
        "v": (h, spec.kv_width),
        "o": (spec.q_width, h),
        "gate": (h, f),
        "up": (h, f),
        "down": (f, h),
    }
    experts = max(spec.experts, 1)
    total = 0
    for module in modules:
        inputs, outputs = shapes[module]
        if spec.experts and module in ("gate", "up", "down"):
            inputs, outputs = (
                (h, spec.expert_ffn_size) if module != "down" else (spec.expert_ffn_size, h)
            )
            total += experts * rank * (inputs + outputs)
        else:
            total += rank * (inputs + outputs)
    return spec.layers * total


def layer_activation_bytes(spec: ModelSpec, request: PlanRequest, dtype_bytes: int) -> float:
    """Bytes autograd saves per token in one decoder layer, with all weights or only LoRA trainable."""
    h, b, f = spec.hidden_size, dtype_bytes, _token_ffn(spec)
    full = request.task == "full"
    # RMSNorm upcasts to fp32: it keeps its fp32 input, and (when its weight trains) its normed output.
    norm = (4 + b) if full and b < 4 else (8 if full else 4)
    saved = spec.norms_per_layer * norm * h
    # Scaled-dot-product attention keeps q, k, v and its output (the o projection's input).
    saved += b * (2 * spec.q_width + 2 * spec.kv_width) + 4 * spec.heads
    if spec.qk_norm:
        saved += 8 * (spec.q_width + spec.kv_width)
    if request.attention == "eager":
        repeated = 2 * (spec.q_width - spec.kv_width)  # k and v repeated for every query head
        saved += b * repeated + spec.heads * request.seq_len * (4 + (b if b < 4 else 0))
    gated = 3 if spec.gated_mlp else 1  # gate, activation and up (or just the activation's input)
    saved += gated * f * b
    if full:
        return saved + 2 * h * b + f * b  # the inputs of the q/k/v, gate/up and down projections
    return saved + _lora_input_bytes(spec, request, b)


def _lora_input_bytes(spec: ModelSpec, request: PlanRequest, b: int) -> float:
    """What LoRA adapters keep: their inputs (cast to fp32 per adapter when the base is 16-bit)."""
    h, f = spec.hidden_size, _token_ffn(spec)
    modules = lora_modules(request.lora_targets)
    saved = 4.0 * request.lora_r * len(modules)  # each adapter's rank-r middle activation
    if b >= 4:
        # fp32 base: adapters share the projections' inputs; o's input is attention's saved output.
        saved += (
            4
            * h
            * (
                any(m in modules for m in ("q", "k", "v"))
                + any(m in modules for m in ("gate", "up"))
            )
        )
        saved += 4 * f if "down" in modules else 0
        return saved
    saved += 4 * h * sum(module in modules for module in ("q", "k", "v", "o", "gate", "up"))
    return saved + (4 * f if "down" in modules else 0)


def _training(spec: ModelSpec, request: PlanRequest) -> MemoryEstimate:
    dtype = request.dtype or "bf16"
    estimate = MemoryEstimate(spec, request, engine="transformers")
    full = request.task == "full"
    n = spec.parameters
    b = compute_bytes(dtype)
    tokens = request.batch_size * request.seq_len
    h, v = spec.hidden_size, spec.vocab_size

    # -- weights, gradients, optimizer states
    base, base_formula = weight_bytes(spec, dtype)
    if full:
        trainable, param_bytes = n, bytes_per_parameter(dtype)
    else:
        trainable, param_bytes = (
            lora_parameters(spec, lora_modules(request.lora_targets), request.lora_r),
            4.0,
        )
    estimate.trainable_parameters = trainable
    adapters = 0.0 if full else trainable * 4.0
    shards = request.fsdp
    # FSDP splits every parameter (and so its gradient and optimizer state) over the processes.
    split = f" ÷ {shards} (FSDP shards)" if shards > 1 else ""
    estimate.add(
        "weights",
        "weights",
        (base + adapters) / shards,
        base_formula + ("" if full else f" + {trainable:,} LoRA weights × 4 B (fp32)") + split,
    )
    gradients = trainable * param_bytes / shards
    estimate.add(
        "gradients",
        "gradients",
        gradients,
        f"{trainable:,} trainable × {param_bytes:g} B{split}",
    )
    states, state_formula = _optimizer_states(request.optimizer, trainable, param_bytes)
    estimate.add(
        "optimizer",
        f"optimizer states ({request.optimizer})",
        states / shards,
        state_formula + split,
    )
    if shards > 1:
        _add_gathered(estimate, spec, request, param_bytes if full else 0.0)

    # -- activations and logits
    per_layer = layer_activation_bytes(spec, request, b)
    final = (((4 + b) if b < 4 else 8) + b) * h if full else 4 * h
    if request.grad_checkpointing:
        layers = tokens * (spec.layers * b * h + per_layer)
        act_formula = (
            f"{tokens} tokens × ({spec.layers} layer inputs × hidden {h} × {b} B + one recomputed layer "
            f"{per_layer:,.0f} B)"
        )
    else:
        layers = tokens * spec.layers * per_layer
        if not full:
            layers -= tokens * 4 * h  # the first norm's input needs no gradient under LoRA
        act_formula = (
            f"{tokens} tokens × {spec.layers} layers × {per_layer:,.0f} B saved per token and layer"
        )
    activations = layers + tokens * final
    estimate.add("activations", "activations", activations, act_formula)
    logits = 12.0 * tokens * v
    estimate.add(
        "logits",
        "logits and loss",
        logits,
        f"{tokens} tokens × vocab {v} × 12 B (fp32 log-softmax, its gradient and the loss gradient)",
    )

    # -- the peak: activations are freed as gradients are created, and the optimizer step needs scratch
    head_gradient = v * h * param_bytes if full else 0.0
    # Checkpointing recomputes a layer only after the logits' buffers are freed.
    recompute = tokens * per_layer if request.grad_checkpointing else 0.0
    start = (
        activations
        - recompute
        + max(logits, tokens * v * b + head_gradient, head_gradient + recompute)
    )
    tied_scratch = v * h * param_bytes if full and spec.tied_embeddings else 0.0
    end = gradients + tied_scratch
    largest = max(v * h, spec.hidden_size * _token_ffn(spec)) if full else 0
    step_scratch = (
        (trainable if request.device_type == "cuda" else 2 * largest) * param_bytes / shards
    )
    step = gradients + step_scratch
    peak_extra = max(start, end, step)
    listed = gradients + activations + logits
    estimate.add(
        "overlap",
        "not alive at once",
        peak_extra - listed,
        "peak = weights + optimizer + max(activations + logits [start of backward], "
        "gradients [end of backward], gradients + optimizer-step scratch)",
    )
    if dtype == "nf4":
        largest_linear = h * max(spec.ffn_size, spec.q_width) * 2
        estimate.add(
            "dequant", "4-bit dequantization buffer", largest_linear, "one linear layer in bf16"
        )
    _add_overhead(estimate, request, CPU_RUNTIME_BYTES)
    if spec.max_context and request.seq_len > spec.max_context:
        estimate.notes.append(
            f"{spec.name} supports {spec.max_context:,} tokens of context; --seq-len {request.seq_len:,} is beyond it."
        )
    return estimate


def _add_gathered(
    estimate: MemoryEstimate, spec: ModelSpec, request: PlanRequest, gradient_bytes: float
) -> None:
    """What FSDP holds whole besides the shards: the root's weights (embeddings, final norm, LM
    head) for the whole pass, and two decoder layers (the running one and the next, fetched
    ahead), whose gradients are also whole until they are reduce-scattered."""
    per = bytes_per_parameter(request.dtype or "bf16")
    root = spec.embedding_parameters() + spec.output_parameters() + spec.norm_parameters()
    layers = 2 * spec.layer_parameters()
    estimate.add(
        "fsdp_gathered",
        "FSDP all-gathered weights",
        root * per + layers * (per + gradient_bytes),
        f"({root:,} root + 2 layers × {spec.layer_parameters():,}) parameters × {per:g} B"
        + (f" + 2 layers' gradients × {gradient_bytes:g} B" if gradient_bytes else ""),
    )


def _optimizer_states(optimizer: str, trainable: int, param_bytes: float) -> tuple[float, str]:
    if optimizer == "adamw8bit":
        # bitsandbytes: two uint8 states plus an fp32 scale per 256-value block for each.
        per = 2 * (1 + 4 / 256)
        return trainable * per, f"{trainable:,} trainable × 2 states × (1 B + block scales)"
    count = OPTIMIZERS[optimizer]
    label = "momentum" if optimizer == "sgd" else "2 states (exp_avg, exp_avg_sq)"
    return trainable * count * param_bytes, f"{trainable:,} trainable × {label} × {param_bytes:g} B"


def _add_overhead(estimate: MemoryEstimate, request: PlanRequest, runtime: float) -> None:
    if request.device_type == "cuda":
        estimate.add(
            "overhead",
            "framework overhead",
            CUDA_CONTEXT_BYTES + 0.05 * estimate.total,
            "CUDA context and cuBLAS workspace (512 MiB) + 5% allocator rounding",
        )
    else:
        estimate.add(
            "overhead", "framework overhead", runtime, f"runtime scratch ({runtime / MIB:.0f} MiB)"
        )
