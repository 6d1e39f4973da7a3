"""A small, dependency-free reader for GGUF headers: metadata, tensor shapes and a truncation check.

Reading the header alone is fast (no weights are touched), so `list` and `show` stay instant and a
broken file is reported before any engine tries to load it.
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmkit.errors import InvalidModelFileError

GGUF_MAGIC = b"GGUF"

# ggml tensor type id -> (name, elements per block, bytes per block)
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292), 16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110), 22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2), 26: ("I32", 1, 4),
    27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56), 30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66), 39: ("MXFP4", 32, 17),
}  # fmt: skip

# general.file_type (llama_ftype) -> the quantization name people know
FILE_TYPES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S",
    29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4",
}  # fmt: skip

_SCALARS: dict[int, str] = {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
    12: "<d",
}  # fmt: skip
_STRING, _ARRAY = 8, 9
# The versions this reader understands; others may lay the header out differently.
SUPPORTED_VERSIONS = (2, 3)
# Real files nest metadata arrays one or two deep; a deeper nest is a file built to exhaust the
# reader's stack, so it is refused as corrupt.
MAX_ARRAY_DEPTH = 8


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    type_name: str
    offset: int
    n_bytes: int

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)


@dataclass
class GGUFHeader:
    """What a GGUF file says about itself."""

    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: list[TensorInfo] = field(default_factory=list)
    data_offset: int = 0
    file_size: int = 0

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    @property
    def architecture(self) -> str:
        return str(self.get("general.architecture", "unknown"))

    def arch_value(self, suffix: str, default: Any = None) -> Any:
        """An architecture-scoped key, e.g. arch_value('block_count') -> llama.block_count."""
        return self.get(f"{self.architecture}.{suffix}", default)

    @property
    def parameter_count(self) -> int:
        return sum(tensor.n_elements for tensor in self.tensors)

    @property
    def quantization(self) -> str:
        file_type = self.get("general.file_type")
        if file_type is not None and int(file_type) in FILE_TYPES:
            return FILE_TYPES[int(file_type)]
        # Without a file type, name the type that holds most of the weights.
        by_type: dict[str, int] = {}
        for tensor in self.tensors:
            by_type[tensor.type_name] = by_type.get(tensor.type_name, 0) + tensor.n_elements
        return max(by_type, key=by_type.__getitem__) if by_type else "unknown"

    def token_text(self, token_id: Any) -> str | None:
        tokens = self.get("tokenizer.ggml.tokens")
        if token_id is None or tokens is None or not 0 <= int(token_id) < len(tokens):
            return None
        return tokens[int(token_id)]


class _Cursor:
    def __init__(self, buffer: mmap.mmap | bytes, path: Path) -> None:
        self.buffer = buffer
        self.position = 0
        self.path = path

    def take(self, size: int) -> memoryview:
        end = self.position + size
        if end > len(self.buffer):
            raise InvalidModelFileError(
                f"{self.path} is truncated: its GGUF header ends before the data it describes."
            )
        view = memoryview(self.buffer)[self.position : end]
        self.position = end
        return view

    def scalar(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        length = self.scalar("<Q")
        return bytes(self.take(length)).decode("utf-8", errors="replace")

    def strings(self, count: int) -> list[str]:
        # Vocabularies hold ~10^5 strings: read them straight off the buffer, not via take().
        buffer, position, size = self.buffer, self.position, len(self.buffer)
        unpack_length = struct.Struct("<Q").unpack_from
        items = []
        for _ in range(count):
            if position + 8 > size:
                raise InvalidModelFileError(f"{self.path} is truncated inside its vocabulary.")
            (length,) = unpack_length(buffer, position)
            position += 8
            items.append(buffer[position : position + length].decode("utf-8", errors="replace"))
            position += length
        if position > size:
            raise InvalidModelFileError(f"{self.path} is truncated inside its vocabulary.")
        self.position = position
        return items

    def value(self, value_type: int, depth: int = 0) -> Any:
        if value_type in _SCALARS:
            return self.scalar(_SCALARS[value_type])
        if value_type == _STRING:
            return self.string()
        if value_type == _ARRAY:
            if depth >= MAX_ARRAY_DEPTH:
                raise InvalidModelFileError(
                    f"{self.path} is corrupt: its metadata nests arrays more than "
                    f"{MAX_ARRAY_DEPTH} deep."
                )
            item_type = self.scalar("<I")
            count = self.scalar("<Q")
            if item_type in _SCALARS and item_type != 7:
                dtype = np.dtype(_SCALARS[item_type])
                return np.frombuffer(self.take(count * dtype.itemsize), dtype=dtype).tolist()
            if item_type == _STRING:
                return self.strings(count)
            return [self.value(item_type, depth + 1) for _ in range(count)]
        raise InvalidModelFileError(
            f"{self.path} is corrupt: unknown GGUF value type {value_type}."
        )


def read_gguf_header(path: str | Path) -> GGUFHeader:
    """Parse a GGUF file's header; raise InvalidModelFileError for anything that is not a whole GGUF."""
    path = Path(path)
    if not path.exists():
        raise InvalidModelFileError(f"Model file {path} does not exist.")
    if not path.is_file():
        raise InvalidModelFileError(f"{path} is not a file.")
    file_size = path.stat().st_size
    if file_size < 24:
        raise InvalidModelFileError(f"{path} is not a GGUF model file (only {file_size} bytes).")
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data[:4] != GGUF_MAGIC:
            raise InvalidModelFileError(
                f"{path} is not a GGUF model file (it does not start with 'GGUF'); "
                "convert it with llama.cpp's convert_hf_to_gguf.py first."
            )
        cursor = _Cursor(data, path)
        cursor.take(4)
        version = cursor.scalar("<I")
        if version < SUPPORTED_VERSIONS[0]:
            raise InvalidModelFileError(f"{path} uses GGUF version {version}, which is too old.")
        if version not in SUPPORTED_VERSIONS:
            raise InvalidModelFileError(
                f"{path} uses GGUF version {version}, an unsupported version (llmkit reads "
                f"versions {SUPPORTED_VERSIONS[0]} to {SUPPORTED_VERSIONS[-1]}); update llmkit "
                "or convert the file again."
            )
        tensor_count = cursor.scalar("<Q")
        kv_count = cursor.scalar("<Q")
        metadata: dict[str, Any] = {}
        try:
            for _ in range(kv_count):
                key = cursor.string()
                metadata[key] = cursor.value(cursor.scalar("<I"))
            tensors = [_read_tensor_info(cursor) for _ in range(tensor_count)]
        except struct.error as error:
            raise InvalidModelFileError(f"{path} is corrupt: {error}.") from error
        alignment = int(metadata.get("general.alignment", 32))
        data_offset = -(-cursor.position // alignment) * alignment
    header = GGUFHeader(path, version, metadata, tensors, data_offset, file_size)
    needed = max((data_offset + t.offset + t.n_bytes for t in tensors), default=data_offset)
    if needed > file_size:
        raise InvalidModelFileError(
            f"{path} is truncated: it holds {file_size:,} bytes but its tensors need {needed:,}; "
            "download or copy it again."
        )
    return header


def _read_tensor_info(cursor: _Cursor) -> TensorInfo:
    name = cursor.string()
    n_dims = cursor.scalar("<I")
    shape = tuple(cursor.scalar("<Q") for _ in range(n_dims))
    type_id = cursor.scalar("<I")
    offset = cursor.scalar("<Q")
    if type_id not in GGML_TYPES:
        raise InvalidModelFileError(f"{cursor.path} uses an unknown tensor type {type_id}.")
    type_name, block_size, block_bytes = GGML_TYPES[type_id]
    n_bytes = math.prod(shape) // block_size * block_bytes
    return TensorInfo(name, shape, type_name, offset, n_bytes)
