"""The verdict (fits, tight, does not fit) and concrete changes that would make a plan fit."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from llmkit.plan.dtypes import bytes_per_parameter
from llmkit.plan.hardware import Device
from llmkit.plan.memory import MemoryEstimate, PlanRequest, estimate_memory
from llmkit.plan.spec import ModelSpec

HEADROOM = 0.9  # above 90% of a device's memory, fragmentation and other processes decide


@dataclass
class Verdict:
    status: str  # "fits", "tight" or "does not fit"
    usage: float  # total / device memory

    @property
    def fits(self) -> bool:
        return self.status != "does not fit"


def verdict(total: float, device: Device) -> Verdict:
    usage = total / device.memory_bytes if device.memory_bytes else float("inf")
    status = "fits" if usage <= HEADROOM else "tight" if usage <= 1 else "does not fit"
    return Verdict(status, usage)


@dataclass
class Suggestion:
    description: str
    changes: dict[str, Any]
    total: float
    fits: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "change": self.description,
            "options": self.changes,
            "total_bytes": round(self.total),
            "fits": self.fits,
        }


def _try(
    spec: ModelSpec, request: PlanRequest, device: Device, description: str, **changes: Any
) -> Suggestion:
    changed = replace(request, **changes)
    total = estimate_memory(spec, changed).total
    return Suggestion(description, changes, total, total <= device.memory_bytes * HEADROOM)


def _largest_fitting(low: int, high: int, fits: Any) -> int | None:
    """The largest value in [low, high] for which fits(value) holds (fits is monotone)."""
    if not fits(low):
        return None
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return low


def suggestions(spec: ModelSpec, estimate: MemoryEstimate, device: Device) -> list[Suggestion]:
    """Changes that shrink the plan, each with its new total; the ones that fit come first."""
    request = estimate.request
    dtype = request.dtype or "bf16"
    half = "bf16" if device.bf16 else "fp16"
    found: list[Suggestion] = []
    limit = device.memory_bytes * HEADROOM

    def fits_with(**changes: Any) -> bool:
        return estimate_memory(spec, replace(request, **changes)).total <= limit

    if request.task == "chat":
        for quant in ("q8_0", "q4_k_m"):
            if bytes_per_parameter(quant) < bytes_per_parameter(dtype):
                found.append(
                    _try(
                        spec,
                        request,
                        device,
                        f"{quant.upper()} weights (llama.cpp)",
                        dtype=quant,
                        engine="auto",
                    )
                )
        context = _largest_fitting(1, request.context or 1, lambda value: fits_with(context=value))
        if context and context < (request.context or 0):
            found.append(
                _try(spec, request, device, f"a context of {context:,} tokens", context=context)
            )
        if request.batch_size > 1:
            found.append(_try(spec, request, device, "one conversation at a time", batch_size=1))
    else:
        if request.task == "full":
            found.append(
                _try(spec, request, device, "LoRA instead of full fine-tuning", task="lora")
            )
            if request.optimizer == "adamw":
                found.append(
                    _try(spec, request, device, "8-bit AdamW (bitsandbytes)", optimizer="adamw8bit")
                )
        if request.task in ("full", "lora"):
            found.append(
                _try(spec, request, device, "QLoRA: a 4-bit base model", task="qlora", dtype=None)
            )
        if dtype == "fp32":
            found.append(_try(spec, request, device, f"{half} weights and activations", dtype=half))
        if not request.grad_checkpointing:
            found.append(
                _try(spec, request, device, "gradient checkpointing", grad_checkpointing=True)
            )
        if request.batch_size > 1:
            batch = _largest_fitting(
                1, request.batch_size - 1, lambda value: fits_with(batch_size=value)
            )
            if batch:
                steps = -(-request.batch_size // batch)
                found.append(
                    _try(
                        spec,
                        request,
                        device,
                        f"batch size {batch} with {steps} gradient-accumulation steps",
                        batch_size=batch,
                    )
                )
        seq = (
            _largest_fitting(1, request.seq_len - 1, lambda value: fits_with(seq_len=value))
            if request.seq_len > 1
            else None
        )
        if seq and seq >= 64:
            found.append(_try(spec, request, device, f"sequences of {seq:,} tokens", seq_len=seq))
        # Combinations, each at the largest batch size that fits: the task the user asked for first.
        combinations = {
            "full": ("full", "lora", "qlora"),
            "lora": ("lora", "qlora"),
            "qlora": ("qlora",),
        }
        for task in combinations[request.task]:
            combined = {
                "task": task,
                "dtype": None if task == "qlora" else half,
                "grad_checkpointing": True,
                **({"optimizer": "adamw8bit"} if task == "full" else {}),
            }
            if combined.items() <= {**request.__dict__, "dtype": dtype}.items():
                continue  # that is the request itself
            batch = _largest_fitting(
                1, request.batch_size, lambda value, c=combined: fits_with(**c, batch_size=value)
            )
            label = {
                "full": f"full in {half} + 8-bit AdamW",
                "lora": f"LoRA in {half}",
                "qlora": "QLoRA",
            }
            found.append(
                _try(
                    spec,
                    request,
                    device,
                    f"{label[task]} + checkpointing, batch size {batch or 1}",
                    **combined,
                    batch_size=batch or 1,
                )
            )
    return sorted(found, key=lambda item: (not item.fits, item.total if not item.fits else 0))
