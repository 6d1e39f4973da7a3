"""What log-probabilities cost: batched generation with `top_logprobs` against none, in one run.

The batch scheduler the server uses, on the built-in model, with 4 sequences decoded together and
`ignore_eos` so every contender generates the same number of tokens:

- none:   no log-probabilities (the baseline, what every request without `logprobs` gets).
- chosen: each generated token's log-probability (`logprobs: true`).
- top5:   the same with the 5 most likely alternatives (`top_logprobs: 5`).

Rounds are interleaved so background load hits each alike. Tokens/s counts all sequences' generated
tokens over the wall time. Prints JSON.

    python benchmarks/logprobs_cost.py --tokens 128 --rounds 5 --threads 2
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import llmkit
from llmkit.generation.batching import BatchRequest, BatchScheduler

PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how rain forms.",
    "Describe a busy market in the morning.",
    "Give advice to a new gardener.",
]
CONTENDERS = {"none": None, "chosen": 0, "top5": 5}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    model = llmkit.load("smollm2", threads=args.threads)
    prompts = [model.prompt_ids([{"role": "user", "content": p}]) for p in PROMPTS]
    params = model.params(temperature=0.0, max_tokens=args.tokens, ignore_eos=True)
    scheduler = BatchScheduler(
        model, parallel=len(PROMPTS), max_queue=0, slot_context=1024, threads=args.threads
    )
    speeds: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    names = list(CONTENDERS)

    def run(top: int | None) -> float:
        started = time.perf_counter()
        handles = [scheduler.submit(BatchRequest(ids, params, logprobs=top)) for ids in prompts]
        count = 0
        for handle in handles:
            for _ in handle:
                pass
            assert handle.result is not None
            count += handle.result.usage.completion_tokens
            if top is not None:
                assert handle.result.logprobs is not None
        return count / (time.perf_counter() - started)

    try:
        run(None)  # warm-up
        for round_ in range(args.rounds):
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                speeds[name].append(run(CONTENDERS[name]))
    finally:
        scheduler.close()
        model.close()
    medians = {name: statistics.median(values) for name, values in speeds.items()}
    print(
        json.dumps(
            {
                "model": "smollm2",
                "machine": platform.processor() or platform.machine(),
                "threads": args.threads,
                "sequences": len(PROMPTS),
                "tokens": args.tokens,
                "rounds": args.rounds,
                "tokens_per_s": {name: round(value, 1) for name, value in medians.items()},
                "ratio_to_none": {
                    name: round(medians[name] / medians["none"], 3) for name in names
                },
                "per_token_us_added": {
                    name: round(1e6 * (1 / medians[name] - 1 / medians["none"]), 1)
                    for name in names
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
