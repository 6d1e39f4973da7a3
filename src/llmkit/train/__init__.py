"""Training: fine-tuning (data -> masks -> SFT, LoRA or full) and pretraining from nothing, each
exported into the store.

`finetune(FinetuneConfig(...))` and `pretrain(PretrainConfig(...))` are the Python forms of
`llmkit finetune` and `llmkit pretrain`; heavy libraries (torch, transformers, peft) are imported
only when a run starts.
"""

from __future__ import annotations

from llmkit.train.config import FinetuneConfig
from llmkit.train.pretrain_config import PretrainConfig

__all__ = ["FinetuneConfig", "PretrainConfig", "finetune", "pretrain"]


def __getattr__(name: str):
    if name == "finetune":
        from llmkit.train.sft import finetune

        return finetune
    if name == "pretrain":
        from llmkit.train.pretrain import pretrain

        return pretrain
    raise AttributeError(name)
