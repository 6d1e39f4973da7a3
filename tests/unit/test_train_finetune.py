"""Fine-tuning a tiny random model end to end: errors up front, export, resume after kill -9.

Several processes (DDP, FSDP) are tested in test_train_distributed.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from tests.helpers.cli import run_cli

from llmkit.errors import InvalidParameterError, LlmkitError
from llmkit.train.config import FinetuneConfig
from llmkit.train.data import DataError
from llmkit.train.sft import HANG_AFTER_CHECKPOINT_ENV, finetune

ANSWER = "the answer"


@pytest.fixture(scope="module")
def train_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"q{i}"},
                {"role": "assistant", "content": ANSWER},
            ]
        }
        for i in range(12)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def config(base: Path, data: Path, out: str, **overrides) -> FinetuneConfig:
    settings = dict(max_steps=6, lr=1e-2, batch_size=2, max_length=64, threads=1, seed=3)
    return FinetuneConfig(base=str(base), data=str(data), out=out, **{**settings, **overrides})


def final_loss(run_dir: Path) -> float:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return next(r["final_loss"] for r in records if r.get("event") == "eval")


def test_finetune_exports_that_every_engine_runs(
    tiny_gguf: Path, train_file: Path, fresh_home: Path
) -> None:
    import llmkit

    result = finetune(
        config(tiny_gguf, train_file, "tiny-ft", eval_split=0.25, exports=("adapter", "q8_0", "hf"))
    )
    assert result.eval_after < result.eval_before
    assert result.exports == {"adapter": "tiny-ft", "q8_0": "tiny-ft-q8", "hf": "tiny-ft-hf"}
    assert (result.run_dir / "loss.png").stat().st_size > 0
    steps = [
        json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in steps if r["event"] == "step"] == [1, 2, 3, 4, 5, 6]
    question = [{"role": "user", "content": "q1"}]
    for name, engine in (
        ("tiny-ft", "llamacpp"),
        ("tiny-ft-q8", "llamacpp"),
        ("tiny-ft-hf", "transformers"),
    ):
        with llmkit.load(name, engine=engine) as model:
            stream = model.stream_chat(question, temperature=0, max_tokens=16)
            for _ in stream:
                pass
            assert stream.result.text == ANSWER, name
            assert stream.result.finish_reason == "stop", name
    # Served with batched slots, the adapter is applied there too.
    from llmkit.generation.batching import BatchRequest, BatchScheduler

    with llmkit.load("tiny-ft") as model:
        scheduler = BatchScheduler(model, parallel=2, max_queue=2, slot_context=128, threads=1)
        try:
            params = model.params(temperature=0, max_tokens=16)
            handle = scheduler.submit(BatchRequest(model.prompt_ids(question), params))
            assert "".join(chunk.text for chunk in handle) == ANSWER
        finally:
            scheduler.close()
    # The adapter's store entry points at the base weights, untouched.
    manifest = json.loads((fresh_home / "models" / "tiny-ft" / "manifest.json").read_text())
    assert manifest["path"] == str(tiny_gguf) and manifest["adapter"].endswith("adapter.gguf")


def test_full_fine_tuning_exports_a_merged_model(
    tiny_gguf: Path, train_file: Path, fresh_home: Path
) -> None:
    import llmkit

    result = finetune(
        config(
            tiny_gguf,
            train_file,
            "tiny-full",
            method="full",
            lr=3e-3,
            eval_split=0.25,
            exports=("f16",),
        )
    )
    assert result.eval_after < result.eval_before
    with llmkit.load(result.exports["f16"]) as model:
        assert model.chat("q1", temperature=0, max_tokens=16) == ANSWER


def test_gradient_checkpointing_gives_the_same_training(
    tiny_gguf: Path, train_file: Path, fresh_home: Path
) -> None:
    plain = finetune(config(tiny_gguf, train_file, "tiny-plain", max_steps=3, exports=("hf",)))
    saved = finetune(
        config(
            tiny_gguf,
            train_file,
            "tiny-ckpt",
            max_steps=3,
            exports=("hf",),
            gradient_checkpointing=True,
        )
    )
    # Recomputing activations in the backward pass changes memory, not the arithmetic.
    assert final_loss(saved.run_dir) == pytest.approx(final_loss(plain.run_dir), rel=1e-5)


def test_bad_settings_fail_before_anything_is_written(
    tiny_gguf: Path,
    train_file: Path,
    fresh_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(InvalidParameterError, match="--lr"):
        finetune(config(tiny_gguf, train_file, "x", lr=-1.0))
    with pytest.raises(InvalidParameterError, match="--batch-size"):
        finetune(config(tiny_gguf, train_file, "x", batch_size=0))
    with pytest.raises(LlmkitError, match="Unknown model"):
        finetune(FinetuneConfig(base="no-such-model", data=str(train_file), out="x"))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match="no rows"):
        finetune(config(tiny_gguf, empty, "x"))
    import llmkit.train.prepare as prepare
    from llmkit.chat.template import select_template

    # A base with no template of its own and no built-in that fits its tokens.
    monkeypatch.setattr(prepare, "select_template", lambda *args, **kwargs: None)
    with pytest.raises(InvalidParameterError, match="--template"):
        finetune(config(tiny_gguf, train_file, "x"))
    monkeypatch.setattr(prepare, "select_template", select_template)
    monkeypatch.setattr(prepare, "_free_memory", lambda device: 1024)
    with pytest.raises(InvalidParameterError, match=r"needs about .* but only"):
        finetune(config(tiny_gguf, train_file, "x"))
    assert not (fresh_home / "models").exists() or not any((fresh_home / "models").iterdir())


def test_taken_name_is_refused_without_force_by_the_cli(
    tiny_gguf: Path, train_file: Path, fresh_home: Path
) -> None:
    args = [
        "finetune",
        str(tiny_gguf),
        "--data",
        str(train_file),
        "--out",
        "taken",
        "--max-steps",
        "1",
        "--export",
        "q8_0",
        "--threads",
        "1",
    ]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    second = run_cli(*args)
    assert second.returncode != 0
    assert "already has 'taken'" in second.stderr and "Traceback" not in second.stderr
    masks = run_cli("finetune", str(tiny_gguf), "--data", str(train_file), "--show-masks", "1")
    assert masks.returncode == 0 and "the answer<|im_end|>" in masks.stdout


def test_resume_after_kill_reaches_the_same_loss(
    tiny_gguf: Path, train_file: Path, fresh_home: Path, tmp_path: Path
) -> None:
    common = [
        "finetune",
        str(tiny_gguf),
        "--data",
        str(train_file),
        "--max-steps",
        "8",
        "--lr",
        "0.01",
        "--batch-size",
        "2",
        "--checkpoint-every",
        "3",
        "--export",
        "adapter",
        "--threads",
        "1",
        "--seed",
        "5",
    ]
    whole = run_cli(*common, "--out", "whole", "--run-dir", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr

    run_dir = tmp_path / "killed"
    args = [sys.executable, "-m", "llmkit", *common, "--out", "killed", "--run-dir", str(run_dir)]
    process = subprocess.Popen(
        args,
        env={**os.environ, HANG_AFTER_CHECKPOINT_ENV: "3"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "checkpoints" / "step-000003" / "state.pt").exists():
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    resumed = run_cli(*common, "--out", "killed", "--run-dir", str(run_dir), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming from step 3" in resumed.stderr + resumed.stdout
    assert final_loss(run_dir) == pytest.approx(final_loss(tmp_path / "whole"), rel=1e-5)
