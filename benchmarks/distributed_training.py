"""Fine-tuning on one process against DDP and FSDP2 on two (torchrun, gloo), same global batch.

Every configuration uses all the machine's cores (one process: --threads N; two: N/2 each) and
reports the mean step time after the first step (from rank 0's metrics.jsonl), the final loss and
each rank's peak resident memory (ru_maxrss, measured inside the worker). Prints a JSON list.

    python benchmarks/distributed_training.py [--model smollm2] [--method full] [--steps 6]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "examples" / "finetune" / "persona.jsonl"
MODES = ("single", "ddp", "fsdp")


def worker(out: Path, args: list[str]) -> None:
    """Run `llmkit ARGS` in this process, then record this rank's peak resident memory."""
    from llmkit.cli.app import main

    sys.argv = ["llmkit", *args]
    try:
        main()
    except SystemExit as exit:
        if exit.code not in (0, None):
            raise
    rank = int(os.environ.get("RANK", "0"))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    (out / f"rank-{rank}.json").write_text(json.dumps({"rank": rank, "peak_rss_bytes": peak}))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run(mode: str, options: argparse.Namespace, scratch: Path) -> dict:
    processes = 1 if mode == "single" else 2
    cores = options.cores
    run_dir = scratch / f"run-{mode}"
    out = scratch / f"out-{mode}"
    out.mkdir()
    finetune = [
        "finetune", options.model, "--data", str(DATA), "--method", options.method,
        "--max-steps", str(options.steps), "--batch-size", str(options.global_batch // processes),
        "--max-length", str(options.max_length), "--lr", "1e-4",
        "--threads", str(max(1, cores // processes)), "--out", f"bench-dist-{mode}",
        "--run-dir", str(run_dir), "--force",
        "--export", "adapter" if options.method == "lora" else "q8_0",
        *(["--fsdp"] if mode == "fsdp" else []),
    ]  # fmt: skip
    script = [__file__, "--worker", str(out), "--", *finetune]
    torchrun = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes),
        "--master-port", str(free_port()),
    ]  # fmt: skip
    launcher = [sys.executable, *script] if processes == 1 else [*torchrun, *script]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // processes))}
    done = subprocess.run(launcher, capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"{mode} failed:\n{done.stderr[-4000:]}")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [record for record in records if record.get("event") == "step"]
    # Under FSDP: the ranks that built the model on the meta device and never read the weights.
    meta_ranks = next((r["meta_ranks"] for r in records if r.get("event") == "load"), [])
    step_time = (steps[-1]["elapsed"] - steps[0]["elapsed"]) / (len(steps) - 1)
    ranks = sorted(
        (json.loads(p.read_text()) for p in out.glob("rank-*.json")), key=lambda r: r["rank"]
    )
    return {
        "mode": mode,
        "processes": processes,
        "model": options.model,
        "method": options.method,
        "global_batch": options.global_batch,
        "max_length": options.max_length,
        "step_seconds": round(step_time, 3),
        "final_loss": steps[-1]["loss"],
        "peak_rss_mib_per_rank": [round(r["peak_rss_bytes"] / 2**20) for r in ranks],
        "meta_ranks": meta_ranks,
    }


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        worker(Path(sys.argv[2]), sys.argv[4:])
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--method", default="full", choices=("full", "lora"))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--global-batch", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--modes", default=",".join(MODES))
    options = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for mode in options.modes.split(","):
            results.append(run(mode, options, Path(scratch)))
            print(json.dumps(results[-1]), file=sys.stderr)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
