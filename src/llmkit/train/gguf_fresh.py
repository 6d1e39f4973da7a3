"""Write a model trained from nothing as a llama GGUF: no base file to copy metadata from.

The hyperparameters come from the model's shape, the vocabulary from its tokenizer: a byte-level
BPE tokenizer.json becomes llama.cpp's `gpt2` tokenizer (tokens, merges, the GPT-2
pre-tokenizer), and a tokenizer reused from a GGUF model has its `tokenizer.*` keys copied as
they are. Tensor names, the rotary row order and the tensor types are the fine-tuning export's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from llmkit.errors import InvalidParameterError, require_module
from llmkit.train.gguf_export import (
    FILE_TYPES,
    copy_metadata,
    encode_tensor,
    finish_gguf,
    gguf_tensor_name,
    to_gguf_layout,
)
from llmkit.train.model_config import ModelShape

# llama.cpp's token types.
NORMAL, CONTROL = 1, 3
# The pre-tokenizer regex llama.cpp applies for "gpt-2": the one `tokenizers`' ByteLevel uses.
GPT2_PRE_TOKENIZER = "gpt-2"


def check_byte_level_bpe(tokenizer_json: Path) -> dict[str, Any]:
    """tokenizer.json's content, or InvalidParameterError when llama.cpp's gpt2 tokenizer would
    not split text the same way (another model type or pre-tokenizer)."""
    data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    model = data.get("model") or {}
    pre = data.get("pre_tokenizer") or {}
    if model.get("type") != "BPE" or pre.get("type") != "ByteLevel" or not pre.get("use_regex"):
        raise InvalidParameterError(
            f"GGUF export of a pretrained model needs a byte-level BPE tokenizer (GPT-2's "
            f"scheme); {tokenizer_json} is {model.get('type')} with a "
            f"{pre.get('type', 'no')} pre-tokenizer. Use --tokenizer train or a GGUF model's."
        )
    return data


def _vocabulary(data: dict[str, Any]) -> tuple[list[str], list[int], list[str]]:
    """(tokens in id order, their llama.cpp types, merges as 'left right')."""
    by_id = {int(i): token for token, i in data["model"]["vocab"].items()}
    special = set()
    for added in data.get("added_tokens", []):
        by_id[int(added["id"])] = added["content"]
        if added.get("special"):
            special.add(int(added["id"]))
    size = max(by_id) + 1
    missing = [i for i in range(size) if i not in by_id]
    if missing:
        raise InvalidParameterError(f"The tokenizer's vocabulary has no token for id {missing[0]}.")
    tokens = [by_id[i] for i in range(size)]
    types = [CONTROL if i in special else NORMAL for i in range(size)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"].get("merges", [])]
    return tokens, types, merges


def _add_hyperparameters(writer: Any, shape: ModelShape, vocab_size: int) -> None:
    writer.add_context_length(shape.max_position_embeddings)
    writer.add_embedding_length(shape.hidden_size)
    writer.add_block_count(shape.num_hidden_layers)
    writer.add_feed_forward_length(shape.intermediate_size)
    writer.add_head_count(shape.num_attention_heads)
    writer.add_head_count_kv(shape.num_key_value_heads)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_rope_freq_base(float(shape.rope_theta))
    writer.add_layer_norm_rms_eps(float(shape.rms_norm_eps))
    writer.add_vocab_size(vocab_size)


def _add_bpe_tokenizer(writer: Any, tokenizer_json: Path, bos_id: int, eos_id: int) -> int:
    tokens, types, merges = _vocabulary(check_byte_level_bpe(tokenizer_json))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(GPT2_PRE_TOKENIZER)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(bos_id)
    writer.add_eos_token_id(eos_id)
    writer.add_add_bos_token(False)  # GPT-2's convention, and what training saw: no BOS
    return len(tokens)


def write_fresh_gguf(
    state: Mapping[str, np.ndarray],
    shape: ModelShape,
    target: Path,
    *,
    tokenizer_json: Path | None,
    tokenizer_gguf: Path | None,
    bos_id: int,
    eos_id: int,
    tensor_type: str,
    name: str,
) -> Path:
    """A complete llama GGUF from Hugging Face-named weights; the vocabulary from TOKENIZER_JSON
    (a byte-level BPE) or copied from TOKENIZER_GGUF (a store model's)."""
    gguf = require_module("gguf", feature="GGUF export", extra="torch")
    if tensor_type not in FILE_TYPES:
        raise InvalidParameterError(
            f"GGUF export supports {', '.join(FILE_TYPES)}, not {tensor_type}."
        )
    writer = gguf.GGUFWriter(str(target), "llama")
    writer.add_name(name)
    writer.add_file_type(FILE_TYPES[tensor_type])
    if tensor_type == "Q8_0":
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    if tokenizer_gguf is not None:
        reader = gguf.GGUFReader(str(tokenizer_gguf))
        copy_metadata(reader, writer, None, skip=("tokenizer.chat_template",), prefix="tokenizer.")
        vocab_size = len(reader.fields["tokenizer.ggml.tokens"].data)
    elif tokenizer_json is not None:
        vocab_size = _add_bpe_tokenizer(writer, tokenizer_json, bos_id, eos_id)
    else:
        raise InvalidParameterError("GGUF export needs the model's tokenizer.")
    _add_hyperparameters(writer, shape, vocab_size)
    heads, kv_heads = shape.num_attention_heads, shape.num_key_value_heads
    written = set()
    for hf_name, weights in state.items():
        gguf_name = gguf_tensor_name(hf_name, shape.num_hidden_layers)
        if gguf_name is None:
            continue  # e.g. rotary caches, which llama.cpp computes itself
        if gguf_name == "output.weight" and shape.tie_word_embeddings:
            continue  # tied: llama.cpp reuses token_embd.weight when output.weight is absent
        if gguf_name in written:
            continue
        data, data_type = encode_tensor(
            to_gguf_layout(hf_name, weights, heads, kv_heads), tensor_type
        )
        writer.add_tensor(gguf_name, data, raw_dtype=data_type)
        written.add(gguf_name)
    finish_gguf(writer)
    return target
