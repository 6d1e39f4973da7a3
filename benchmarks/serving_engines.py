"""Batched serving throughput of the two engines on the same model, through the BatchScheduler.

For each engine (llama.cpp, and transformers loading the same GGUF de-quantized), the built-in
model serves 8 concurrent greedy requests of a fixed length (`ignore_eos`, so every request makes
the same number of decoding steps) in two set-ups:

- batched:   BatchScheduler(parallel=8): the 8 requests decoded together, one batch per step.
- one_slot:  BatchScheduler(parallel=1): the same requests one at a time (the control).

Rounds of the four contenders are interleaved, so background load hits all alike, after one
unmeasured warm-up round each; every round has its own prompts, so no round reuses a cached
prefix. Throughput is completion tokens over the round's wall time (prompt evaluation included).
Prints JSON.

    python benchmarks/serving_engines.py --tokens 32 --rounds 3 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from contextlib import ExitStack

import llmkit
from llmkit.generation.batching import BatchRequest, BatchScheduler

CONTEXT = 512  # tokens per slot
CLIENTS = 8
TOPICS = [
    "a lighthouse keeper",
    "how rain forms",
    "a busy market in the morning",
    "advice for a new gardener",
    "the history of bread",
    "a train journey at night",
    "why the sky is blue",
    "a cat who learns to swim",
    "the first day at a new school",
    "a storm over the sea",
    "how bees make honey",
    "a city after the snow",
]


def prompts_for(model, round_index: int) -> list[list[int]]:
    """8 chat prompts, different in every round (so no round hits a cached prefix)."""
    return [
        model.prompt_ids(
            [
                {
                    "role": "user",
                    "content": f"Round {round_index}: write a few sentences about "
                    f"{TOPICS[(round_index * CLIENTS + client) % len(TOPICS)]}.",
                }
            ]
        )
        for client in range(CLIENTS)
    ]


def run_round(model, scheduler: BatchScheduler, prompts: list[list[int]], tokens: int) -> dict:
    params = model.params(temperature=0, max_tokens=tokens, ignore_eos=True)
    started = time.perf_counter()
    handles = [scheduler.submit(BatchRequest(prompt, params)) for prompt in prompts]
    for handle in handles:
        for _ in handle:
            pass
    seconds = time.perf_counter() - started
    completion = sum(handle.result.usage.completion_tokens for handle in handles)
    return {"seconds": seconds, "completion_tokens": completion}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--tokens", type=int, default=32, help="completion tokens per request")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default=None, help="transformers: cpu or cuda (default: auto)")
    args = parser.parse_args()

    contenders: dict[str, tuple] = {}
    load_seconds: dict[str, float] = {}
    with ExitStack() as stack:
        for engine in ("llamacpp", "transformers"):
            started = time.perf_counter()
            model = stack.enter_context(
                llmkit.load(
                    args.model,
                    engine=engine,
                    context_length=CONTEXT,
                    threads=args.threads,
                    device=args.device if engine == "transformers" else None,
                )
            )
            load_seconds[engine] = time.perf_counter() - started
            print(f"loaded {engine} in {load_seconds[engine]:.1f} s", file=sys.stderr)
            for setup, parallel in (("batched", CLIENTS), ("one_slot", 1)):
                scheduler = BatchScheduler(
                    model, parallel=parallel, max_queue=CLIENTS, slot_context=CONTEXT
                )
                stack.callback(scheduler.close)
                contenders[f"{engine}/{setup}"] = (model, scheduler)
        for model, scheduler in contenders.values():
            run_round(model, scheduler, prompts_for(model, -1), args.tokens)  # warm-up
        rounds: dict[str, list[dict]] = {name: [] for name in contenders}
        for round_index in range(args.rounds):
            for name, (model, scheduler) in contenders.items():
                prompts = prompts_for(model, round_index)
                rounds[name].append(run_round(model, scheduler, prompts, args.tokens))
                print(f"round {round_index} {name}: {rounds[name][-1]}", file=sys.stderr)

    results = {}
    for name, measured in rounds.items():
        speeds = [r["completion_tokens"] / r["seconds"] for r in measured]
        results[name] = {
            "tokens_per_second_median": round(statistics.median(speeds), 1),
            "tokens_per_second_rounds": [round(s, 1) for s in speeds],
            "round_seconds_median": round(statistics.median(r["seconds"] for r in measured), 2),
        }
    for engine in ("llamacpp", "transformers"):
        batched = results[f"{engine}/batched"]["tokens_per_second_median"]
        alone = results[f"{engine}/one_slot"]["tokens_per_second_median"]
        results[f"{engine}/batching_speedup"] = round(batched / alone, 2)
    results["transformers_over_llamacpp_batched"] = round(
        results["transformers/batched"]["tokens_per_second_median"]
        / results["llamacpp/batched"]["tokens_per_second_median"],
        2,
    )
    print(
        json.dumps(
            {
                "benchmark": "serving_engines",
                "model": args.model,
                "clients": CLIENTS,
                "tokens_per_request": args.tokens,
                "rounds": args.rounds,
                "threads": args.threads,
                "device": args.device or "auto",
                "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                "load_seconds": {k: round(v, 2) for k, v in load_seconds.items()},
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
