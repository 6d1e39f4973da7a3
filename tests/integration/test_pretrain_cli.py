"""`llmkit pretrain` as a user meets it: bad corpora refused in one sentence, a small corpus
warned about with its tokens-per-parameter figure, and a trained model that `llmkit run --raw`
and `llmkit next` run on llama.cpp straight from the store, and `llmkit finetune` trains further."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("tokenizers")

from tests.helpers.cli import run_cli
from tests.helpers.stories import TEST_SHAPE, story_corpus


@pytest.fixture
def shape_file(tmp_path: Path) -> Path:
    path = tmp_path / "shape.json"
    path.write_text(json.dumps(TEST_SHAPE))
    return path


def _refused(result, message: str) -> None:
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_bad_corpora_are_refused_in_one_sentence(
    fresh_home: Path, tmp_path: Path, shape_file: Path
) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    _refused(run_cli("pretrain", "--data", str(empty), "--out", "m"), "holds no text")
    _refused(run_cli("pretrain", "--data", str(tmp_path / "nope.txt"), "--out", "m"), "Cannot read")
    _refused(run_cli("pretrain", "--out", "m"), "--data FILE, or --demo")
    short = tmp_path / "short.txt"
    short.write_text("A few words only, far fewer than one window of context.\n")
    _refused(
        run_cli("pretrain", "--data", str(short), "--out", "m", "--size", str(shape_file)),
        "training on windows of 64 tokens needs more than",
    )


def test_a_trained_model_runs_from_the_store(
    fresh_home: Path, tmp_path: Path, shape_file: Path
) -> None:
    corpus = story_corpus(tmp_path / "stories.txt", sentences=1500)
    trained = run_cli(
        "pretrain", "--data", str(corpus), "--out", "stories", "--size", str(shape_file),
        "--steps", "30", "--batch-size", "8", "--lr", "5e-3", "--sample-every", "15",
        "--threads", "1", "--log-every", "10", timeout=300,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert "step 30/30" in trained.stderr and "/param, Chinchilla ~20" in trained.stderr
    assert "step 15: held-out loss" in trained.stderr and "sample:" in trained.stderr
    assert "a unigram model:" in trained.stdout
    assert "llmkit run stories --raw The" in trained.stdout
    ran = run_cli("run", "stories", "--raw", "The cat", "--max-tokens", "8", "--temperature", "0")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip()
    nexts = run_cli("next", "stories", "The cat sees the", "--json")
    assert nexts.returncode == 0, nexts.stderr
    assert json.loads(nexts.stdout)
    # ... and it fine-tunes like any model in the store (plain-text rows: it has no chat template).
    rows = tmp_path / "more.jsonl"
    rows.write_text("".join(json.dumps({"text": line}) + "\n" for line in ["The dog runs."] * 4))
    tuned = run_cli(
        "finetune", "stories", "--data", str(rows), "--out", "stories-ft", "--max-steps", "2",
        "--batch-size", "2", "--device", "cpu", "--threads", "1", timeout=300,
    )  # fmt: skip
    assert tuned.returncode == 0, tuned.stderr
    assert "Traceback" not in tuned.stderr
    listed = run_cli("list")
    assert "stories-ft" in listed.stdout, listed.stdout


def test_a_corpus_small_for_the_model_is_warned_about(fresh_home: Path, tmp_path: Path) -> None:
    corpus = story_corpus(tmp_path / "few.txt", sentences=300)
    result = run_cli(
        "pretrain", "--data", str(corpus), "--out", "few", "--size", "tiny", "--steps", "1",
        "--batch-size", "2", "--context", "32", "--sample-every", "0", "--threads", "1",
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "tokens per parameter" in result.stderr + result.stdout
    assert "learn the corpus by heart" in result.stderr + result.stdout
