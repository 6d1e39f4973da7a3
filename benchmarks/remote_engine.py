"""What `llmkit serve --engine-url` costs: the same requests to an engine server, directly and through a front.

Starts two real servers on loopback with the built-in model: an engine server (`llmkit serve
--parallel N`) and a front (`llmkit serve --engine-url <engine server>`), which renders and
tokenizes, forwards to the engine server's /v1/completions and relays the stream. Each round sends
the same C concurrent greedy streaming chat requests of exactly T tokens (`ignore_eos`) once
directly and once through the front, in alternating order, so background load hits both alike;
every round has its own prompts. Prints JSON: aggregate tokens/s, time to first token, and the
resident memory of both processes at the end.

    python benchmarks/remote_engine.py --rounds 6 --tokens 64 --concurrency 4 --threads 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

from llmkit.server.launch import serve_in_subprocess

TOPICS = ["a lighthouse", "rain", "a market", "a garden", "a bridge", "winter", "a library", "tea"]


async def one_request(client: httpx.AsyncClient, url: str, prompt: str, tokens: int) -> float:
    """Stream one reply of exactly `tokens` tokens; return seconds to its first text."""
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
    }
    started = time.perf_counter()
    first = None
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if first is None and '"content": "' in line and '"content": ""' not in line:
                first = time.perf_counter() - started
    return first if first is not None else float("nan")


async def one_round(url: str, prompts: list[str], tokens: int) -> dict[str, float]:
    async with httpx.AsyncClient(timeout=600) as client:
        started = time.perf_counter()
        firsts = await asyncio.gather(*(one_request(client, url, p, tokens) for p in prompts))
        seconds = time.perf_counter() - started
    return {"tokens_per_second": len(prompts) * tokens / seconds, "ttft": statistics.median(firsts)}


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="llmkit-remote-bench-"))
    engine_args = ["smollm2", "--parallel", str(args.concurrency), "--context", "1024"]
    engine_args += ["--threads", str(args.threads)]
    with ExitStack() as stack:
        engine = stack.enter_context(serve_in_subprocess(engine_args, logs / "engine.log"))
        front_args = ["smollm2", "--engine-url", engine.url, "--threads", "1"]
        front = stack.enter_context(serve_in_subprocess(front_args, logs / "front.log"))
        targets = {"direct": engine.url, "front": front.url}
        asyncio.run(one_round(front.url, ["Say hello."] * args.concurrency, 8))  # warm-up
        results: dict[str, list[dict[str, float]]] = {"direct": [], "front": []}
        for number in range(args.rounds):
            prompts = [
                f"Write about {TOPICS[(number + i) % len(TOPICS)]} (round {number}, client {i})."
                for i in range(args.concurrency)
            ]
            order = ["direct", "front"] if number % 2 == 0 else ["front", "direct"]
            for name in order:
                results[name].append(asyncio.run(one_round(targets[name], prompts, args.tokens)))
        memory = {"engine": rss_mib(engine.process.pid), "front": rss_mib(front.process.pid)}

    def median(name: str, key: str) -> float:
        return round(statistics.median(r[key] for r in results[name]), 3)

    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}",
        "rounds": args.rounds,
        "concurrency": args.concurrency,
        "tokens": args.tokens,
        "direct_tokens_per_second": median("direct", "tokens_per_second"),
        "front_tokens_per_second": median("front", "tokens_per_second"),
        "front_over_direct": round(
            median("front", "tokens_per_second") / median("direct", "tokens_per_second"), 3
        ),
        "direct_ttft_seconds": median("direct", "ttft"),
        "front_ttft_seconds": median("front", "ttft"),
        "rss_mib": {name: round(value, 1) for name, value in memory.items()},
        "rounds_detail": results,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
