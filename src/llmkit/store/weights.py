"""What a Hugging Face model folder's weights are, checked before the folder is trusted.

Pickled weights (`pytorch_model.bin`, `*.pt`, `*.ckpt`, `*.pth`) run code when they are loaded, so
llmkit refuses them unless the user opts in with --allow-pickle. Safetensors files are data only;
their header is read here, and a sharded model's index checked against the shards present, so a
folder with missing, partial or broken weights is refused at import time.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from llmkit.errors import InvalidModelFileError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
# A safetensors header is JSON describing the tensors; real ones are kilobytes to a few megabytes.
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024
SAFETENSORS_INDEX = "model.safetensors.index.json"
MAX_INDEX_BYTES = 64 * 1024 * 1024
ALLOW_PICKLE_HINT = (
    "pickled weights can run code when loaded; convert them to safetensors, or pass "
    "--allow-pickle if you trust where they came from"
)


class PickledWeightsError(InvalidModelFileError):
    """A model folder whose only weights are pickles, used without --allow-pickle."""


def pickle_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(PICKLE_SUFFIXES))


def safetensors_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix == ".safetensors")


def read_safetensors_header(path: Path) -> dict[str, object]:
    """The JSON header of a safetensors file; InvalidModelFileError when it is not readable."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        start = handle.read(8)
        if len(start) < 8:
            raise InvalidModelFileError(f"{path} is not a safetensors file (only {size} bytes).")
        (length,) = struct.unpack("<Q", start)
        if length > min(MAX_SAFETENSORS_HEADER, size - 8):
            raise InvalidModelFileError(
                f"{path} is not a whole safetensors file (its header claims {length:,} bytes)."
            )
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
            raise InvalidModelFileError(
                f"{path} is not a safetensors file (its header is not JSON)."
            ) from error
    if not isinstance(header, dict):
        raise InvalidModelFileError(f"{path} is not a safetensors file (its header is not a map).")
    end = max(
        (int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"
         and isinstance(v, dict) and isinstance(v.get("data_offsets"), list)),
        default=0,
    )  # fmt: skip
    if 8 + length + end > size:
        raise InvalidModelFileError(
            f"{path} is truncated: it holds {size:,} bytes but its tensors need {8 + length + end:,}."
        )
    return header


def missing_shards(folder: Path) -> list[str]:
    """The weight files `model.safetensors.index.json` lists that are not in the folder: a model
    whose download stopped midway (common in a Hugging Face cache) has some shards and not all."""
    index = folder / SAFETENSORS_INDEX
    if not index.is_file():
        return []
    if index.stat().st_size > MAX_INDEX_BYTES:
        raise InvalidModelFileError(f"{index} is larger than a weight index can be.")
    try:
        weight_map = json.loads(index.read_text(errors="replace")).get("weight_map")
    except (json.JSONDecodeError, AttributeError, RecursionError) as error:
        raise InvalidModelFileError(f"{index} is not a weight index (not JSON).") from error
    if not isinstance(weight_map, dict):
        raise InvalidModelFileError(f"{index} has no weight_map.")
    shards = sorted({str(name) for name in weight_map.values()})
    # A shard name is a file in this folder, never a path elsewhere.
    return [name for name in shards if "/" in name or not (folder / name).is_file()]


def check_hf_weights(folder: Path, *, allow_pickle: bool = False) -> str:
    """'safetensors' or 'pickle' for a usable folder; a clear error for missing or pickled weights."""
    tensors = safetensors_files(folder)
    missing = missing_shards(folder)
    if missing:
        listed = len(set(missing) | {path.name for path in tensors})
        raise InvalidModelFileError(
            f"{folder} lacks {len(missing)} of the {listed} weight files its "
            f"{SAFETENSORS_INDEX} lists ({missing[0]}…), as after an unfinished download."
        )
    if tensors:
        for path in tensors:
            read_safetensors_header(path)
        return "safetensors"
    pickles = pickle_files(folder)
    if not pickles:
        raise InvalidModelFileError(
            f"{folder} has a config.json but no weights (no *.safetensors file)."
        )
    if not allow_pickle:
        names = ", ".join(p.name for p in pickles[:3])
        raise PickledWeightsError(
            f"{folder} holds only pickled weights ({names}); {ALLOW_PICKLE_HINT}."
        )
    return "pickle"
