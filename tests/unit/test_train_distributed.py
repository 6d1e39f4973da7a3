"""Fine-tuning on several processes: DDP and FSDP2 equal one process, and a killed rank resumes.

Two "nodes" are two torchrun launchers on this machine meeting at a rendezvous on 127.0.0.1
(gloo), one process each; the comparison is one process with the same global batch.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from tests.helpers.cli import run_cli

from llmkit.train.sft import HANG_AFTER_CHECKPOINT_ENV

GLOBAL_BATCH = 4
LEARNING_RATES = {"lora": "0.01", "full": "0.003"}
LAUNCH_TIMEOUT = 300


@pytest.fixture(scope="module")
def train_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"question {i}"},
                {"role": "assistant", "content": f"answer {i % 3}"},
            ]
        }
        for i in range(14)  # not a multiple of the global batch: the last step is short
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def arguments(base: Path, data: Path, method: str, out: str, run_dir: Path) -> list[str]:
    return [
        "finetune", str(base), "--data", str(data), "--method", method,
        "--lr", LEARNING_RATES[method], "--export", "hf", "--threads", "1",
        "--seed", "7", "--out", out, "--run-dir", str(run_dir), "--force",
    ]  # fmt: skip


def losses(run_dir: Path) -> list[float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r.get("event") == "step"]


def final_loss(run_dir: Path) -> float:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return next(r["final_loss"] for r in records if r.get("event") == "eval")


def load_record(run_dir: Path) -> dict:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return next(r for r in records if r.get("event") == "load")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


NODES_MARK = "LLMKIT_TEST_NODES"  # in every launcher's and worker's environment


def marked_processes(mark: str) -> list[int]:
    """The processes whose environment holds MARK (NAME=VALUE), this test process aside."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue  # gone, or not ours to read
        if mark.encode() in environ:
            found.append(int(entry.name))
    return found


class TwoNodes:
    """Two torchrun launchers ("nodes") of one process each, meeting on 127.0.0.1."""

    def __init__(self, args: list[str], logs: Path, env: dict[str, str] | None = None) -> None:
        port = free_port()
        logs.mkdir(parents=True, exist_ok=True)
        self.logs = [logs / f"node{node}.log" for node in range(2)]
        self.launchers = []
        token = uuid.uuid4().hex
        self.mark = f"{NODES_MARK}={token}"
        for log in self.logs:
            command = [
                sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
                "--nproc-per-node", "1", "--rdzv-backend", "c10d",
                "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "llmkit-test",
                "-m", "llmkit", *args,
            ]  # fmt: skip
            with log.open("w") as output:
                self.launchers.append(
                    subprocess.Popen(
                        command,
                        stdout=output,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        start_new_session=True,
                        env={
                            **os.environ,
                            "OMP_NUM_THREADS": "1",
                            NODES_MARK: token,
                            **(env or {}),
                        },
                    )
                )

    def output(self) -> str:
        return "\n".join(log.read_text()[-3000:] for log in self.logs)

    def wait(self, timeout: float = LAUNCH_TIMEOUT) -> list[int]:
        deadline = time.monotonic() + timeout
        try:
            return [p.wait(timeout=max(1.0, deadline - time.monotonic())) for p in self.launchers]
        finally:
            self.stop()

    def stop(self) -> None:
        # torchrun starts each worker in a session of its own, so killing a launcher's group
        # misses it, and a launcher that has exited leaves its worker to init. The workers are
        # found by the mark in their environment instead.
        for launcher in self.launchers:
            if launcher.poll() is None:
                os.killpg(launcher.pid, signal.SIGKILL)
        for pid in marked_processes(self.mark):
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                os.kill(pid, signal.SIGKILL)
        for launcher in self.launchers:
            launcher.wait()

    def worker(self, rank: int) -> int:
        """The process id of the worker with this RANK (torchrun's child on one of the nodes)."""
        for launcher in self.launchers:
            for task in Path(f"/proc/{launcher.pid}/task").iterdir():
                for child in (task / "children").read_text().split():
                    environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
                    if f"RANK={rank}".encode() in environ:
                        return int(child)
        raise AssertionError(f"no worker with RANK={rank}")


def assert_same_weights(folder: Path, one_run_dir: Path, method: str) -> None:
    """The exported HF weights match the one-process run's (exported beside its run folder)."""
    from safetensors.torch import load_file

    def weights(folder: Path) -> dict:
        return {k: v for f in folder.rglob("*.safetensors") for k, v in load_file(f).items()}

    exported = weights(folder)
    reference = weights(one_run_dir.parent / "models" / f"one-{method}")
    assert exported and exported.keys() == reference.keys()
    for name, tensor in reference.items():
        # Adam divides by the root of tiny second moments, so the order gradients are summed in
        # shows at ~1e-4 (a few percent of one step); a wrong split differs by whole steps.
        assert (exported[name] - tensor).abs().max() < 5e-4, name


def run_two_nodes(args: list[str], logs: Path) -> None:
    nodes = TwoNodes(args, logs)
    codes = nodes.wait()
    assert codes == [0, 0], nodes.output()


@pytest.fixture(scope="module")
def one_process(tiny_gguf: Path, train_file: Path, tmp_path_factory: pytest.TempPathFactory):
    """One-process runs at the global batch, once per method, shared by the tests below."""
    home = tmp_path_factory.mktemp("home-one")
    done: dict[str, Path] = {}

    def run(method: str) -> Path:
        if method not in done:
            run_dir = home / f"run-{method}"
            args = arguments(tiny_gguf, train_file, method, f"one-{method}", run_dir)
            result = run_cli(
                *args, "--batch-size", str(GLOBAL_BATCH), env={"LLMKIT_HOME": str(home)}
            )
            assert result.returncode == 0, result.stderr
            done[method] = run_dir
        return done[method]

    return run


@pytest.mark.slow
def test_ddp_over_two_nodes_equals_one_process(
    tiny_gguf: Path, train_file: Path, fresh_home: Path, tmp_path: Path, one_process
) -> None:
    run_dir = tmp_path / "ddp"
    args = arguments(tiny_gguf, train_file, "lora", "ddp", run_dir)
    run_two_nodes([*args, "--batch-size", str(GLOBAL_BATCH // 2)], tmp_path / "logs")
    expected = losses(one_process("lora"))
    assert len(expected) == 4  # 14 rows in batches of 4: the last step has 2, all on rank 0
    assert losses(run_dir) == pytest.approx(expected, abs=1e-4)
    assert_same_weights(fresh_home / "models" / "ddp", one_process("lora"), "lora")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["full", "lora"])
def test_fsdp_over_two_processes_equals_one_process(
    tiny_gguf: Path, train_file: Path, fresh_home: Path, tmp_path: Path, one_process, method: str
) -> None:
    run_dir = tmp_path / "fsdp"
    args = arguments(tiny_gguf, train_file, method, "fsdp", run_dir)
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         "--master-port", str(free_port()), "-m", "llmkit", *args,
         "--batch-size", str(GLOBAL_BATCH // 2), "--fsdp"],
        capture_output=True, text=True, timeout=LAUNCH_TIMEOUT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    assert losses(run_dir) == pytest.approx(losses(one_process(method)), abs=1e-4)
    # Rank 1 never read the weights: it built the model on the meta device (its parameters
    # measured so before sharding) and got its shards from rank 0.
    assert load_record(run_dir) == {"event": "load", "meta_ranks": [1]}
    # Rank 0 gathered every process's shards into one whole model for the export.
    assert_same_weights(fresh_home / "models" / "fsdp", one_process(method), method)


@pytest.mark.slow
@pytest.mark.parametrize("sharding", [["--fsdp"], []], ids=["fsdp", "ddp"])
def test_killed_rank_resumes_to_the_same_loss(
    tiny_gguf: Path,
    train_file: Path,
    fresh_home: Path,
    tmp_path: Path,
    one_process,
    sharding: list[str],
) -> None:
    run_dir = tmp_path / "killed"
    args = [
        *arguments(tiny_gguf, train_file, "full", "killed", run_dir),
        "--batch-size", str(GLOBAL_BATCH // 2), "--checkpoint-every", "2", *sharding,
    ]  # fmt: skip
    nodes = TwoNodes(args, tmp_path / "logs-killed", env={HANG_AFTER_CHECKPOINT_ENV: "2"})
    try:
        deadline = time.monotonic() + LAUNCH_TIMEOUT
        while not (run_dir / "checkpoints" / "step-000002" / "state.pt").exists():
            assert all(p.poll() is None for p in nodes.launchers), nodes.output()
            assert time.monotonic() < deadline, nodes.output()
            time.sleep(0.3)
        os.kill(nodes.worker(1), signal.SIGKILL)
        # Its launcher fails; the other node's worker waits on it, and is stopped with its node.
        # Either launcher may notice first, so wait for whichever exits.
        deadline = time.monotonic() + 120
        while all(p.poll() is None for p in nodes.launchers):
            assert time.monotonic() < deadline, nodes.output()
            time.sleep(0.3)
    finally:
        nodes.stop()
    assert marked_processes(nodes.mark) == []  # the waiting worker went with its node
    assert any(code != 0 for code in (p.returncode for p in nodes.launchers))
    assert not (fresh_home / "models" / "killed").exists()

    resumed = TwoNodes([*args, "--resume"], tmp_path / "logs-resumed")
    assert resumed.wait() == [0, 0], resumed.output()
    assert "Resuming from step 2" in resumed.output()
    if sharding:  # the resumed run, too, read the weights on rank 0 only
        assert load_record(run_dir)["meta_ranks"] == [1]
    assert final_loss(run_dir) == pytest.approx(final_loss(one_process("full")), abs=1e-4)
    assert losses(run_dir)[-1] == pytest.approx(losses(one_process("full"))[-1], abs=1e-4)


META_SHARDING = """
import torch, transformers
from llmkit.train.distributed import Distributed

distributed = Distributed.from_environment(torch, fsdp=True)
distributed.setup("cpu")
config = transformers.LlamaConfig(
    vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
)
torch.manual_seed(1)
if distributed.is_main:
    model = transformers.LlamaForCausalLM(config)
else:
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(config)
distributed.wrap_model(model, list(model.model.layers), device="cpu")
assert distributed.meta_ranks == [1]
assert model.lm_head.weight is model.model.embed_tokens.weight  # still tied
buffers = {name: b.tolist() for name, b in model.named_buffers()}  # inv_freq: in no state dict
torch.manual_seed(1)
reference = transformers.LlamaForCausalLM(config)
assert buffers == {name: b.tolist() for name, b in reference.named_buffers()}, buffers
ids = torch.arange(12).reshape(2, 6)
with torch.no_grad():
    logits, expected = model(input_ids=ids).logits, reference(input_ids=ids).logits
assert (logits - expected).abs().max() < 1e-5
distributed.teardown()
"""


@pytest.mark.slow
def test_fsdp_ranks_built_on_meta_get_rank0_weights(tmp_path: Path) -> None:
    """A rank that built the model on the meta device ends with rank 0's weights and
    non-persistent buffers, and its tied embeddings stay tied."""
    script = tmp_path / "meta_sharding.py"
    script.write_text(META_SHARDING)
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         "--master-port", str(free_port()), str(script)],
        capture_output=True, text=True, timeout=LAUNCH_TIMEOUT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]


def test_resume_with_another_process_count_is_refused(
    tiny_gguf: Path, train_file: Path, fresh_home: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    args = [
        *arguments(tiny_gguf, train_file, "lora", "count", run_dir),
        "--batch-size", "2", "--checkpoint-every", "2", "--max-steps", "3",
    ]  # fmt: skip
    from llmkit.train.checkpoint import checkpoint_folder

    env = {HANG_AFTER_CHECKPOINT_ENV: "2"}
    process = subprocess.Popen(
        [sys.executable, "-m", "llmkit", *args],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (checkpoint_folder(run_dir, 2) / "state.pt").exists():
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    import torch

    state_file = checkpoint_folder(run_dir, 2) / "state.pt"
    state = torch.load(state_file, weights_only=True)
    torch.save({**state, "world_size": 2}, state_file)  # as if written by two processes
    resumed = run_cli(*args, "--resume")
    assert resumed.returncode != 0
    assert "written by 2 processes and this run has 1" in resumed.stderr
    assert "Traceback" not in resumed.stderr
