"""Write fine-tuned weights as GGUF for llama.cpp: a merged model (F32/F16/Q8_0) or a LoRA adapter.

Metadata and tokenizer are copied from the base model's GGUF, so the export carries the same
vocabulary, special tokens and (unless overridden) chat template. Hugging Face tensor names are
mapped to GGUF names, and the Q/K rows are permuted back into llama.cpp's rotary layout, the
inverse of what transformers does when it loads a llama GGUF.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from llmkit.errors import InvalidParameterError, require_module

FILE_TYPES = {"F32": 0, "F16": 1, "Q8_0": 7}
# Keys the writer sets itself, or that describe the base file's own tensors and layout.
_NOT_COPIED = (
    "general.architecture",
    "general.file_type",
    "general.quantization_version",
    "general.type",
)


def permute_rotary(weights: np.ndarray, heads: int) -> np.ndarray:
    """Hugging Face's q/k row order to llama.cpp's (each head's two rotary halves interleaved)."""
    return (
        weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def gguf_tensor_name(hf_name: str, blocks: int) -> str | None:
    gguf = require_module("gguf", feature="GGUF export", extra="torch")
    mapping = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, blocks)
    return mapping.get_name(hf_name, try_suffixes=(".weight", ".bias"))


def to_gguf_layout(hf_name: str, weights: np.ndarray, heads: int, kv_heads: int) -> np.ndarray:
    """Rows of q_proj / k_proj (or a LoRA B matrix for them) permuted for llama.cpp's rotary."""
    if hf_name.endswith(("q_proj.weight", "q_proj")):
        return permute_rotary(weights, heads)
    if hf_name.endswith(("k_proj.weight", "k_proj")):
        return permute_rotary(weights, kv_heads)
    return weights


def copy_metadata(
    reader: Any,
    writer: Any,
    chat_template: str | None,
    skip: tuple[str, ...] = (),
    prefix: str = "",
) -> None:
    """Copy the reader's keys (those starting with PREFIX) except the writer's own and SKIP."""
    gguf = require_module("gguf", feature="GGUF export", extra="torch")
    for field in reader.fields.values():
        name = field.name
        if name.startswith("GGUF.") or name in _NOT_COPIED or name in skip:
            continue
        if not name.startswith(prefix):
            continue
        if name == "tokenizer.chat_template" and chat_template is not None:
            continue
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), value_type, sub_type)
    if chat_template is not None:
        writer.add_chat_template(chat_template)


def encode_tensor(weights: np.ndarray, tensor_type: str) -> tuple[np.ndarray, Any]:
    gguf = require_module("gguf", feature="GGUF export", extra="torch")
    types = gguf.GGMLQuantizationType
    # Norms and other vectors stay F32, as llama.cpp's converter keeps them.
    if weights.ndim < 2 or tensor_type == "F32":
        return weights.astype(np.float32), types.F32
    if tensor_type == "Q8_0" and weights.shape[-1] % 32 == 0:
        return gguf.quants.quantize(weights.astype(np.float32), types.Q8_0), types.Q8_0
    return weights.astype(np.float16), types.F16


def write_merged_gguf(
    base_gguf: Path,
    state: Mapping[str, np.ndarray],
    target: Path,
    *,
    tensor_type: str,
    heads: int,
    kv_heads: int,
    chat_template: str | None = None,
    name: str | None = None,
) -> Path:
    """A complete llama GGUF from Hugging Face-named float weights and the base file's metadata."""
    gguf = require_module("gguf", feature="GGUF export", extra="torch")
    if tensor_type not in FILE_TYPES:
        raise InvalidParameterError(
            f"GGUF export supports {', '.join(FILE_TYPES)}, not {tensor_type}."
        )
    reader = gguf.GGUFReader(str(base_gguf))
    blocks = int(reader.fields["llama.block_count"].contents())
    base_tensors = {tensor.name: tensor for tensor in reader.tensors}
    writer = gguf.GGUFWriter(str(target), "llama")
    copy_metadata(reader, writer, chat_template, skip=("general.name",))
    writer.add_name(name or "fine-tuned model")
    writer.add_file_type(FILE_TYPES[tensor_type])
    if tensor_type == "Q8_0":
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    written = set()
    for hf_name, weights in state.items():
        gguf_name = gguf_tensor_name(hf_name, blocks)
        # Tied embeddings: the base has no output.weight, so neither does the export.
        if gguf_name is None or gguf_name not in base_tensors or gguf_name in written:
            continue
        data, data_type = encode_tensor(
            to_gguf_layout(hf_name, weights, heads, kv_heads), tensor_type
        )
        writer.add_tensor(gguf_name, data, raw_dtype=data_type)
        written.add(gguf_name)
    for gguf_name, tensor in base_tensors.items():
        if gguf_name in written:
            continue
        # Tensors with no Hugging Face counterpart (e.g. rope_freqs) are carried over unchanged.
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        writer.add_tensor(
            gguf_name, values.astype(np.float32), raw_dtype=gguf.GGMLQuantizationType.F32
        )
    finish_gguf(writer)
    return target


def write_lora_gguf(
    base_gguf: Path,
    lora: Mapping[str, tuple[np.ndarray, np.ndarray]],
    target: Path,
    *,
    alpha: float,
    heads: int,
    kv_heads: int,
) -> Path:
    """A llama.cpp LoRA adapter: module name -> (A, B) as peft stores them (A: r x in, B: out x r)."""
    gguf = require_module("gguf", feature="GGUF export", extra="torch")
    reader = gguf.GGUFReader(str(base_gguf))
    blocks = int(reader.fields["llama.block_count"].contents())
    writer = gguf.GGUFWriter(str(target), "llama")
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    for module, (a, b) in lora.items():
        gguf_name = gguf_tensor_name(f"{module}.weight", blocks)
        if gguf_name is None:
            raise InvalidParameterError(f"The LoRA module {module} has no GGUF tensor to adapt.")
        # B's rows are the layer's outputs, so q/k adapters get the same rotary permutation.
        writer.add_tensor(f"{gguf_name}.lora_a", a.astype(np.float32))
        writer.add_tensor(
            f"{gguf_name}.lora_b", to_gguf_layout(module, b, heads, kv_heads).astype(np.float32)
        )
    finish_gguf(writer)
    return target


def finish_gguf(writer: Any) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
