from pathlib import Path

import pytest

from llmkit.errors import InvalidModelFileError
from llmkit.store.gguf_meta import GGML_TYPES, read_gguf_header


def test_reads_shape_tokens_and_template(tiny_gguf: Path) -> None:
    header = read_gguf_header(tiny_gguf)
    assert header.architecture == "llama"
    assert header.arch_value("block_count") == 2
    assert header.arch_value("attention.head_count_kv") == 2
    assert header.token_text(header.get("tokenizer.ggml.eos_token_id")) == "<|im_end|>"
    assert "<|im_start|>" in header.get("tokenizer.chat_template")
    assert header.quantization == "F32"
    vocab = len(header.get("tokenizer.ggml.tokens"))
    expected = 2 * vocab * 64 + 2 * (64 * 64 * 2 + 32 * 64 * 2 + 3 * 64 * 128 + 2 * 64) + 64
    assert header.parameter_count == expected


def test_type_table_matches_the_gguf_reference() -> None:
    gguf = pytest.importorskip("gguf")
    for type_id, (name, block, size) in GGML_TYPES.items():
        if type_id in {t.value for t in gguf.GGMLQuantizationType}:
            quant = gguf.GGMLQuantizationType(type_id)
            assert quant.name == name
            assert gguf.GGML_QUANT_SIZES[quant] == (block, size)


def test_truncated_file_is_reported(tiny_gguf: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(tiny_gguf.read_bytes()[:-1000])
    with pytest.raises(InvalidModelFileError, match="truncated"):
        read_gguf_header(broken)


def test_header_cut_short_is_reported(tiny_gguf: Path, tmp_path: Path) -> None:
    broken = tmp_path / "cut.gguf"
    broken.write_bytes(tiny_gguf.read_bytes()[:5000])
    with pytest.raises(InvalidModelFileError, match="truncated"):
        read_gguf_header(broken)


@pytest.mark.parametrize(
    "content", [b"", b"not a model at all, just some text" * 4, b"PK\x03\x04" + b"\0" * 64]
)
def test_non_gguf_files_are_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(content)
    with pytest.raises(InvalidModelFileError, match="not a GGUF"):
        read_gguf_header(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidModelFileError, match="does not exist"):
        read_gguf_header(tmp_path / "nope.gguf")
