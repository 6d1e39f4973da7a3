"""`llmkit tune` on the built-in model: formats made and measured for real, the choice kept
beside the original, and undone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.helpers.cli import run_cli


@pytest.mark.slow
def test_tune_measures_formats_keeps_the_choice_and_undoes_it(
    builtin_model_path, tmp_path: Path
) -> None:
    env = {"LLMKIT_HOME": str(tmp_path / "home")}
    # A 100% bound makes the choice depend on speed alone, which is what this machine decides.
    tuned = run_cli(
        "tune", "smollm2", "--formats", "Q8_0", "--repetitions", "1",
        "--max-quality-loss", "100%", "--json", env=env, timeout=600,
    )  # fmt: skip
    assert tuned.returncode == 0, tuned.stderr
    report = json.loads(tuned.stdout)
    formats = [c["format"] for c in report["candidates"]]
    assert formats == ["Q4_1", "Q8_0"]
    original, q8 = report["candidates"]
    assert original["original"] and original["quality_loss"] == 0 and original["agreement"] == 1
    assert 0 < q8["perplexity"] < 100 and 0 <= q8["agreement"] <= 1
    assert q8["size_bytes"] > original["size_bytes"]  # 8 bits per weight against 5
    chosen = report["chosen"]
    answer = run_cli("run", "smollm2", "What is the capital of France?", "-t", "0", env=env)
    assert answer.returncode == 0 and "Paris" in answer.stdout
    as_published = run_cli("run", "smollm2:original", "What is 2+2?", "-t", "0", "-n", "8", env=env)
    assert as_published.returncode == 0, as_published.stderr
    shown = json.loads(run_cli("show", "smollm2", "--json", env=env).stdout)
    assert (shown["variant"] or {}).get("format") == chosen
    undone = run_cli("tune", "smollm2", "--undo", env=env)
    assert undone.returncode == 0 and "runs its original file again" in undone.stdout
    assert json.loads(run_cli("show", "smollm2", "--json", env=env).stdout)["variant"] is None


def test_bad_tune_options_are_one_sentence(builtin_model_path) -> None:
    bad = run_cli("tune", "smollm2", "--max-quality-loss", "lots")
    assert bad.returncode != 0 and "is not a quality loss" in bad.stderr
    assert "Traceback" not in bad.stderr
    unknown = run_cli("tune", "smollm2", "--formats", "Q9")
    assert unknown.returncode != 0 and "Unknown quantization 'Q9'" in unknown.stderr


def test_tune_is_offered_once_at_a_built_ins_first_use(builtin_model_path, tmp_path: Path) -> None:
    env = {"LLMKIT_HOME": str(tmp_path / "home")}
    first = run_cli("run", "smollm2", "Hi", "-n", "2", env=env)
    assert first.returncode == 0 and "llmkit tune smollm2" in first.stderr
    second = run_cli("run", "smollm2", "Hi", "-n", "2", env=env)
    assert second.returncode == 0 and "llmkit tune" not in second.stderr
