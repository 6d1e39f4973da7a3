"""Ray Serve replicas against one process with batched slots: `llmkit serve` set up five ways.

- parallel2:    `llmkit serve --parallel 2 --threads 2` (one process, 2 slots): the baseline.
- parallel4:    `--parallel 4 --threads 2`: one process with the 4 slots replicas2x2 has in all.
- replicas1:    `--replicas 1 --parallel 2`: the same engine behind Ray Serve (Ray's overhead).
- replicas2x1:  `--replicas 2 --parallel 1`: two engines of one slot each (the same 2 slots).
- replicas2x2:  `--replicas 2 --parallel 2`: two engines of two slots each (4 slots in all).

Every replica set-up starts its own local Ray on loopback. Each round sends the same number of
concurrent streaming chat requests of a fixed length (`ignore_eos`) with the official `openai`
client; throughput is completion tokens over the round's wall time. Rounds of the set-ups are
interleaved (all servers stay up), after an unmeasured warm-up round each, and every round has its
own prompts. Start-up is timed from launch to the ready line (all replicas loaded); memory is the
resident size of the server and every process it started, Ray's included. Prints JSON.

    chrt -f 10 python benchmarks/ray_replicas.py --requests 8 --tokens 64 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

import openai

from llmkit.server.launch import serve_in_subprocess

SETUPS = {
    "parallel2": ["--parallel", "2", "--threads", "2"],
    "parallel4": ["--parallel", "4", "--threads", "2"],
    "replicas1": ["--replicas", "1", "--parallel", "2", "--threads", "2"],
    "replicas2x1": ["--replicas", "2", "--parallel", "1", "--threads", "1"],
    "replicas2x2": ["--replicas", "2", "--parallel", "2", "--threads", "1"],
}
TOPICS = ["a lighthouse", "rain", "a market", "gardening", "bicycles", "autumn", "programs", "food"]


@contextmanager
def server(args: list[str]) -> Iterator[tuple[str, float, int]]:
    """A running server, the seconds from launch until it said it was ready, and its pid."""
    log_path = Path(tempfile.mkstemp(prefix="llmkit-ray-bench-", suffix=".log")[1])
    started = time.monotonic()
    with serve_in_subprocess(
        ["smollm2", "--context", "1024", *args], log_path, timeout=600
    ) as running:
        # /health answers once one replica is up; the ready line waits for all of them.
        while "Serving" not in log_path.read_text():
            if time.monotonic() - started > 600:
                raise SystemExit(f"no ready line:\n{log_path.read_text()}")
            time.sleep(0.2)
        yield running.url, time.monotonic() - started, running.process.pid


def tree_rss_mib(pid: int) -> float:
    """Resident memory of a process and everything it started (a local Ray's processes too)."""
    import psutil

    root = psutil.Process(pid)
    total = 0
    for process in [root, *root.children(recursive=True)]:
        with suppress(psutil.NoSuchProcess):
            total += process.memory_info().rss
    return total / 2**20


def one_round(url: str, number: int, requests: int, tokens: int) -> float:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=600)

    def ask(index: int) -> int:
        stream = client.chat.completions.create(
            model="smollm2",
            messages=[
                {
                    "role": "user",
                    "content": f"Round {number}.{index}: tell me about {TOPICS[index % len(TOPICS)]}.",
                }
            ],
            max_tokens=tokens,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
        used = 0
        for chunk in stream:
            if chunk.usage:
                used = chunk.usage.completion_tokens
        return used

    started = time.perf_counter()
    with ThreadPoolExecutor(requests) as pool:
        produced = sum(pool.map(ask, range(requests)))
    elapsed = time.perf_counter() - started
    if produced != requests * tokens:
        raise SystemExit(f"{produced} tokens instead of {requests * tokens}")
    return produced / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=8, help="concurrent requests per round")
    parser.add_argument("--tokens", type=int, default=64, help="tokens per request")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--setups", default=",".join(SETUPS), help="comma-separated subset")
    args = parser.parse_args()
    names = [name for name in args.setups.split(",") if name]

    results: dict[str, dict] = {}
    load_before = os.getloadavg()
    with ExitStack() as stack:
        urls, pids = {}, {}
        for name in names:  # one at a time, so start-up times do not overlap
            url, seconds, pid = stack.enter_context(server(SETUPS[name]))
            urls[name], pids[name] = url, pid
            results[name] = {
                "args": SETUPS[name],
                "startup_seconds": round(seconds, 1),
                "tok_s": [],
            }
            print(f"{name}: ready in {seconds:.1f} s", file=sys.stderr)
        for name in names:
            one_round(urls[name], 0, args.requests, args.tokens)  # warm-up
            results[name]["rss_mib_after_warmup"] = round(tree_rss_mib(pids[name]))
        for number in range(1, args.rounds + 1):
            for name in names if number % 2 else reversed(names):
                rate = one_round(urls[name], number, args.requests, args.tokens)
                results[name]["tok_s"].append(round(rate, 1))
                print(f"round {number} {name}: {rate:.1f} tok/s", file=sys.stderr)
    for figures in results.values():
        figures["median_tok_s"] = statistics.median(figures["tok_s"])
    print(
        json.dumps(
            {
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "load_average_before": load_before,
                "load_average_after": os.getloadavg(),
                "requests": args.requests,
                "tokens": args.tokens,
                "rounds": args.rounds,
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
