"""The settings of one fine-tuning run, checked before anything is loaded or written."""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field

from llmkit.errors import InvalidParameterError
from llmkit.store.paths import validate_model_name

METHODS = ("lora", "full")
EXPORT_KINDS = ("adapter", "f16", "q8_0", "hf", "f32")
EXPORT_SUFFIXES = {"adapter": "adapter", "f16": "f16", "q8_0": "q8", "hf": "hf", "f32": "f32"}


def default_exports(method: str, gguf_base: bool) -> tuple[str, ...]:
    """What a run exports when --export is not given: one entry, the smallest that runs.

    LoRA gives the adapter (a few MB, applied by llama.cpp over the unchanged base file); full
    fine-tuning gives one Q8_0 GGUF (half the size of F16, at a quality llama.cpp measures as
    nearly lossless). A base that GGUF export does not support gives the merged HF folder.
    """
    if not gguf_base:
        return ("hf",)
    return ("adapter",) if method == "lora" else ("q8_0",)


@dataclass
class FinetuneConfig:
    """What `llmkit finetune` was asked to do. Sizes are per process; see `global_batch`."""

    base: str
    data: str
    out: str
    eval_data: str | None = None
    eval_split: float | None = None
    method: str = "lora"
    epochs: int = 1
    max_steps: int | None = None  # overrides epochs when given
    lr: float = 2e-4
    warmup_steps: int = 0
    weight_decay: float = 0.0
    batch_size: int = 4  # sequences per micro-batch, per process
    grad_accum: int = 1
    max_length: int = 512
    too_long: str = "truncate"  # or "drop"
    packing: bool = False
    lora_r: int = 16
    lora_alpha: float = 32.0
    lora_dropout: float = 0.0
    lora_targets: str = "all"
    seed: int = 0
    template: str | None = None  # a built-in name or template text, for bases without one
    exports: tuple[str, ...] = ()  # empty: default_exports(), chosen once the base is known
    force: bool = False
    device: str | None = None  # "cpu", "cuda", or None for automatic
    gradient_checkpointing: bool = False
    checkpoint_every: int = 0  # steps; 0 saves no checkpoints
    resume: bool = False
    run_dir: str | None = None  # metrics, plot and checkpoints; default LLMKIT_HOME/runs/<out>
    threads: int | None = None
    allow_pickle: bool = False  # accept an HF base whose only weights are pickles
    verbose: bool = False  # let transformers, peft and torch print their progress bars and warnings
    extra: dict[str, str] = field(default_factory=dict)

    def validated(self) -> FinetuneConfig:
        """Raise InvalidParameterError (one sentence) for any impossible setting."""
        validate_model_name(self.out)
        if self.method not in METHODS:
            raise InvalidParameterError(
                f"--method must be one of {', '.join(METHODS)}, not {self.method!r}."
            )
        positive = {
            "--epochs": self.epochs,
            "--batch-size": self.batch_size,
            "--grad-accum": self.grad_accum,
            "--lora-r": self.lora_r,
        }
        for option, value in positive.items():
            if value < 1:
                raise InvalidParameterError(f"{option} must be at least 1, not {value}.")
        if self.max_length < 8:
            raise InvalidParameterError(
                f"--max-length must be at least 8 tokens, not {self.max_length}."
            )
        if self.threads is not None and self.threads < 1:
            raise InvalidParameterError(f"--threads must be at least 1, not {self.threads}.")
        if self.max_steps is not None and self.max_steps < 1:
            raise InvalidParameterError(f"--max-steps must be at least 1, not {self.max_steps}.")
        if not (math.isfinite(self.lr) and 0 < self.lr < 1):
            raise InvalidParameterError(f"--lr must be between 0 and 1, not {self.lr}.")
        if not (math.isfinite(self.lora_alpha) and self.lora_alpha > 0):
            raise InvalidParameterError(f"--lora-alpha must be positive, not {self.lora_alpha}.")
        if not 0 <= self.lora_dropout < 1:
            raise InvalidParameterError(
                f"--lora-dropout must be in [0, 1), not {self.lora_dropout}."
            )
        if self.warmup_steps < 0 or self.checkpoint_every < 0 or self.weight_decay < 0:
            raise InvalidParameterError(
                "--warmup-steps, --checkpoint-every and --weight-decay cannot be negative."
            )
        if self.too_long not in ("truncate", "drop"):
            raise InvalidParameterError(
                f"--too-long must be 'truncate' or 'drop', not {self.too_long!r}."
            )
        if self.eval_data and self.eval_split:
            raise InvalidParameterError("Give either --eval or --eval-split, not both.")
        if self.eval_split is not None and not 0 < self.eval_split < 1:
            raise InvalidParameterError(
                f"--eval-split must be between 0 and 1, not {self.eval_split}."
            )
        if self.device not in (None, "cpu", "cuda") and not re.fullmatch(
            r"cuda:\d+", str(self.device)
        ):
            raise InvalidParameterError(
                f"--device must be cpu, cuda or cuda:N, not {self.device!r}."
            )
        exports = self.exports
        unknown = [kind for kind in exports if kind not in EXPORT_KINDS]
        if unknown:
            raise InvalidParameterError(
                f"Unknown export {', '.join(unknown)}; choose from {', '.join(EXPORT_KINDS)}."
            )
        if "adapter" in exports and self.method != "lora":
            raise InvalidParameterError("Only --method lora produces an adapter to export.")
        if self.method == "lora":
            from llmkit.plan.memory import lora_modules

            lora_modules(self.lora_targets)  # raises for unknown targets
        self.exports = tuple(dict.fromkeys(exports))
        return self

    @property
    def lora_target_modules(self) -> list[str]:
        from llmkit.plan.memory import lora_modules

        return [f"{module}_proj" for module in lora_modules(self.lora_targets)]

    def export_names(self) -> dict[str, str]:
        """Store name per export: the first export gets --out itself, the others a suffix."""
        names = {}
        for index, kind in enumerate(self.exports):
            names[kind] = self.out if index == 0 else f"{self.out}-{EXPORT_SUFFIXES[kind]}"
        return names

    def fingerprint(self) -> str:
        """What must match for --resume to continue a run (not the step count or output options)."""
        keep = asdict(self)
        for key in (
            "resume",
            "force",
            "exports",
            "run_dir",
            "threads",
            "extra",
            "out",
            "allow_pickle",
            "verbose",
        ):
            keep.pop(key)
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]
