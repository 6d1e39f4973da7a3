"""One call from what the user typed to a complete plan: spec, memory, device, verdict, advice, budget."""

from __future__ import annotations

import platform
from dataclasses import dataclass, field, replace
from typing import Any

from llmkit.plan.advice import Suggestion, Verdict, suggestions, verdict
from llmkit.plan.budget import TrainingBudget, parse_count, training_budget
from llmkit.plan.feasibility import cuda_requirement, finetune_gap, runs_on
from llmkit.plan.hardware import Device, resolve_device
from llmkit.plan.memory import MemoryEstimate, PlanRequest, estimate_memory
from llmkit.plan.resolve import resolve_model
from llmkit.plan.spec import ModelSpec


@dataclass
class Plan:
    spec: ModelSpec
    estimate: MemoryEstimate
    device: Device
    verdict: Verdict
    suggestions: list[Suggestion] = field(default_factory=list)
    budget: TrainingBudget | None = None

    @property
    def warnings(self) -> list[str]:
        notes = list(self.estimate.notes)
        request = self.estimate.request
        if self.device.type == "cpu" and request.task != "chat" and platform.system() == "Linux":
            notes.append(
                "This is the peak of live tensors; glibc can keep freed memory, and training on a "
                "CPU measured 1.1-1.8x this in resident memory. MALLOC_MMAP_THRESHOLD_=65536 "
                "holds it to the estimate, at a cost in speed."
            )
        if not self.device.bf16 and request.dtype == "bf16":
            notes.append(f"{self.device.name} has no bf16 support; use --dtype fp16 there.")
        if not runs_on(self.device.type, request.task, request.optimizer):
            reason = cuda_requirement(request.task, request.optimizer)
            notes.append(f"{reason}: this cannot run on {self.device.name}.")
        elif request.task != "chat":
            gap = finetune_gap(request.task, request.optimizer, request.dtype, self.device)
            if gap:
                notes.append(f"Training this way is {gap}.")
        return notes

    def to_json(self) -> dict[str, Any]:
        request = self.estimate.request
        return {
            "model": {
                "name": self.spec.name,
                "source": self.spec.source,
                "architecture": self.spec.architecture,
                "parameters": self.spec.parameters,
                "active_parameters": self.spec.active_parameters,
                "layers": self.spec.layers,
                "hidden_size": self.spec.hidden_size,
                "heads": self.spec.heads,
                "kv_heads": self.spec.kv_heads,
                "head_dim": self.spec.head_dim,
                "ffn_size": self.spec.ffn_size,
                "vocab_size": self.spec.vocab_size,
                "tied_embeddings": self.spec.tied_embeddings,
                "max_context": self.spec.max_context,
            },
            "request": {
                "task": request.task,
                "dtype": request.dtype,
                "batch_size": request.batch_size,
                "seq_len": request.seq_len,
                "context": request.context,
                "optimizer": request.optimizer,
                "grad_checkpointing": request.grad_checkpointing,
                "lora_r": request.lora_r,
                "lora_targets": request.lora_targets,
                "fsdp": request.fsdp,
            },
            "memory": self.estimate.to_json(),
            "device": self.device.to_json(),
            "verdict": {"status": self.verdict.status, "usage": round(self.verdict.usage, 4)},
            "suggestions": [item.to_json() for item in self.suggestions],
            "budget": self.budget.to_json() if self.budget else None,
            "warnings": self.warnings,
        }


def make_plan(
    model: str | ModelSpec,
    request: PlanRequest,
    device: str | Device = "cpu",
    *,
    tokens: str | int | None = None,
    utilization: float = 0.4,
    device_count: int = 1,
) -> Plan:
    """The plan for MODEL on DEVICE; `tokens` adds a training budget (e.g. '2T')."""
    spec = model if isinstance(model, ModelSpec) else resolve_model(model)
    target = device if isinstance(device, Device) else resolve_device(device)
    request = replace(request, device_type=target.type)
    estimate = estimate_memory(spec, request)
    decision = verdict(estimate.total, target)
    advice = suggestions(spec, estimate, target) if decision.status != "fits" else []
    budget = None
    if tokens is not None:
        count = tokens if isinstance(tokens, int) else parse_count(tokens)
        budget = training_budget(
            spec,
            count,
            target,
            task="full" if request.task in ("full", "chat") else request.task,
            utilization=utilization,
            device_count=device_count,
            grad_checkpointing=request.grad_checkpointing,
        )
    return Plan(spec, estimate, target, decision, advice, budget)
