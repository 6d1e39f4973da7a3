"""What can run where, and what `llmkit finetune` can do: the one place the planner, its advice
and the doctor read these rules from.

bitsandbytes (4-bit QLoRA bases, 8-bit AdamW) ships CUDA kernels only, so those need a CUDA GPU.
`llmkit finetune` trains LoRA or all weights with torch's AdamW, in bf16 on a GPU that has it and in
fp32 otherwise; anything else the planner can estimate needs another trainer.
"""

from __future__ import annotations

from llmkit.plan.hardware import Device

# Why each of these needs a CUDA GPU (they are estimated on any device, but run only there).
CUDA_ONLY_TASKS = {"qlora": "QLoRA's 4-bit base (bitsandbytes) needs a CUDA GPU"}
CUDA_ONLY_OPTIMIZERS = {"adamw8bit": "8-bit AdamW (bitsandbytes) needs a CUDA GPU"}

# What `llmkit finetune` offers; tests/unit/test_plan_feasibility.py keeps this equal to
# llmkit.train.config.METHODS (plan sits beside train and may not import it).
FINETUNE_METHODS = ("lora", "full")
FINETUNE_OPTIMIZERS = ("adamw",)
# Its defaults, so printed flags leave them out (the same test checks them against FinetuneConfig).
FINETUNE_DEFAULTS = {
    "batch_size": 4,
    "grad_accum": 1,
    "max_length": 512,
    "lora_r": 16,
    "lora_targets": "all",
}
OTHER_TRAINER = "peft with bitsandbytes"


def cuda_requirement(task: str, optimizer: str = "adamw") -> str | None:
    """Why this task or optimizer needs a CUDA GPU, or None when it also runs on a CPU."""
    return CUDA_ONLY_TASKS.get(task) or CUDA_ONLY_OPTIMIZERS.get(optimizer)


def runs_on(device_type: str, task: str, optimizer: str = "adamw") -> bool:
    """Whether the task and optimizer can run on a device of this type ('cpu' or 'cuda')."""
    return device_type == "cuda" or cuda_requirement(task, optimizer) is None


def finetune_dtype(device: Device) -> str:
    """The precision `llmkit finetune` trains in on this device (it has no option to change it)."""
    return "bf16" if device.type == "cuda" and device.bf16 else "fp32"


def finetune_gap(task: str, optimizer: str, dtype: str | None, device: Device) -> str | None:
    """What `llmkit finetune` lacks to train this way on DEVICE, or None when its options can."""
    if task not in FINETUNE_METHODS:
        return f"not in llmkit finetune (no {task}): use {OTHER_TRAINER}"
    if optimizer not in FINETUNE_OPTIMIZERS:
        return f"not in llmkit finetune (AdamW only): use {OTHER_TRAINER}"
    trains_in = finetune_dtype(device)
    if dtype is not None and dtype != trains_in:
        where = "a CPU" if device.type == "cpu" else device.name
        return f"llmkit finetune trains in {trains_in} on {where}, not {dtype}"
    return None
