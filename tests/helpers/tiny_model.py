"""Tiny random llama models written as real GGUF files, so engine tests need no downloaded weights.

Weights are F32 (no quantization), so llama.cpp and PyTorch compute the same function and greedy
decoding must agree token for token.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from llmkit.engines.transformers import byte_level_alphabet

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e", "Ġt he", "i n", "a n", "e r", "o n", "Ġ a"]


def write_tiny_llama_gguf(
    path: Path,
    *,
    layers: int = 2,
    embedding: int = 64,
    heads: int = 4,
    kv_heads: int = 2,
    feed_forward: int = 128,
    context: int = 256,
    seed: int = 0,
    chat_template: str | None = CHATML,
    half: bool = False,  # F16 matrices (norms stay F32, as llama.cpp's converter keeps them)
) -> Path:
    import gguf

    tokens = SPECIAL_TOKENS + byte_level_alphabet() + [m.replace(" ", "") for m in MERGES]
    token_types = [3] * len(SPECIAL_TOKENS) + [1] * (len(tokens) - len(SPECIAL_TOKENS))
    vocab = len(tokens)
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-random-llama")
    writer.add_context_length(context)
    writer.add_embedding_length(embedding)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(feed_forward)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(embedding // heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(vocab)
    writer.add_file_type(1 if half else 0)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(token_types)
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(False)
    writer.add_license("apache-2.0")
    if chat_template is not None:
        writer.add_chat_template(chat_template)

    def tensor(name: str, *shape: int, scale: float = 0.08) -> None:
        values = rng.standard_normal(shape) * scale
        writer.add_tensor(name, values.astype(np.float16 if half else np.float32))

    head_dim = embedding // heads
    tensor("token_embd.weight", vocab, embedding, scale=0.5)
    for block in range(layers):
        writer.add_tensor(f"blk.{block}.attn_norm.weight", np.ones(embedding, np.float32))
        tensor(f"blk.{block}.attn_q.weight", embedding, embedding)
        tensor(f"blk.{block}.attn_k.weight", kv_heads * head_dim, embedding)
        tensor(f"blk.{block}.attn_v.weight", kv_heads * head_dim, embedding)
        tensor(f"blk.{block}.attn_output.weight", embedding, embedding)
        writer.add_tensor(f"blk.{block}.ffn_norm.weight", np.ones(embedding, np.float32))
        tensor(f"blk.{block}.ffn_gate.weight", feed_forward, embedding)
        tensor(f"blk.{block}.ffn_up.weight", feed_forward, embedding)
        tensor(f"blk.{block}.ffn_down.weight", embedding, feed_forward)
    writer.add_tensor("output_norm.weight", np.ones(embedding, np.float32))
    tensor("output.weight", vocab, embedding, scale=0.5)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
