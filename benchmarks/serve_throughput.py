"""`llmkit serve` under concurrent load: batched slots against one-at-a-time, TTFT, and a load test.

Starts real servers on loopback (subprocesses) with the built-in model and talks to them over HTTP:

- llama_cpp_server:  llama-cpp-python's own server (`python -m llama_cpp.server`), which serves
  requests one at a time behind a lock. Optional (`--no-llama-cpp-server`); it needs the server
  extras (sse-starlette, starlette-context, pydantic-settings).
- baseline:  `llmkit serve --parallel 1`, so requests are served one at a time, as a server behind
  one lock does.
- batched:   `llmkit serve --parallel 8`, the same 8 streaming requests decoded together.

All get the same 8 greedy streaming chat requests of a fixed length: llmkit with `ignore_eos`,
llama-cpp-python with `min_tokens` equal to `max_tokens` (its way of holding off the end-of-sequence
token), so every request makes the same number of decoding steps. Rounds are interleaved, so
background load hits all servers alike, after an unmeasured warm-up round; each round has its own
prompts, so a server's prompt cache cannot turn a repeated round into cache hits. Then, on the
batched server: time to first token on an idle server, p95 TTFT with 16 concurrent clients, and a
bounded load test mixing streamed, cancelled and malformed requests (no crash, no leaked slot,
memory before/after). Prints JSON.

    python benchmarks/serve_throughput.py --tokens 64 --threads 2 --load-requests 300
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

from llmkit.server.launch import free_loopback_port, run_until_ready, serve_in_subprocess
from llmkit.store.catalog import BUILTIN_MODELS, DEFAULT_MODEL

CONTEXT = 1024  # tokens per slot, for every server
# What `python -m llama_cpp.server` imports beyond llama-cpp-python itself (module: pip name).
LLAMA_CPP_SERVER_MODULES = {
    "fastapi": "fastapi",
    "uvicorn": "uvicorn",
    "sse_starlette": "sse-starlette",
    "starlette_context": "starlette-context",
    "pydantic_settings": "pydantic-settings",
}

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
# Short prompts for time to first token on an idle server, each different.
SHORT_PROMPTS = [
    "Hi",
    "Hello there",
    "Good morning",
    "What is 2+2?",
    "Name a colour.",
    "Say yes.",
    "Tell me a joke.",
    "Who are you?",
    "Count to three.",
    "Name a fruit.",
    "Thanks!",
]


def prompt_set(number: int, count: int = len(PROMPTS)) -> list[str]:
    """PROMPTS, marked as set `number` at the start, repeated up to `count` requests.

    Servers that keep a finished request's cache (llmkit's slots; llama-cpp-python's one context)
    reuse the longest shared beginning. Every set starts differently, so a repeated round reuses
    no more than real traffic would (the chat template's system prompt), never a whole prompt.
    """
    return [
        f"Set {number}.{index // len(PROMPTS)}: {PROMPTS[index % len(PROMPTS)]}"
        for index in range(count)
    ]


@contextmanager
def server(parallel: int, threads: int, queue: int = 64) -> Iterator[tuple[str, int]]:
    args = ["smollm2", "--parallel", str(parallel), "--queue", str(queue)]
    args += ["--threads", str(threads), "--context", str(CONTEXT)]
    log_path = Path(tempfile.mkstemp(prefix="llmkit-serve-", suffix=".log")[1])
    with serve_in_subprocess(args, log_path) as running:
        yield running.url, running.process.pid


def missing_llama_cpp_server_packages() -> list[str]:
    return [
        name
        for module, name in LLAMA_CPP_SERVER_MODULES.items()
        if importlib.util.find_spec(module) is None
    ]


@contextmanager
def llama_cpp_server(threads: int, timeout: float = 120) -> Iterator[tuple[str, int]]:
    """llama-cpp-python's own server on the built-in GGUF, set up like the llmkit servers.

    Same context (1024), batch (512), threads and chat template (the GGUF's own, as llmkit uses);
    flash attention on, as llama.cpp's "auto" choice gives the llmkit servers on this CPU; logits
    for the last token only (llmkit never asks for the others); and `--interrupt_requests False`,
    since by default a new request cuts off the one being streamed instead of waiting for the lock.
    """
    located = BUILTIN_MODELS[DEFAULT_MODEL].locate()
    if not located:
        raise SystemExit(
            f"The built-in model is not installed: {BUILTIN_MODELS[DEFAULT_MODEL].install_command}"
        )
    port = free_loopback_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(located[0])]
    command += ["--model_alias", DEFAULT_MODEL, "--host", "127.0.0.1", "--port", str(port)]
    command += ["--n_ctx", str(CONTEXT), "--n_batch", "512", "--n_ubatch", "512"]
    command += ["--n_threads", str(threads), "--n_threads_batch", str(threads)]
    command += ["--flash_attn", "True", "--logits_all", "False"]
    command += ["--interrupt_requests", "False", "--verbose", "False"]
    log_path = Path(tempfile.mkstemp(prefix="llama-cpp-server-", suffix=".log")[1])
    with run_until_ready(
        command, port, "/v1/models", log_path, name="llama-cpp-python's server", timeout=timeout
    ) as server:
        yield server.url, server.process.pid


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# How each kind of server is asked for exactly `tokens` tokens, whatever the model would say.
FIXED_LENGTH = {
    "llmkit": lambda tokens: {"ignore_eos": True, "stream_options": {"include_usage": True}},
    # llama-cpp-python has no ignore_eos; `min_tokens` masks the end-of-sequence token until that
    # many tokens are out (a logit bias of -100 on EOS, id 2, gives the same tokens). Its stream
    # carries no usage: a request that ends by length produced exactly max_tokens tokens.
    "llama_cpp": lambda tokens: {"min_tokens": tokens},
}


async def stream_one(
    client: httpx.AsyncClient, prompt: str, tokens: int, flavour: str = "llmkit"
) -> dict:
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
        **FIXED_LENGTH[flavour](tokens),
    }
    started = time.perf_counter()
    first = None
    usage = None
    finish = None
    chunks = 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            if not chunk["choices"]:
                continue
            choice = chunk["choices"][0]
            finish = choice.get("finish_reason") or finish
            if choice["delta"].get("content"):
                chunks += 1
                if first is None:
                    first = time.perf_counter()
    if usage:
        produced, source = usage["completion_tokens"], "usage"
    elif finish == "length":
        produced, source = tokens, "finish_reason_length"
    else:  # stopped early: about one streamed chunk per token
        produced, source = chunks, "content_chunks"
    return {
        "ttft": (first or time.perf_counter()) - started,
        "tokens": produced,
        "counted_from": source,
        "finish_reason": finish,
        "seconds": time.perf_counter() - started,
    }


def tally(values: list[str]) -> dict[str, int]:
    return {value: values.count(value) for value in sorted(set(values))}


async def concurrent_round(
    url: str, prompts: list[str], tokens: int, flavour: str = "llmkit"
) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=900) as client:
        started = time.perf_counter()
        results = await asyncio.gather(*(stream_one(client, p, tokens, flavour) for p in prompts))
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
        "finish_reasons": tally([str(r["finish_reason"]) for r in results]),
        "tokens_counted_from": tally([r["counted_from"] for r in results]),
    }


async def idle_ttft(url: str) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        await stream_one(client, SHORT_PROMPTS[0], 2)  # warm-up
        values = sorted(
            [(await stream_one(client, prompt, 2))["ttft"] for prompt in SHORT_PROMPTS[1:]]
        )
    return {
        "samples": len(values),
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
                        # Declared as JSON, so it reaches the JSON parser (400), not the
                        # content-type check (415).
                        await client.post(
                            "/v1/chat/completions",
                            content=b"{oops",
                            headers={"Content-Type": "application/json"},
                        )
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


def machine() -> dict:
    memory = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1]
    policy = os.sched_getscheduler(0)
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(int(memory) / 1024**2, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "scheduling": {os.SCHED_FIFO: "SCHED_FIFO", os.SCHED_RR: "SCHED_RR"}.get(policy, "normal"),
        "priority": os.sched_getparam(0).sched_priority,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64, help="tokens per request")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of each server")
    parser.add_argument(
        "--warmup-rounds",
        type=int,
        default=1,
        help="unmeasured rounds first, so every server is measured in its steady state",
    )
    parser.add_argument("--load-requests", type=int, default=300)
    parser.add_argument("--load-seconds", type=float, default=240)
    parser.add_argument(
        "--no-llama-cpp-server",
        dest="llama_cpp_server",
        action="store_false",
        help="leave out llama-cpp-python's own server as a baseline",
    )
    args = parser.parse_args()
    if args.llama_cpp_server and (missing := missing_llama_cpp_server_packages()):
        parser.exit(
            2,
            f"llama-cpp-python's server needs {', '.join(missing)}: "
            f"pip install {' '.join(missing)}\n"
            "(or leave that baseline out: --no-llama-cpp-server)\n",
        )

    load_before = os.getloadavg()
    names = ["baseline_parallel_1", "batched_parallel_8"]
    if args.llama_cpp_server:
        names.insert(0, "llama_cpp_server")
    rounds: dict[str, list[dict]] = {name: [] for name in names}
    warmup: dict[str, list[dict]] = {name: [] for name in names}
    with server(8, args.threads) as (batch_url, batch_pid):
        with ExitStack() as baselines:
            urls = {
                "baseline_parallel_1": baselines.enter_context(server(1, args.threads))[0],
                "batched_parallel_8": batch_url,
            }
            if args.llama_cpp_server:
                llama_cpp_url, _ = baselines.enter_context(llama_cpp_server(args.threads))
                urls["llama_cpp_server"] = llama_cpp_url
            for index in range(args.warmup_rounds + args.rounds):
                for name in names:  # interleaved, so background load hits all alike
                    flavour = "llama_cpp" if name == "llama_cpp_server" else "llmkit"
                    result = asyncio.run(
                        concurrent_round(urls[name], prompt_set(index), args.tokens, flavour)
                    )
                    if index >= args.warmup_rounds:
                        rounds[name].append(result)
                    else:
                        warmup[name].append(result)
        idle = asyncio.run(idle_ttft(batch_url))
        loaded = asyncio.run(
            concurrent_round(
                batch_url, prompt_set(args.warmup_rounds + args.rounds, 16), args.tokens
            )
        )
        load = asyncio.run(
            load_test(batch_url, batch_pid, args.load_requests, 16, args.load_seconds)
        )

    best = {name: max(r["tokens_per_second"] for r in results) for name, results in rounds.items()}
    batched = rounds["batched_parallel_8"]
    speedups = {
        f"over_{name}": {
            "best_vs_best": round(best["batched_parallel_8"] / best[name], 2),
            "per_round": [
                round(b["tokens_per_second"] / r["tokens_per_second"], 2)
                for b, r in zip(batched, rounds[name], strict=True)
            ],
        }
        for name in names
        if name != "batched_parallel_8"
    }
    print(
        json.dumps(
            {
                "machine": {
                    **machine(),
                    "load_average_at_start": load_before,
                    "load_average_at_end": os.getloadavg(),
                },
                "settings": vars(args),
                "warmup_rounds_not_counted": {
                    name: [r["tokens_per_second"] for r in results]
                    for name, results in warmup.items()
                },
                "rounds": rounds,
                "best_tokens_per_second": best,
                "speedup_batched": speedups,
                "ttft_idle": idle,
                "ttft_16_clients_on_8_slots": loaded,
                "load_test": load,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
