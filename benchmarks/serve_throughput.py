"""`llmkit serve` under concurrent load: batched slots against one-at-a-time, TTFT, and a load test.

Starts real servers on loopback (subprocesses) with the built-in model and talks to them over HTTP:

- baseline:  `--parallel 1`, so requests are served one at a time, as a server behind one lock does.
- batched:   `--parallel 8`, the same 8 streaming requests decoded together.

Both get the same 8 greedy requests of a fixed length (ignore_eos), so they produce the same tokens.
Then, on the batched server: time to first token on an idle server, p95 TTFT with 16 concurrent
clients, and a bounded load test mixing streamed, cancelled and malformed requests (no crash, no
leaked slot, memory before/after). Prints JSON.

    python benchmarks/serve_throughput.py --tokens 64 --threads 2 --load-requests 300
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from llmkit.server.launch import serve_in_subprocess

PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how rain forms.",
    "Describe a busy market in the morning.",
    "Give advice to a new gardener.",
    "Tell me about the history of bicycles.",
    "Write a poem about autumn leaves.",
    "Explain what a computer program is.",
    "Describe your favourite meal.",
]


@contextmanager
def server(parallel: int, threads: int, queue: int = 64) -> Iterator[tuple[str, int]]:
    args = ["smollm2", "--parallel", str(parallel), "--queue", str(queue)]
    args += ["--threads", str(threads), "--context", "1024"]
    log_path = Path(tempfile.mkstemp(prefix="llmkit-serve-", suffix=".log")[1])
    with serve_in_subprocess(args, log_path) as running:
        yield running.url, running.process.pid


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def stream_one(client: httpx.AsyncClient, prompt: str, tokens: int) -> dict:
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first = None
    usage = None
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            if first is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                first = time.perf_counter()
    return {
        "ttft": (first or time.perf_counter()) - started,
        "tokens": usage["completion_tokens"],
        "seconds": time.perf_counter() - started,
    }


async def concurrent_round(url: str, prompts: list[str], tokens: int) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        started = time.perf_counter()
        results = await asyncio.gather(*(stream_one(client, p, tokens) for p in prompts))
        wall = time.perf_counter() - started
    total = sum(r["tokens"] for r in results)
    ttfts = sorted(r["ttft"] for r in results)
    return {
        "requests": len(results),
        "tokens": total,
        "wall_seconds": round(wall, 3),
        "tokens_per_second": round(total / wall, 2),
        "ttft_median_ms": round(statistics.median(ttfts) * 1000, 1),
        "ttft_p95_ms": round(ttfts[min(len(ttfts) - 1, int(0.95 * len(ttfts)))] * 1000, 1),
    }


async def idle_ttft(url: str, samples: int) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        await stream_one(client, "Hi", 2)  # warm-up
        values = sorted([(await stream_one(client, "Hi", 2))["ttft"] for _ in range(samples)])
    return {
        "samples": samples,
        "median_ms": round(statistics.median(values) * 1000, 1),
        "max_ms": round(values[-1] * 1000, 1),
    }


async def load_test(url: str, pid: int, requests: int, concurrency: int, time_limit: float) -> dict:
    outcomes: dict[str, int] = {}
    rng = random.Random(0)
    kinds = (
        ["stream"] * 5 + ["plain"] * 2 + ["cancel"] * 2 + ["bad_json", "bad_type", "unknown_model"]
    )
    plan = [rng.choice(kinds) for _ in range(requests)]
    memory_before = rss_mib(pid)
    deadline = time.monotonic() + time_limit
    semaphore = asyncio.Semaphore(concurrency)
    chat = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": "Tell me a fact."}],
        "max_tokens": 12,
    }

    async def one(client: httpx.AsyncClient, kind: str) -> None:
        async with semaphore:
            if time.monotonic() > deadline:
                outcomes["skipped_time_limit"] = outcomes.get("skipped_time_limit", 0) + 1
                return
            try:
                if kind in ("stream", "cancel"):
                    async with client.stream(
                        "POST",
                        "/v1/chat/completions",
                        json={
                            **chat,
                            "stream": True,
                            "max_tokens": 200 if kind == "cancel" else 12,
                        },
                    ) as response:
                        status = response.status_code
                        async for _line in response.aiter_lines():
                            if kind == "cancel":
                                break  # hang up mid-stream
                elif kind == "plain":
                    status = (
                        await client.post(
                            "/api/chat",
                            json={**chat, "stream": False, "options": {"num_predict": 12}},
                        )
                    ).status_code
                elif kind == "bad_json":
                    status = (
                        await client.post("/v1/chat/completions", content=b"{oops")
                    ).status_code
                elif kind == "bad_type":
                    status = (
                        await client.post(
                            "/v1/chat/completions", json={**chat, "temperature": "hot"}
                        )
                    ).status_code
                else:
                    status = (
                        await client.post("/v1/chat/completions", json={**chat, "model": "missing"})
                    ).status_code
                key = f"{kind}:{status}"
            except httpx.HTTPError as error:
                key = f"{kind}:{type(error).__name__}"
            outcomes[key] = outcomes.get(key, 0) + 1

    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        await asyncio.gather(*(one(client, kind) for kind in plan))
        await asyncio.sleep(1.0)
        health = (await client.get("/health")).status_code
        metrics = (await client.get("/metrics")).text
    figures = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line and not line.startswith("#")
    }
    return {
        "requests": requests,
        "concurrency": concurrency,
        "seconds": round(time.perf_counter() - started, 1),
        "outcomes": dict(sorted(outcomes.items())),
        "health_after": health,
        "slots_busy_after": figures.get('llmkit_slots_busy{model="smollm2"}'),
        "queue_depth_after": figures.get('llmkit_queue_depth{model="smollm2"}'),
        "rss_mib_before": round(memory_before, 1),
        "rss_mib_after": round(rss_mib(pid), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64, help="tokens per request")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--rounds", type=int, default=2, help="alternating baseline/batched rounds")
    parser.add_argument("--load-requests", type=int, default=300)
    parser.add_argument("--load-seconds", type=float, default=240)
    args = parser.parse_args()

    rounds: dict[str, list[dict]] = {"baseline_parallel_1": [], "batched_parallel_8": []}
    with (
        server(1, args.threads) as (base_url, _),
        server(8, args.threads) as (batch_url, batch_pid),
    ):
        for _ in range(args.rounds):  # interleaved, so background load hits both alike
            rounds["baseline_parallel_1"].append(
                asyncio.run(concurrent_round(base_url, PROMPTS, args.tokens))
            )
            rounds["batched_parallel_8"].append(
                asyncio.run(concurrent_round(batch_url, PROMPTS, args.tokens))
            )
        idle = asyncio.run(idle_ttft(batch_url, 10))
        loaded = asyncio.run(concurrent_round(batch_url, PROMPTS * 2, args.tokens))
        load = asyncio.run(
            load_test(batch_url, batch_pid, args.load_requests, 16, args.load_seconds)
        )

    best = {name: max(r["tokens_per_second"] for r in results) for name, results in rounds.items()}
    print(
        json.dumps(
            {
                "machine": {
                    "cpus": os.cpu_count(),
                    "platform": platform.platform(),
                    "python": platform.python_version(),
                    "load_average_at_end": os.getloadavg(),
                },
                "settings": vars(args),
                "rounds": rounds,
                "best_tokens_per_second": best,
                "speedup_batched_over_baseline": round(
                    best["batched_parallel_8"] / best["baseline_parallel_1"], 2
                ),
                "ttft_idle": idle,
                "ttft_16_clients_on_8_slots": loaded,
                "load_test": load,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
