"""The commands the planner and the doctor print for the user to run, built from a PlanRequest.

Only options that differ from `llmkit plan`'s defaults are written, so each command is short and
reproduces the plan it came from; tests run every printed command.
"""

from __future__ import annotations

import shlex

from llmkit.plan.feasibility import FINETUNE_DEFAULTS
from llmkit.plan.hardware import KNOWN_GPUS, MIB, Device
from llmkit.plan.memory import PlanRequest

_DEFAULTS = PlanRequest()


def device_argument(device: Device) -> str:
    """What to pass as `--device` to plan for DEVICE again."""
    if device.detected:
        return "cpu" if device.type == "cpu" else "auto"
    if device.name.lower() in KNOWN_GPUS:
        return device.name
    size = f"{device.memory_bytes // MIB}MB"
    return f"cpu:{size}" if device.type == "cpu" else size


def plan_arguments(model: str, request: PlanRequest, device: Device) -> list[str]:
    """`llmkit plan` arguments that plan REQUEST for MODEL on DEVICE."""
    args = [model]
    if request.task != _DEFAULTS.task:
        args += ["--task", request.task]
    if request.dtype:
        args += ["--dtype", request.dtype]
    if request.batch_size != _DEFAULTS.batch_size:
        args += ["--batch-size", str(request.batch_size)]
    if request.task == "chat":
        if request.context:
            args += ["--context", str(request.context)]
        if request.engine != _DEFAULTS.engine:
            args += ["--engine", request.engine]
    else:
        if request.seq_len != _DEFAULTS.seq_len:
            args += ["--seq-len", str(request.seq_len)]
        if request.optimizer != _DEFAULTS.optimizer:
            args += ["--optimizer", request.optimizer]
        if request.grad_checkpointing:
            args.append("--grad-checkpointing")
        if request.fsdp != _DEFAULTS.fsdp:
            args += ["--fsdp", str(request.fsdp)]
        if request.task != "full":
            if request.lora_r != _DEFAULTS.lora_r:
                args += ["--lora-r", str(request.lora_r)]
            if request.lora_targets != _DEFAULTS.lora_targets:
                args += ["--lora-targets", request.lora_targets]
    return [*args, "--device", device_argument(device)]


def finetune_flags(request: PlanRequest, device: Device, accumulation: int = 1) -> list[str]:
    """`llmkit finetune` options that train as REQUEST does (see feasibility.finetune_gap)."""
    values = {
        "batch_size": request.batch_size,
        "grad_accum": accumulation,
        "max_length": request.seq_len,
        **(
            {"lora_r": request.lora_r, "lora_targets": request.lora_targets}
            if request.task == "lora"
            else {}
        ),
    }
    flags = ["--method", request.task]
    for key, value in values.items():
        if value != FINETUNE_DEFAULTS[key]:
            flags += [f"--{key.replace('_', '-')}", str(value)]
    if request.grad_checkpointing:
        flags.append("--gradient-checkpointing")
    return [*flags, "--device", device.type]


def command_line(verb: str, args: list[str]) -> str:
    return shlex.join(["llmkit", verb, *args])
