"""Time from starting `llmkit run` (a fresh process) to the first answer token on stdout.

    python benchmarks/cold_start.py --runs 5
    python benchmarks/cold_start.py --runs 9 --against /path/to/older/checkout/src

The store already knows the model (the first use of a built-in also checks its sha256 once, ~0.3 s).
With `--against`, the same command runs from another source tree too, the two alternating run by run
so that both see the same machine; the ratio of medians says whether start-up time changed.
Prints JSON with every run and the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src"


def time_to_first_token(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    assert process.stdout is not None
    first = process.stdout.read(1)
    elapsed = time.perf_counter() - started
    process.stdout.read()
    process.wait()
    if not first or process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed (exit {process.returncode})")
    return elapsed


def environment(source: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(source)}


def summary(runs: list[float]) -> dict[str, object]:
    return {
        "seconds_to_first_token": [round(r, 3) for r in runs],
        "median_seconds": round(statistics.median(runs), 3),
        "min_seconds": round(min(runs), 3),
        "max_seconds": round(max(runs), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--against", type=Path, help="another checkout's src/ folder to time in the same run"
    )
    args = parser.parse_args()
    # Both trees start the same way (python -m llmkit), so only their code differs.
    command = [sys.executable, "-m", "llmkit", "run", args.model]
    command += ["What is the capital of France?", "-t", "0", "-n", "8"]
    trees = {"current": SOURCE} | ({"against": args.against} if args.against else {})
    for source in trees.values():  # registers the model, warms the file cache
        subprocess.run(command, capture_output=True, check=True, env=environment(source))
    runs: dict[str, list[float]] = {name: [] for name in trees}
    for index in range(args.runs):
        order = list(trees.items())
        if index % 2:
            order.reverse()  # neither tree always goes first
        for name, source in order:
            runs[name].append(time_to_first_token(command, environment(source)))
    result: dict[str, object] = {"command": " ".join(command[3:])}
    result |= {name: summary(times) for name, times in runs.items()}
    if args.against:
        ratio = statistics.median(runs["current"]) / statistics.median(runs["against"])
        result["current_over_against"] = round(ratio, 3)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
