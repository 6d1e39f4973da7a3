"""`llmkit finetune` as a user meets it: the device refused at once, one export by default, every
command it prints runs, and a log file gets progress lines without the libraries' noise."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from tests.helpers.cli import run_cli

from llmkit.errors import InvalidParameterError
from llmkit.store.store import ModelStore
from llmkit.train.device import training_device


@pytest.fixture(scope="module")
def train_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
        for i in range(8)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def fake_torch(*, build: str | None, gpus: int) -> SimpleNamespace:
    return SimpleNamespace(
        __version__="2.0.0+test",
        version=SimpleNamespace(cuda=build),
        cuda=SimpleNamespace(is_available=lambda: gpus > 0, device_count=lambda: gpus),
    )


def test_training_device_refuses_cuda_it_cannot_use() -> None:
    cpu_build, no_gpu, one_gpu = (
        fake_torch(build=None, gpus=0),
        fake_torch(build="12.4", gpus=0),
        fake_torch(build="12.4", gpus=1),
    )
    assert training_device(None, cpu_build, 0, 1) == "cpu"
    assert training_device(None, one_gpu, 0, 1) == "cuda:0"
    assert training_device("cuda", one_gpu, 0, 1) == "cuda"
    assert training_device("cpu", one_gpu, 0, 1) == "cpu"
    refused = [
        ("cuda", cpu_build, 0, 1, "CPU-only"),
        ("cuda:0", no_gpu, 0, 1, "no usable CUDA GPU"),
        ("cuda:1", one_gpu, 0, 1, "needs GPU 1, but torch sees 1 CUDA GPU here"),
        ("cuda", one_gpu, 1, 2, "needs GPU 1"),  # two processes, one GPU
        (None, one_gpu, 1, 2, "Training on CUDA needs GPU 1"),
        ("cuda:0", one_gpu, 0, 2, "under torchrun each of the 2 processes"),
    ]
    for requested, torch, local_rank, world, message in refused:
        with pytest.raises(InvalidParameterError, match=message):
            training_device(requested, torch, local_rank, world)


def test_cuda_on_a_cpu_only_machine_fails_before_any_work(
    tiny_gguf: Path, fresh_home: Path
) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    # The data file does not exist: the device is checked before anything is read.
    result = run_cli(
        "finetune", str(tiny_gguf), "--data", "/nonexistent.jsonl", "--out", "x", "--device", "cuda"
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("Error: --device cuda needs a CUDA build of torch")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (fresh_home / "runs").exists()
    malformed = run_cli(
        "finetune", str(tiny_gguf), "--data", "/nonexistent.jsonl", "--out", "x", "--device", "gpu"
    )
    assert malformed.returncode == 2 and "cpu, cuda or cuda:N" in malformed.stderr


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--threads", "0"], "--threads must be at least 1 thread (got 0)."),
        (["--threads", "-3"], "--threads must be at least 1 thread (got -3)."),
        (["--log-every", "0"], "--log-every must be at least 1 step and at most 100000 (got 0)."),
    ],
)
def test_counts_below_one_are_refused_at_once(
    tiny_gguf: Path, option: list[str], message: str
) -> None:
    result = run_cli(
        "finetune", str(tiny_gguf), "--data", "/nonexistent.jsonl", "--out", "x", *option
    )
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_an_unwritable_run_folder_is_refused_before_the_model_loads(
    tiny_gguf: Path, train_file: Path, fresh_home: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = run_cli(
        "finetune", str(tiny_gguf), "--data", str(train_file), "--out", "x",
        "--run-dir", str(blocker / "run"), "--threads", "1",
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"Cannot write the run folder {blocker / 'run'}" in result.stderr
    assert "step " not in result.stderr and ModelStore(fresh_home).names() == []


def printed_commands(stdout: str) -> list[list[str]]:
    """The commands after '→' in the run's report, split as a shell would."""
    return [shlex.split(line.split("→", 1)[1]) for line in stdout.splitlines() if "→" in line]


@pytest.mark.slow
def test_default_export_is_the_adapter_and_every_printed_command_runs(
    tiny_gguf: Path, train_file: Path, fresh_home: Path
) -> None:
    common = ["finetune", str(tiny_gguf), "--data", str(train_file), "--max-steps", "1"]
    default = run_cli(*common, "--out", "tiny", "--threads", "1")
    assert default.returncode == 0, default.stderr
    assert ModelStore(fresh_home).names() == ["tiny"]
    assert (fresh_home / "models" / "tiny" / "adapter.gguf").exists()

    more = run_cli(*common, "--out", "tiny2", "--export", "q8_0,hf", "--threads", "1")
    assert more.returncode == 0, more.stderr
    commands = printed_commands(default.stdout) + printed_commands(more.stdout)
    assert [command[:3] for command in commands] == [
        ["llmkit", "run", "tiny"],
        ["llmkit", "run", "tiny2"],
        ["llmkit", "run", "tiny2-hf"],
    ]
    for command in commands:
        ran = run_cli(*command[1:])  # exactly as printed
        assert ran.returncode == 0, f"{shlex.join(command)}: {ran.stderr}"
        assert "Traceback" not in ran.stderr


@pytest.mark.slow
def test_a_log_file_gets_progress_lines_and_no_library_noise(
    tiny_gguf: Path, train_file: Path, fresh_home: Path
) -> None:
    args = [
        "finetune", str(tiny_gguf), "--data", str(train_file), "--max-steps", "5",
        "--batch-size", "1", "--log-every", "2", "--threads", "1",
    ]  # fmt: skip
    quiet = run_cli(*args, "--out", "quiet")  # stderr is a pipe here, as in a log file
    assert quiet.returncode == 0, quiet.stderr
    steps = [line.split()[1] for line in quiet.stderr.splitlines() if line.startswith("step ")]
    assert steps == ["1/5", "2/5", "4/5", "5/5"]  # the first, every 2nd, and the last
    assert "\r" not in quiet.stderr and "it/s" not in quiet.stderr
    assert "Warning" not in quiet.stderr
    # --verbose lets the libraries speak (their GGUF loading bar), so the silencing is real.
    loud = run_cli(*args, "--out", "loud", "--verbose")
    assert loud.returncode == 0, loud.stderr
    # Which of them speaks depends on the run (the bar is off where tqdm finds no terminal
    # settings it likes); one of the two always does, and neither does without --verbose.
    assert "de-quantizing GGUF tensors" in loud.stderr or "Warning" in loud.stderr


@pytest.mark.slow
def test_a_quantized_gguf_export_and_an_hf_export_in_the_base_precision(
    tmp_path: Path, train_file: Path, fresh_home: Path
) -> None:
    from tests.helpers.tiny_model import write_tiny_llama_gguf

    from llmkit.store.gguf_meta import read_gguf_header

    base = write_tiny_llama_gguf(tmp_path / "tiny-f16.gguf", half=True)
    result = run_cli(
        "finetune", str(base), "--data", str(train_file), "--max-steps", "1", "--threads", "1",
        "--out", "tq", "--export", "gguf,hf", "--quant", "q4_k_m",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    store = ModelStore(fresh_home)
    assert store.names() == ["tq", "tq-hf"]
    quantized = store.get("tq")
    assert quantized.info.quantization == "Q4_K_M"
    assert read_gguf_header(quantized.weights_path).quantization == "Q4_K_M"
    assert "Quantizing the merged model to Q4_K_M" in result.stderr
    # The HF folder keeps the base's F16 (training ran in float32 on this CPU).
    dtypes = set()
    for weights in store.get("tq-hf").weights_path.glob("*.safetensors"):
        with weights.open("rb") as handle:
            header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
        dtypes |= {entry["dtype"] for key, entry in header.items() if key != "__metadata__"}
    assert dtypes == {"F16"}
    for command in printed_commands(result.stdout):
        ran = run_cli(*command[1:], "-n", "2")
        assert ran.returncode == 0, f"{shlex.join(command)}: {ran.stderr}"


def test_quant_needs_the_gguf_export_and_a_known_format(tiny_gguf: Path) -> None:
    args = ["finetune", str(tiny_gguf), "-d", "/nonexistent.jsonl", "-o", "x"]
    unknown = run_cli(*args, "--quant", "Q3_X")
    assert unknown.returncode == 2 and "Unknown quantization 'Q3_X'" in unknown.stderr
    alone = run_cli(*args, "--export", "hf", "--quant", "Q4_K_M")
    assert alone.returncode == 2
    assert "--quant sets the format of --export gguf; add gguf" in alone.stderr
