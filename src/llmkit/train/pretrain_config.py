"""The settings of one pretraining run, checked before any file is read or written."""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass

from llmkit.errors import InvalidParameterError
from llmkit.store.paths import validate_model_name

EXPORT_TYPES = {"f16": "F16", "q8_0": "Q8_0", "f32": "F32"}
TRAINED_TOKENIZER = "train"
# Steps when neither --steps nor --tokens is given: about two minutes of the tiny model on two
# CPU cores, enough to leave a unigram model far behind (see docs/pretraining.md).
DEFAULT_STEPS = {"tiny": 250, "small": 2000}
FALLBACK_STEPS = 1000  # a model from a JSON config


@dataclass
class PretrainConfig:
    """What `llmkit pretrain` was asked to do. --batch-size is per process."""

    out: str
    data: tuple[str, ...] = ()
    demo: bool = False  # add the demo corpus (Python's docstrings) to the data
    size: str = "tiny"  # tiny, small or a JSON config path
    tokenizer: str = TRAINED_TOKENIZER  # or a store model whose tokenizer is reused
    tokens: int | None = None  # training tokens (all processes); sets the step count
    steps: int | None = None
    batch_size: int = 16
    context: int | None = None  # tokens per training sequence; default: the model's context
    lr: float = 4e-3
    warmup_steps: int | None = None  # default: 5% of the steps
    weight_decay: float = 0.1
    eval_split: float = 0.05  # the corpus's last tokens, never trained on
    sample_every: int | None = None  # steps; default: five samples over the run; 0: none
    sample_prompt: str | None = None  # default: the start of the held-out text
    sample_tokens: int = 40
    seed: int = 0
    export: str = "f16"
    force: bool = False
    device: str | None = None
    checkpoint_every: int = 0
    resume: bool = False
    run_dir: str | None = None
    threads: int | None = None
    verbose: bool = False

    def validated(self) -> PretrainConfig:
        """Raise InvalidParameterError (one sentence) for any impossible setting."""
        validate_model_name(self.out)
        if not self.data and not self.demo:
            raise InvalidParameterError(
                "Give the training text with --data FILE, or --demo for the demo corpus."
            )
        if self.tokens is not None and self.steps is not None:
            raise InvalidParameterError("Give either --tokens or --steps, not both.")
        positive = {
            "--tokens": self.tokens,
            "--steps": self.steps,
            "--batch-size": self.batch_size,
            "--threads": self.threads,
            "--sample-tokens": self.sample_tokens,
        }
        for option, value in positive.items():
            if value is not None and value < 1:
                raise InvalidParameterError(f"{option} must be at least 1, not {value}.")
        if self.context is not None and self.context < 8:
            raise InvalidParameterError(f"--context must be at least 8 tokens, not {self.context}.")
        if not (math.isfinite(self.lr) and 0 < self.lr < 1):
            raise InvalidParameterError(f"--lr must be between 0 and 1, not {self.lr}.")
        if not 0 < self.eval_split < 0.5:
            raise InvalidParameterError(
                f"--eval-split must be between 0 and 0.5, not {self.eval_split}."
            )
        for option, count in (
            ("--warmup-steps", self.warmup_steps),
            ("--sample-every", self.sample_every),
            ("--checkpoint-every", self.checkpoint_every),
        ):
            if count is not None and count < 0:
                raise InvalidParameterError(f"{option} cannot be negative.")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise InvalidParameterError("--weight-decay cannot be negative.")
        if self.export not in EXPORT_TYPES:
            raise InvalidParameterError(
                f"--export must be one of {', '.join(EXPORT_TYPES)}, not {self.export!r}."
            )
        if self.device not in (None, "cpu", "cuda") and not re.fullmatch(
            r"cuda:\d+", str(self.device)
        ):
            raise InvalidParameterError(
                f"--device must be cpu, cuda or cuda:N, not {self.device!r}."
            )
        return self

    def default_steps(self) -> int:
        return self.steps or DEFAULT_STEPS.get(self.size, FALLBACK_STEPS)

    def fingerprint(self, corpus_digest: str) -> str:
        """What must match for --resume to continue a run: everything that shapes the training."""
        keep = asdict(self)
        for key in ("out", "export", "force", "resume", "run_dir", "threads", "verbose", "device"):
            keep.pop(key)
        keep["corpus"] = corpus_digest
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]
