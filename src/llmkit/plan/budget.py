"""A training budget: tokens per parameter, training FLOPs (about 6·N·D) and time on a device."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from llmkit.errors import InvalidParameterError
from llmkit.plan.hardware import Device
from llmkit.plan.spec import ModelSpec

CHINCHILLA_TOKENS_PER_PARAMETER = 20  # Hoffmann et al. 2022: compute-optimal pre-training
_SUFFIXES = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}


def parse_count(text: str) -> int:
    """'2T', '500B', '1.5M', '3e9' or '1000000' as a number."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?(?:e\d+)?)\s*([kmbgt]?)\s*", text.lower())
    if not match:
        raise InvalidParameterError(
            f"'{text}' is not a token count; write it like 2T, 500B or 1.5M."
        )
    value = float(match.group(1)) * _SUFFIXES.get(match.group(2), 1)
    if value < 1:
        raise InvalidParameterError(f"The token count must be at least 1, not '{text}'.")
    return int(value)


@dataclass
class TrainingBudget:
    tokens: int
    parameters: int
    active_parameters: int
    flops_per_token: float
    flops_formula: str
    device: Device
    utilization: float
    device_count: int = 1

    @property
    def tokens_per_parameter(self) -> float:
        return self.tokens / self.parameters

    @property
    def flops(self) -> float:
        return self.flops_per_token * self.tokens

    @property
    def seconds(self) -> float | None:
        if not self.device.tflops:
            return None
        return self.flops / (self.device.tflops * 1e12 * self.utilization * self.device_count)

    def to_json(self) -> dict[str, Any]:
        return {
            "tokens": self.tokens,
            "tokens_per_parameter": round(self.tokens_per_parameter, 2),
            "chinchilla_optimal_tokens": CHINCHILLA_TOKENS_PER_PARAMETER * self.parameters,
            "flops": self.flops,
            "flops_formula": self.flops_formula,
            "device": self.device.name,
            "device_count": self.device_count,
            "device_peak_tflops": self.device.tflops,
            "utilization": self.utilization,
            "seconds": self.seconds,
        }


def training_budget(
    spec: ModelSpec,
    tokens: int,
    device: Device,
    *,
    task: str = "full",
    utilization: float = 0.4,
    device_count: int = 1,
    grad_checkpointing: bool = False,
) -> TrainingBudget:
    """Forward 2·N, backward 4·N FLOPs per token (2·N with frozen weights); recompute adds 2·N."""
    if not 0 < utilization <= 1:
        raise InvalidParameterError(f"--utilization must be in (0, 1], not {utilization}.")
    if device_count < 1:
        raise InvalidParameterError(f"--gpus must be at least 1, not {device_count}.")
    n = spec.active_parameters
    factor = 6 if task == "full" else 4  # LoRA skips the frozen weights' gradients
    if grad_checkpointing:
        factor += 2
    formula = f"{factor} × {n:,} active parameters × tokens"
    return TrainingBudget(
        tokens, spec.parameters, n, factor * n, formula, device, utilization, device_count
    )
