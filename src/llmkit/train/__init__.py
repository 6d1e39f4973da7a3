"""Fine-tuning: data -> masks -> SFT (LoRA or full) -> export into the store.

`finetune(FinetuneConfig(...))` is the Python form of `llmkit finetune`; heavy libraries (torch,
transformers, peft) are imported only when a run starts.
"""

from __future__ import annotations

from llmkit.train.config import FinetuneConfig

__all__ = ["FinetuneConfig", "finetune"]


def __getattr__(name: str):
    if name == "finetune":
        from llmkit.train.sft import finetune

        return finetune
    raise AttributeError(name)
