"""`llmkit quantize` on the built-in model: llama.cpp's quantizer, a new model beside the original."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers.cli import run_cli


def test_quantize_stores_a_runnable_model_beside_the_original(
    builtin_model_path, tmp_path: Path
) -> None:
    env = {"LLMKIT_HOME": str(tmp_path / "home")}
    made = run_cli("quantize", "smollm2", "--to", "q8_0", env=env, timeout=300)
    assert made.returncode == 0, made.stderr
    assert "Stored smollm2-q8_0" in made.stdout
    shown = json.loads(run_cli("show", "smollm2-q8_0", "--json", env=env).stdout)
    assert shown["info"]["quantization"] == "Q8_0"
    answer = run_cli("run", "smollm2-q8_0", "What is the capital of France?", "-t", "0", env=env)
    assert answer.returncode == 0 and "Paris" in answer.stdout
    original = json.loads(run_cli("show", "smollm2", "--json", env=env).stdout)
    assert original["info"]["quantization"] == "Q4_1"  # untouched
    again = run_cli("quantize", "smollm2", "--to", "Q8_0", env=env)
    assert again.returncode != 0 and "exists; use --force" in again.stderr


def test_bad_formats_and_names_are_one_sentence(builtin_model_path) -> None:
    bad = run_cli("quantize", "smollm2", "--to", "Q9")
    assert bad.returncode != 0 and "Unknown quantization 'Q9'; choose one of" in bad.stderr
    missing = run_cli("quantize", "no-such-model", "--to", "Q8_0")
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
