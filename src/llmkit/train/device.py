"""Where a fine-tuning run trains, checked before any data is read or any weights load.

A CUDA request on a machine that cannot honour it would otherwise fail deep inside torch, after
the tokenizer and the model have loaded; here it fails at once, in one sentence. `llmkit finetune`
trains with torch's AdamW in bf16 on a GPU that has it and in fp32 otherwise, so no option it
offers needs more than a working CUDA device (QLoRA and 8-bit optimizers are `llmkit plan`
estimates for other trainers, see plan/feasibility.py).
"""

from __future__ import annotations

import re
from typing import Any

from llmkit.errors import InvalidParameterError


def check_device_option(device: str | None) -> None:
    """Refuse a --device that is none of cpu, cuda, cuda:N, before anything else is done."""
    if device not in (None, "cpu", "cuda") and not re.fullmatch(r"cuda:\d+", str(device)):
        raise InvalidParameterError(f"--device must be cpu, cuda or cuda:N, not {device!r}.")


def _index(requested: str) -> int | None:
    """The N of 'cuda:N' (None for plain 'cuda'); config validation has checked the form."""
    _, _, number = requested.partition(":")
    return int(number) if number else None


def training_device(requested: str | None, torch: Any, local_rank: int, world_size: int) -> str:
    """The torch device to train on: REQUESTED ('cpu', 'cuda', 'cuda:N') or, when None, this
    process's GPU if torch sees one and the CPU otherwise. Raise InvalidParameterError when CUDA is
    asked for and cannot be used."""
    if requested == "cpu":
        return "cpu"
    available = bool(torch.version.cuda) and torch.cuda.is_available()
    if requested is None and not available:
        return "cpu"
    option = f"--device {requested}" if requested else "Training on CUDA"
    if not torch.version.cuda:
        raise InvalidParameterError(
            f"{option} needs a CUDA build of torch, and this one ({torch.__version__}) is "
            "CPU-only; use --device cpu or install torch with CUDA."
        )
    if not available:
        raise InvalidParameterError(
            f"{option}: torch finds no usable CUDA GPU on this machine (see `llmkit doctor`); "
            "use --device cpu."
        )
    index = _index(requested) if requested else None
    if index is not None and world_size > 1:
        raise InvalidParameterError(
            f"{option} names one GPU, but under torchrun each of the {world_size} processes "
            "takes its own; use --device cuda."
        )
    count = torch.cuda.device_count()
    wanted = local_rank if index is None else index
    if wanted >= count:
        raise InvalidParameterError(
            f"{option} needs GPU {wanted}, but torch sees {count} CUDA GPU"
            f"{'' if count == 1 else 's'} here (one per process under torchrun)."
        )
    return requested or f"cuda:{local_rank}"
