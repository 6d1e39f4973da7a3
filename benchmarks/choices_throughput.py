"""`n=4` in one request against four separate concurrent requests on `llmkit serve --parallel 4`.

Both ask the same thing: four sampled answers of exactly `--tokens` tokens (ignore_eos) to the
same prompt, seeds seed..seed+3. One request with n=4 reads the prompt once and copies its KV
cache to the other three slots; four requests read it four times, side by side in one batch. A
short prompt (decoding dominates) and a long one (reading the prompt matters) are measured. Rounds
alternate the order of the two ways, and every round has a prompt of its own, so no slot's cache
holds a previous round's prompt (only the chat template's system prompt is shared). Streaming,
with usage: time to the first text and wall time are measured at the client. Prints JSON.

    python benchmarks/choices_throughput.py --tokens 64 --rounds 3 --threads 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time

import httpx
from serve_throughput import machine, server  # this folder's serving benchmark

CHOICES = 4
SHORT = "Write a short story about a lighthouse keeper."
PASSAGE = (
    "The harbour town woke slowly. Fishing boats rocked against the pier while gulls argued over "
    "the night's catch, and the baker on the corner pulled the first loaves from the oven. "
)


def prompt(kind: str, round_number: int, way: str) -> str:
    """A prompt of its own for each round and way, beginning differently (no cache hits)."""
    head = f"Round {round_number}{'x' if way == 'n4' else 'y'}:"  # the same length both ways
    if kind == "short":
        return f"{head} {SHORT}"
    return f"{head} {PASSAGE * 12}Continue the story."


async def one_stream(client: httpx.AsyncClient, text: str, n: int, seed: int, tokens: int) -> dict:
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": text}],
        "n": n,
        "seed": seed,
        "temperature": 0.8,
        "max_tokens": tokens,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first: float | None = None
    usage: dict = {}
    async with client.stream("POST", "/v1/chat/completions", json=body) as reply:
        reply.raise_for_status()
        async for line in reply.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                usage = event["usage"]
            for choice in event["choices"]:
                if first is None and choice["delta"].get("content"):
                    first = time.perf_counter() - started
    return {"first_text_seconds": first, "usage": usage}


async def measure(url: str, kind: str, way: str, round_number: int, tokens: int) -> dict:
    text = prompt(kind, round_number, way)
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        started = time.perf_counter()
        if way == "n4":
            replies = [await one_stream(client, text, CHOICES, 100, tokens)]
        else:
            calls = [one_stream(client, text, 1, 100 + i, tokens) for i in range(CHOICES)]
            replies = await asyncio.gather(*calls)
        seconds = time.perf_counter() - started
    generated = sum(reply["usage"]["completion_tokens"] for reply in replies)
    return {
        "seconds": round(seconds, 3),
        "tokens": generated,
        "tokens_per_second": round(generated / seconds, 2),
        "first_text_seconds": round(min(r["first_text_seconds"] for r in replies), 3),
        "prompt_tokens": replies[0]["usage"]["prompt_tokens"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64, help="tokens per answer")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    load_before = os.getloadavg()
    results: dict[str, dict[str, list[dict]]] = {
        kind: {"n4": [], "four_requests": []} for kind in ("short", "long")
    }
    with server(CHOICES, args.threads) as (url, _pid):
        for kind in results:  # an unmeasured warm-up of both ways
            for way in ("n4", "four_requests"):
                asyncio.run(measure(url, kind, way, 0, 8))
        for round_number in range(1, args.rounds + 1):
            ways = ["n4", "four_requests"] if round_number % 2 else ["four_requests", "n4"]
            for kind in results:
                for way in ways:
                    figures = asyncio.run(measure(url, kind, way, round_number, args.tokens))
                    results[kind][way].append(figures)
    summary = {
        kind: {
            way: {
                "median_tokens_per_second": statistics.median(
                    r["tokens_per_second"] for r in rounds
                ),
                "median_seconds": statistics.median(r["seconds"] for r in rounds),
                "median_first_text_seconds": statistics.median(
                    r["first_text_seconds"] for r in rounds
                ),
                "prompt_tokens": rounds[0]["prompt_tokens"],
            }
            for way, rounds in ways.items()
        }
        for kind, ways in results.items()
    }
    for ways in summary.values():
        ways["speedup_of_n4"] = round(
            ways["n4"]["median_tokens_per_second"]
            / ways["four_requests"]["median_tokens_per_second"],
            3,
        )
    print(
        json.dumps(
            {
                "machine": machine(),
                "load_average_at_start": load_before,
                "load_average_at_end": os.getloadavg(),
                "tokens_per_answer": args.tokens,
                "choices": CHOICES,
                "summary": summary,
                "rounds": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
