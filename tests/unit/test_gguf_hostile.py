"""Hostile GGUF headers: each is refused with one clear sentence, never a Python-level crash."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from llmkit.errors import InvalidModelFileError
from llmkit.store.gguf_meta import MAX_ARRAY_DEPTH, read_gguf_header
from llmkit.store.store import ModelStore

_ARRAY, _UINT32 = 9, 4


def _gguf(version: int, metadata: bytes, kv_count: int) -> bytes:
    header = b"GGUF" + struct.pack("<IQQ", version, 0, kv_count)
    return header + metadata + b"\0" * 64


def _key(name: str) -> bytes:
    return struct.pack("<Q", len(name)) + name.encode()


def _nested_arrays(depth: int) -> bytes:
    """A metadata value: `depth` arrays, each holding the next, the innermost one empty."""
    one_level = struct.pack("<IQ", _ARRAY, 1)  # item type: array, one item
    innermost = struct.pack("<IQ", _UINT32, 0)
    return struct.pack("<I", _ARRAY) + one_level * (depth - 1) + innermost


def test_deeply_nested_metadata_arrays_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "deep.gguf"
    path.write_bytes(_gguf(3, _key("evil.nest") + _nested_arrays(5000), 1))
    with pytest.raises(InvalidModelFileError, match="nests arrays more than"):
        read_gguf_header(path)


def test_import_of_a_deep_nest_is_one_sentence_and_writes_nothing(
    fresh_home: Path, tmp_path: Path
) -> None:
    path = tmp_path / "deep.gguf"
    path.write_bytes(_gguf(3, _key("evil.nest") + _nested_arrays(5000), 1))
    with pytest.raises(InvalidModelFileError, match="corrupt"):
        ModelStore().import_model(path, "deep")
    assert not (fresh_home / "models" / "deep").exists()


def test_nesting_within_the_bound_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "nested.gguf"
    path.write_bytes(_gguf(3, _key("ok.nest") + _nested_arrays(MAX_ARRAY_DEPTH), 1))
    value = read_gguf_header(path).get("ok.nest")
    for _ in range(MAX_ARRAY_DEPTH - 1):
        assert isinstance(value, list) and len(value) == 1
        value = value[0]
    assert value == []


@pytest.mark.parametrize("version", [4, 99, 2**32 - 1])
def test_a_future_version_is_unsupported_not_truncated(tmp_path: Path, version: int) -> None:
    path = tmp_path / "future.gguf"
    path.write_bytes(_gguf(version, b"", 0))
    with pytest.raises(InvalidModelFileError, match="unsupported version") as caught:
        read_gguf_header(path)
    assert "truncated" not in str(caught.value) and str(version) in str(caught.value)


def test_an_old_version_is_too_old(tmp_path: Path) -> None:
    path = tmp_path / "old.gguf"
    path.write_bytes(_gguf(1, b"", 0))
    with pytest.raises(InvalidModelFileError, match="too old"):
        read_gguf_header(path)
