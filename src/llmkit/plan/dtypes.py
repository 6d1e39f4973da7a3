"""Number formats: bytes per parameter for full-precision, 8-bit and 4-bit weights."""

from __future__ import annotations

from llmkit.errors import InvalidParameterError

# Bytes per weight. GGUF figures are llama.cpp's block sizes (Q4_0: 18 bytes per 32 weights); the
# K-quant mixes are the averages llama.cpp reports for Llama-style models. nf4 is bitsandbytes' 4-bit
# with double-quantized block scales, as QLoRA uses.
BYTES_PER_PARAMETER: dict[str, float] = {
    "fp32": 4.0,
    "bf16": 2.0,
    "fp16": 2.0,
    "int8": 1.0,
    "q8_0": 34 / 32,
    "q6_k": 210 / 256,
    "q5_k_m": 5.69 / 8,
    "q5_0": 22 / 32,
    "q5_1": 24 / 32,
    "q4_k_m": 4.85 / 8,
    "q4_k_s": 4.58 / 8,
    "q4_0": 18 / 32,
    "q4_1": 20 / 32,
    "q3_k_m": 3.91 / 8,
    "q2_k": 2.96 / 8,
    "nf4": 4.127 / 8,
}
ALIASES = {
    "float32": "fp32",
    "f32": "fp32",
    "float16": "fp16",
    "f16": "fp16",
    "half": "fp16",
    "bfloat16": "bf16",
    "q8": "q8_0",
    "8bit": "int8",
    "q4": "q4_k_m",
    "4bit": "nf4",
    "q5": "q5_k_m",
}
FULL_PRECISION = ("fp32", "bf16", "fp16")


def normalize_dtype(text: str) -> str:
    name = text.strip().lower().replace("-", "_")
    name = ALIASES.get(name, name)
    if name not in BYTES_PER_PARAMETER:
        choices = ", ".join(sorted(BYTES_PER_PARAMETER))
        raise InvalidParameterError(f"Unknown dtype '{text}'; choose one of {choices} (or q4, q8).")
    return name


def bytes_per_parameter(dtype: str) -> float:
    return BYTES_PER_PARAMETER[normalize_dtype(dtype)]


def is_quantized(dtype: str) -> bool:
    return normalize_dtype(dtype) not in FULL_PRECISION


def compute_bytes(dtype: str) -> int:
    """Bytes of an activation: quantized weights are multiplied in 16-bit (fp32 on a CPU)."""
    name = normalize_dtype(dtype)
    return 4 if name == "fp32" else 2
