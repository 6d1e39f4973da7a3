"""The verdict (fits, tight, does not fit) and concrete changes that would make a plan fit."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from llmkit.plan.commands import finetune_flags
from llmkit.plan.dtypes import bytes_per_parameter
from llmkit.plan.feasibility import finetune_dtype, finetune_gap, runs_on
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
    """A change to the plan, its new total, and how to train that way (or what is missing)."""

    description: str
    changes: dict[str, Any]
    total: float
    fits: bool
    request: PlanRequest  # the whole changed request, validated
    accumulation: int = 1  # gradient-accumulation steps that keep the requested batch
    finetune: list[str] | None = None  # `llmkit finetune` flags; None for chat or when it cannot
    finetune_note: str | None = None  # why `llmkit finetune` cannot train this way

    def to_json(self) -> dict[str, Any]:
        return {
            "change": self.description,
            "options": self.changes,
            "total_bytes": round(self.total),
            "fits": self.fits,
            "grad_accum": self.accumulation,
            "finetune_flags": self.finetune,
            "finetune_note": self.finetune_note,
        }


def _try(
    spec: ModelSpec,
    request: PlanRequest,
    device: Device,
    description: str,
    accumulation: int = 1,
    **changes: Any,
) -> Suggestion | None:
    """The suggestion, or None when the changed plan cannot run on this device at all."""
    changed = replace(request, **changes)
    if not runs_on(device.type, changed.task, changed.optimizer):
        return None
    estimate = estimate_memory(spec, changed)
    total = estimate.total
    item = Suggestion(
        description, changes, total, total <= device.memory_bytes * HEADROOM, estimate.request
    )
    item.accumulation = accumulation
    if changed.task != "chat":
        validated = estimate.request
        item.finetune_note = finetune_gap(
            validated.task, validated.optimizer, validated.dtype, device
        )
        if item.finetune_note is None:
            item.finetune = finetune_flags(validated, device, accumulation)
    return item


def _largest_fitting(low: int, high: int, fits: Any) -> int | None:
    """The largest value in [low, high] for which fits(value) holds (fits is monotone)."""
    if not fits(low):
        return None
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return low


def largest_fitting_divisor(total: int, fits: Any) -> int | None:
    """The largest divisor of TOTAL for which fits(value) holds: batch × steps stays exactly TOTAL."""
    return next((d for d in range(total, 0, -1) if total % d == 0 and fits(d)), None)


def _batch_text(batch: int, requested: int) -> str:
    steps = requested // batch
    if steps == 1:
        return f"batch size {batch}"
    return f"batch size {batch} with {steps} gradient-accumulation steps"


def suggestions(spec: ModelSpec, estimate: MemoryEstimate, device: Device) -> list[Suggestion]:
    """Changes that shrink the plan, each with its new total; the ones that fit come first.

    Changes that cannot run on the device (bitsandbytes on a CPU) are left out; the ones
    `llmkit finetune` cannot train say so and what to use instead.
    """
    request = estimate.request
    dtype = request.dtype or "bf16"
    half = "bf16" if device.bf16 else "fp16"
    found: list[Suggestion | None] = []
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
        return _ordered(found)

    if request.task == "full":
        found.append(_try(spec, request, device, "LoRA instead of full fine-tuning", task="lora"))
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
        found.append(_try(spec, request, device, "gradient checkpointing", grad_checkpointing=True))
    if request.batch_size > 1:
        batch = largest_fitting_divisor(
            request.batch_size,
            lambda value: value < request.batch_size and fits_with(batch_size=value),
        )
        if batch:
            found.append(
                _try(
                    spec,
                    request,
                    device,
                    _batch_text(batch, request.batch_size),
                    request.batch_size // batch,
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
    found += _combinations(spec, request, device, fits_with)
    return _ordered(found)


def _combinations(
    spec: ModelSpec, request: PlanRequest, device: Device, fits_with: Any
) -> list[Suggestion | None]:
    """Several changes at once, each at the largest batch that keeps the requested one exactly.

    LoRA and full fine-tuning use the precision `llmkit finetune` trains in on this device, so
    those rows are runnable as printed; full fine-tuning in 16 bits with 8-bit AdamW and QLoRA
    need bitsandbytes (a CUDA GPU) and another trainer.
    """
    half = "bf16" if device.bf16 else "fp16"
    trains_in = finetune_dtype(device)
    tasks = {"full": ("full", "lora", "qlora"), "lora": ("lora", "qlora"), "qlora": ("qlora",)}
    candidates: list[tuple[str, dict[str, Any]]] = []
    for task in tasks[request.task]:
        if task == "qlora":
            candidates.append(("QLoRA", {"task": "qlora", "dtype": None}))
        elif task == "lora":
            candidates.append((f"LoRA in {trains_in}", {"task": "lora", "dtype": trains_in}))
        else:
            candidates.append((f"full in {trains_in}", {"task": "full", "dtype": trains_in}))
            candidates.append(
                (
                    f"full in {half} + 8-bit AdamW",
                    {"task": "full", "dtype": half, "optimizer": "adamw8bit"},
                )
            )
    found: list[Suggestion | None] = []
    asked = {**request.__dict__, "dtype": request.dtype or "bf16"}
    for label, changes in candidates:
        combined = {**changes, "grad_checkpointing": True}
        if not runs_on(device.type, combined["task"], combined.get("optimizer", request.optimizer)):
            continue
        if combined.items() <= asked.items():
            continue  # that is the request itself
        batch = largest_fitting_divisor(
            request.batch_size, lambda value, c=combined: fits_with(**c, batch_size=value)
        )
        if batch is None:
            continue  # not even one sequence at a time fits: the single changes show by how much
        found.append(
            _try(
                spec,
                request,
                device,
                f"{label} + checkpointing, {_batch_text(batch, request.batch_size)}",
                request.batch_size // batch,
                **combined,
                batch_size=batch,
            )
        )
    return found


def _ordered(found: list[Suggestion | None]) -> list[Suggestion]:
    """Fitting changes first (those `llmkit finetune` can train before those it cannot), then the rest by size."""
    kept: dict[tuple[PlanRequest, int], Suggestion] = {}
    for item in found:
        if item is not None:
            kept.setdefault((item.request, item.accumulation), item)  # the same plan said twice
    return sorted(
        kept.values(),
        key=lambda item: (
            not item.fits,
            item.fits and item.finetune is None,
            item.total if not item.fits else 0,
        ),
    )
