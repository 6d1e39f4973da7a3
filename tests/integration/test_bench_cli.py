"""`llmkit bench` on the built-in model reports the spread of each figure, not only its median."""

from __future__ import annotations

import json

from tests.helpers.cli import run_cli


def test_bench_reports_min_median_max(builtin_model_path) -> None:
    result = run_cli(
        "bench", "smollm2", "--json", "--repetitions", "3", "--prompt-tokens", "32",
        "--generate-tokens", "8", timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    for name in (
        "prompt_tokens_per_second",
        "generation_tokens_per_second",
        "time_to_first_token_seconds",
    ):
        low, middle, high = row["spread"][name]
        assert 0 < low <= middle <= high
        assert row[name] == middle
