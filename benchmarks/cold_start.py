"""Time from starting `llmkit run` (a fresh process) to the first answer token on stdout.

    python benchmarks/cold_start.py --runs 5

The store already knows the model (the first use of a built-in also checks its sha256 once, ~0.3 s).
Prints JSON with every run and the median.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time


def time_to_first_token(command: list[str]) -> float:
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    first = process.stdout.read(1)
    elapsed = time.perf_counter() - started
    process.stdout.read()
    process.wait()
    if not first or process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed (exit {process.returncode})")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    executable = shutil.which("llmkit", path=os.path.dirname(sys.executable)) or "llmkit"
    command = [
        executable,
        "run",
        args.model,
        "What is the capital of France?",
        "-t",
        "0",
        "-n",
        "8",
    ]
    subprocess.run(
        command, capture_output=True, check=True
    )  # registers the model, warms the file cache
    runs = [time_to_first_token(command) for _ in range(args.runs)]
    print(
        json.dumps(
            {
                "command": " ".join(command[1:]),
                "seconds_to_first_token": [round(r, 3) for r in runs],
                "median_seconds": round(statistics.median(runs), 3),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
