"""The settings of one pretraining run, checked before any file is read or written."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from llmkit.errors import InvalidParameterError
from llmkit.settings import check_settings, setting
from llmkit.store.paths import validate_model_name
from llmkit.train.config import LOG_EVERY_MAX
from llmkit.train.device import check_device_option

EXPORT_TYPES = {"f16": "F16", "q8_0": "Q8_0", "f32": "F32"}
TRAINED_TOKENIZER = "train"
# Steps when neither --steps nor --tokens is given: about two minutes of the tiny model on two
# CPU cores, enough to leave a unigram model far behind (see docs/pretraining.md).
DEFAULT_STEPS = {"tiny": 250, "small": 2000}
FALLBACK_STEPS = 1000  # a model from a JSON config


@dataclass
class PretrainConfig:
    """What `llmkit pretrain` was asked to do. --batch-size is per process."""

    out: str = setting(flags=("--out", "-o"), help="Store name of the trained model.")
    data: tuple[str, ...] = ()  # text files; the CLI's repeatable --data
    demo: bool = setting(
        False, help="Train on the demo corpus: the docstrings of Python's standard library."
    )
    size: str = setting("tiny", help="tiny (~1.4M parameters), small (~14M) or a CONFIG.json.")
    tokenizer: str = setting(
        TRAINED_TOKENIZER,
        help="train (a byte-level BPE learnt from the corpus) or a store model whose tokenizer "
        "is reused.",
    )
    tokens: int | None = setting(
        None, help="Train on this many tokens (sets the number of steps).", minimum=1
    )
    steps: int | None = setting(
        None, help="Optimizer steps (default: 250 for tiny, 2000 for small).", minimum=1,
        unit="step",
    )  # fmt: skip
    batch_size: int = setting(
        16, flags=("--batch-size", "-b"), help="Sequences per step (per process).", minimum=1,
        unit="sequence",
    )  # fmt: skip
    context: int | None = setting(
        None, help="Tokens per sequence (default: the model's context).", minimum=8,
        unit="tokens",
    )  # fmt: skip
    lr: float = setting(
        4e-3, help="Peak learning rate (cosine decay to a tenth).", above=0, below=1
    )
    warmup_steps: int | None = setting(
        None, help="Steps of linear warm-up (default: 5% of them).", minimum=0
    )
    weight_decay: float = setting(0.1, help="AdamW weight decay (matrices only).", minimum=0)
    eval_split: float = setting(
        0.05, help="The corpus's last fraction, held out for evaluation.", above=0, below=0.5
    )
    sample_every: int | None = setting(
        None,
        help="Every N steps, print a sample continuation and the held-out loss (default: five "
        "times a run; 0: never).",
        minimum=0,
    )
    sample_prompt: str | None = setting(
        None, help="Text the samples continue (default: a held-out document's start)."
    )
    sample_tokens: int = setting(40, help="Tokens per sample.", minimum=1, unit="token")
    seed: int = setting(0, help="Seed for the weights and the data order.")
    export: str = setting(
        "f16", help="GGUF tensor type: f16, q8_0 or f32.", choices=tuple(EXPORT_TYPES)
    )
    force: bool = setting(False, help="Replace a store model with the same name.")
    device: str | None = setting(None, help="cpu, cuda or cuda:N (default: cuda when present).")
    checkpoint_every: int = setting(
        0, help="Save a resumable checkpoint every N steps (0: never).", minimum=0
    )
    resume: bool = setting(False, help="Continue from the run's last checkpoint.")
    run_dir: str | None = setting(
        None, help="Metrics, loss plot, tokenizer and checkpoints (default: LLMKIT_HOME/runs/OUT)."
    )
    threads: int | None = setting(None, help="CPU threads for training.", minimum=1, unit="thread")
    log_every: int = setting(
        10, help="When stderr is not a terminal, print a progress line every N steps.",
        minimum=1, maximum=LOG_EVERY_MAX, unit="step",
    )  # fmt: skip
    verbose: bool = setting(False, help="Show the libraries' own progress bars and warnings.")

    def validated(self) -> PretrainConfig:
        """Raise InvalidParameterError (one sentence) for any impossible setting."""
        validate_model_name(self.out)
        # Every range and choice declared with the fields above, and the pairs that exclude
        # each other.
        check_settings(self, exclusive=[("tokens", "steps")])
        check_device_option(self.device)
        if not self.data and not self.demo:
            raise InvalidParameterError(
                "Give the training text with --data FILE, or --demo for the demo corpus."
            )
        return self

    def default_steps(self) -> int:
        return self.steps or DEFAULT_STEPS.get(self.size, FALLBACK_STEPS)

    def fingerprint(self, corpus_digest: str) -> str:
        """What must match for --resume to continue a run: everything that shapes the training."""
        keep = asdict(self)
        output = ("out", "export", "force", "resume", "run_dir", "threads", "log_every", "verbose")
        for key in (*output, "device"):
            keep.pop(key)
        keep["corpus"] = corpus_digest
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]
