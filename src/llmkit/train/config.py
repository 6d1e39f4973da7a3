"""The settings of one fine-tuning run, checked before anything is loaded or written."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from llmkit.errors import InvalidParameterError
from llmkit.settings import check_settings, setting
from llmkit.store.paths import validate_model_name
from llmkit.train.device import check_device_option

METHODS = ("lora", "full")
# "gguf" is the merged model quantized by llama.cpp's own quantizer to --quant (`llmkit quantize`).
EXPORT_KINDS = ("adapter", "f16", "q8_0", "hf", "f32", "gguf")
EXPORT_SUFFIXES = {"adapter": "adapter", "f16": "f16", "q8_0": "q8", "hf": "hf", "f32": "f32"}
DEFAULT_QUANT = "Q4_K_M"  # llama.cpp's usual choice of size against quality
# The longest gap between two progress lines a log may ask for (--log-every).
LOG_EVERY_MAX = 100_000


def default_exports(method: str, gguf_base: bool, quant: str | None = None) -> tuple[str, ...]:
    """What a run exports when --export is not given: one entry, the smallest that runs.

    LoRA gives the adapter (a few MB, applied by llama.cpp over the unchanged base file); full
    fine-tuning gives one Q8_0 GGUF (half the size of F16, at a quality llama.cpp measures as
    nearly lossless); --quant alone asks for that GGUF in its format. A base that GGUF export
    does not support gives the merged HF folder.
    """
    if quant:  # refused later, in one sentence, for a base GGUF export does not support
        return ("gguf",)
    if not gguf_base:
        return ("hf",)
    return ("adapter",) if method == "lora" else ("q8_0",)


@dataclass
class FinetuneConfig:
    """What `llmkit finetune` was asked to do. Sizes are per process; see `global_batch`."""

    base: str
    data: str = setting(
        flags=("--data", "-d"),
        help="Training data, JSONL (messages, prompt/completion or text rows).",
    )
    out: str = setting(
        flags=("--out", "-o"),
        help="Store name of the result (with several exports, the others get -f16, -q8, -hf, "
        "-q4_k_m...).",
    )
    eval_data: str | None = setting(None, flags=("--eval",), help="Evaluation data, JSONL.")
    eval_split: float | None = setting(
        None, help="Hold out this fraction of --data for evaluation.", above=0, below=1
    )
    method: str = setting("lora", help="lora (LoRA adapters) or full.", choices=METHODS)
    epochs: int = setting(1, help="Passes over the data.", minimum=1, unit="epoch")
    max_steps: int | None = setting(
        None, help="Stop after this many optimizer steps (overrides --epochs).", minimum=1,
        unit="step",
    )  # fmt: skip
    lr: float = setting(2e-4, help="Peak learning rate (linear decay to 0).", above=0, below=1)
    warmup_steps: int = setting(0, help="Steps of linear warm-up.", minimum=0)
    weight_decay: float = setting(0.0, help="AdamW weight decay.", minimum=0)
    batch_size: int = setting(
        4, flags=("--batch-size", "-b"), help="Sequences per micro-batch (per process).",
        minimum=1, unit="sequence",
    )  # fmt: skip
    grad_accum: int = setting(1, help="Micro-batches per optimizer step.", minimum=1)
    max_length: int = setting(512, help="Longest sequence in tokens.", minimum=8, unit="tokens")
    too_long: str = setting(
        "truncate", help="Rows over --max-length: truncate or drop (always reported).",
        choices=("truncate", "drop"),
    )  # fmt: skip
    packing: bool = setting(False, help="Pack short rows into --max-length sequences (no padding).")
    lora_r: int = setting(16, help="LoRA rank.", minimum=1)
    lora_alpha: float = setting(32.0, help="LoRA alpha (scale = alpha / r).", above=0)
    lora_dropout: float = setting(0.0, help="Dropout on the LoRA input.", minimum=0, below=1)
    lora_targets: str = setting("all", help="all, attention, qv, mlp or a list like q,v,down.")
    seed: int = setting(0, help="Seed for data order and LoRA initialisation.")
    template: str | None = setting(
        None, help="Chat template (built-in name or file) for a base without one."
    )  # a built-in name or template text
    exports: tuple[str, ...] = ()  # empty: default_exports(), chosen once the base is known
    quant: str | None = setting(
        None,
        help="The format of --export gguf, by llama.cpp's quantizer: Q4_K_M (default), Q5_K_M, "
        "Q6_K, Q8_0, Q4_0, ... (as `llmkit quantize --to`); alone, it asks for that export.",
    )
    force: bool = setting(False, help="Replace store models with the same names.")
    device: str | None = setting(None, help="cpu, cuda or cuda:N (default: cuda when present).")
    gradient_checkpointing: bool = setting(False, help="Recompute activations to save memory.")
    fsdp: bool = setting(
        False,
        help="Under torchrun: shard weights, gradients and optimizer state over the processes "
        "(FSDP2) instead of copying the model to each.",
    )
    checkpoint_every: int = setting(
        0, help="Save a resumable checkpoint every N steps (0: never).", minimum=0
    )
    resume: bool = setting(False, help="Continue from the run's last checkpoint.")
    run_dir: str | None = setting(
        None, help="Metrics, loss plot and checkpoints (default: LLMKIT_HOME/runs/OUT)."
    )
    threads: int | None = setting(None, help="CPU threads for training.", minimum=1, unit="thread")
    allow_pickle: bool = setting(
        False,
        help="Accept a base model whose only weights are pickles (loading them can run code).",
    )
    log_every: int = setting(
        10, help="When stderr is not a terminal, print a progress line every N steps.",
        minimum=1, maximum=LOG_EVERY_MAX, unit="step",
    )  # fmt: skip
    verbose: bool = setting(False, help="Show the libraries' own progress bars and warnings.")
    extra: dict[str, str] = field(default_factory=dict)

    def validated(self) -> FinetuneConfig:
        """Raise InvalidParameterError (one sentence) for any impossible setting."""
        validate_model_name(self.out)
        # Every range and choice declared with the fields above, and the pairs that exclude
        # each other.
        check_settings(self, exclusive=[("eval_data", "eval_split")])
        check_device_option(self.device)
        exports = self.exports
        unknown = [kind for kind in exports if kind not in EXPORT_KINDS]
        if unknown:
            raise InvalidParameterError(
                f"Unknown export {', '.join(unknown)}; choose from {', '.join(EXPORT_KINDS)}."
            )
        if "adapter" in exports and self.method != "lora":
            raise InvalidParameterError("Only --method lora produces an adapter to export.")
        if self.quant is not None:
            from llmkit.engines.llamacpp_quantize import check_format

            self.quant = check_format(self.quant)
            if exports and "gguf" not in exports:
                raise InvalidParameterError(
                    "--quant sets the format of --export gguf; add gguf to --export "
                    f"(e.g. --export {','.join((*exports, 'gguf'))})."
                )
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
            names[kind] = self.out if index == 0 else f"{self.out}-{self.export_suffix(kind)}"
        return names

    @property
    def gguf_quant(self) -> str:
        """The format of the quantized GGUF export."""
        return self.quant or DEFAULT_QUANT

    def export_suffix(self, kind: str) -> str:
        return self.gguf_quant.lower() if kind == "gguf" else EXPORT_SUFFIXES[kind]

    def fingerprint(self) -> str:
        """What must match for --resume to continue a run (not the step count or output options)."""
        keep = asdict(self)
        for key in (
            "resume",
            "force",
            "exports",
            "quant",
            "run_dir",
            "threads",
            "extra",
            "out",
            "allow_pickle",
            "log_every",
            "verbose",
        ):
            keep.pop(key)
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]
