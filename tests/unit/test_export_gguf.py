"""GGUF export: Hugging Face weights back to llama.cpp's names and layout, and LoRA adapters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
gguf = pytest.importorskip("gguf")

from llmkit.train.gguf_export import permute_rotary, write_merged_gguf  # noqa: E402


def _tensors(path: Path) -> dict[str, np.ndarray]:
    reader = gguf.GGUFReader(str(path))
    return {t.name: np.array(t.data) for t in reader.tensors}


def test_rotary_permutation_is_a_permutation_of_rows() -> None:
    weights = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
    permuted = permute_rotary(weights, heads=2)
    assert sorted(permuted[:, 0].tolist()) == sorted(weights[:, 0].tolist())
    # Per head, the first and second rotary halves are interleaved: rows 0,2,1,3 of each head.
    assert permuted[:4, 0].tolist() == [0, 6, 3, 9]


def test_round_trip_through_transformers_reproduces_the_gguf(
    tiny_gguf: Path, tmp_path: Path
) -> None:
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(tiny_gguf.parent), gguf_file=tiny_gguf.name
    )
    state = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    out = write_merged_gguf(
        tiny_gguf, state, tmp_path / "out.gguf", tensor_type="F32", heads=4, kv_heads=2, name="copy"
    )
    original, exported = _tensors(tiny_gguf), _tensors(out)
    assert original.keys() == exported.keys()
    for name, values in original.items():
        np.testing.assert_allclose(exported[name], values, rtol=0, atol=1e-6, err_msg=name)
    reader = gguf.GGUFReader(str(out))
    assert (
        reader.fields["tokenizer.chat_template"].contents()
        == gguf.GGUFReader(str(tiny_gguf)).fields["tokenizer.chat_template"].contents()
    )
    assert reader.fields["general.name"].contents() == "copy"


def test_q8_0_export_quantizes_matrices_and_keeps_norms(tiny_gguf: Path, tmp_path: Path) -> None:
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(tiny_gguf.parent), gguf_file=tiny_gguf.name
    )
    state = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    out = write_merged_gguf(
        tiny_gguf, state, tmp_path / "q.gguf", tensor_type="Q8_0", heads=4, kv_heads=2
    )
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(out)).tensors}
    assert types["blk.0.attn_q.weight"] == "Q8_0"
    assert types["blk.0.attn_norm.weight"] == "F32"
