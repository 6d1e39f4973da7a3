"""Shared options are validated once, before any model loads, with one sentence."""

from __future__ import annotations

import pytest
from tests.helpers.cli import run_cli

CASES = {
    "run-threads-negative": (["run", "smollm2", "hi", "--threads", "-3"], "--threads must be at least 1 thread (got -3)."),
    "run-threads-zero": (["run", "smollm2", "hi", "--threads", "0"], "--threads must be at least 1 thread (got 0)."),
    "run-context-zero": (["run", "smollm2", "hi", "--context", "0"], "--context must be at least 1 token (got 0)."),
    "chat-context-zero": (["chat", "--context", "0"], "--context must be at least 1 token (got 0)."),
    "prompt-context-zero": (["prompt", "smollm2", "-m", "user:hi", "-c", "0"], "--context must be at least 1 token (got 0)."),
    "bench-threads-zero": (["bench", "--threads", "0"], "--threads must be at least 1 thread (got 0)."),
    "bench-generate-one": (["bench", "--generate-tokens", "1"], "--generate-tokens must be at least 2 tokens (got 1)."),
    "plan-context-zero": (["plan", "llama-3.2-1b", "--context", "0"], "--context must be at least 1 token (got 0)."),
    "plan-batch-zero": (["plan", "llama-3.2-1b", "-b", "0"], "--batch-size must be at least 1 sequence (got 0)."),
    "plan-utilization": (["plan", "llama-3.2-1b", "--utilization", "1.5"], "--utilization must be above 0 and at most 1 (got 1.5)."),
}  # fmt: skip


@pytest.mark.parametrize(("args", "sentence"), CASES.values(), ids=CASES.keys())
def test_out_of_range_values_are_refused_in_one_sentence(args: list[str], sentence: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    assert result.stderr == f"Error: {sentence}\n"
    assert result.stdout == ""


def test_option_defaults_come_from_the_settings_dataclasses() -> None:
    from llmkit.cli.options import default_of
    from llmkit.train.config import FinetuneConfig

    assert default_of(FinetuneConfig, "lr") == FinetuneConfig(base="b", data="d", out="o").lr
    with pytest.raises(TypeError, match="no plain default"):
        default_of(FinetuneConfig, "base")
    with pytest.raises(TypeError, match="no field 'learning_rate'"):
        default_of(FinetuneConfig, "learning_rate")
