"""`torchrun` data parallel pretraining: two processes with half the batch each train exactly
what one process does with the whole batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("tokenizers")

from tests.helpers.cli import run_cli
from tests.helpers.stories import TEST_SHAPE, story_corpus


def final_loss(run_dir: Path) -> float:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if '"step"' in line][-1]["loss"]


@pytest.mark.slow
def test_two_processes_equal_one_with_the_same_global_batch(
    fresh_home: Path, tmp_path: Path
) -> None:
    shape = tmp_path / "shape.json"
    shape.write_text(json.dumps(TEST_SHAPE))
    corpus = story_corpus(tmp_path / "stories.txt", sentences=1500)
    common = [
        "pretrain", "--data", str(corpus), "--size", str(shape), "--steps", "6",
        "--sample-every", "0", "--threads", "1",
    ]  # fmt: skip
    one = run_cli(*common, "--batch-size", "4", "--out", "one", "--run-dir", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "llmkit",
         *common, "--batch-size", "2", "--out", "two", "--run-dir", str(tmp_path / "two")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    assert final_loss(tmp_path / "two") == pytest.approx(final_loss(tmp_path / "one"), rel=1e-4)
    assert "two" in run_cli("list").stdout
