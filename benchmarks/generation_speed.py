"""Generation speed of the llama.cpp engine against two baselines on the same model, in one process.

- llmkit:      llmkit's llama.cpp engine through the full generation loop (stop handling, streaming).
- low-level:   a minimal loop on llama-cpp-python's low-level API: llama_decode + numpy argmax.
- high-level:  llama-cpp-python's own `Llama.create_completion` (greedy).

All three use the same GGUF, context size, batch size and thread count, greedy decoding and the same
prompt; runs are interleaved (A B C, B C A, C A B, ...) so background load and position in the
round hit each alike. Prints JSON.

    python benchmarks/generation_speed.py --threads 2 --tokens 128 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np

import llmkit

PROMPT = (
    "The river runs past the old mill and under the stone bridge, where children watch the boats "
    "go by on summer evenings. The town"
)


def llmkit_rate(model, prompt_ids: list[int], tokens: int) -> float:
    model.engine.prefill([0])  # no cached prefix: every engine starts cold
    stream = model.stream_ids(
        prompt_ids, temperature=0, repeat_penalty=1.0, max_tokens=tokens, ignore_eos=True
    )
    for _ in stream:
        pass
    result = stream.result
    assert result.usage.completion_tokens == tokens
    return result.timing.generation_tokens_per_second(result.usage)


class LowLevelLoop:
    """The smallest honest loop on the low-level API: decode, argmax the logits, repeat."""

    def __init__(self, path: str, context: int, threads: int) -> None:
        import llama_cpp as llama

        self.llama = llama
        model_params = llama.llama_model_default_params()
        self.model = llama.llama_model_load_from_file(path.encode(), model_params)
        context_params = llama.llama_context_default_params()
        context_params.n_ctx, context_params.n_batch, context_params.n_ubatch = context, 512, 512
        context_params.n_threads = context_params.n_threads_batch = threads
        self.context = llama.llama_init_from_model(self.model, context_params)
        self.vocab_size = llama.llama_vocab_n_tokens(llama.llama_model_get_vocab(self.model))

    def rate(self, prompt_ids: list[int], tokens: int) -> float:
        llama = self.llama
        llama.llama_memory_clear(llama.llama_get_memory(self.context), True)
        array = (llama.llama_token * len(prompt_ids))(*prompt_ids)
        llama.llama_decode(self.context, llama.llama_batch_get_one(array, len(prompt_ids)))
        one = (llama.llama_token * 1)()
        started = None
        for step in range(tokens):
            logits = np.ctypeslib.as_array(
                llama.llama_get_logits_ith(self.context, -1), shape=(self.vocab_size,)
            )
            one[0] = int(np.argmax(logits))
            if step == 0:
                started = (
                    time.perf_counter()
                )  # like llmkit: the rate is over the tokens after the first
            if step < tokens - 1:
                llama.llama_decode(self.context, llama.llama_batch_get_one(one, 1))
        return (tokens - 1) / (time.perf_counter() - started)


class HighLevelAPI:
    """llama-cpp-python's Llama.create_completion; per-token time from an N-token and a 1-token call."""

    def __init__(self, path: str, context: int, threads: int) -> None:
        from llama_cpp import Llama

        self.llm = Llama(
            model_path=path,
            n_ctx=context,
            n_batch=512,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )

    def _timed(self, prompt: str, tokens: int) -> tuple[float, int]:
        self.llm.reset()
        started = time.perf_counter()
        out = self.llm.create_completion(
            prompt, max_tokens=tokens, temperature=0.0, top_k=1, repeat_penalty=1.0
        )
        return time.perf_counter() - started, out["usage"]["completion_tokens"]

    def rate(self, prompt: str, tokens: int) -> float:
        one, _ = self._timed(prompt, 1)
        many, produced = self._timed(prompt, tokens)
        return (produced - 1) / (many - one)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--context", type=int, default=4096)
    parser.add_argument(
        "--prompt-repeats",
        type=int,
        default=1,
        help="repeat the prompt text this many times (1: a 26-token prompt; 18: about 470 tokens, the most one batch holds)",
    )
    args = parser.parse_args()

    model = llmkit.load(args.model, threads=args.threads, context_length=args.context)
    prompt = " ".join([PROMPT] * args.prompt_repeats)
    prompt_ids = model.raw_prompt_ids(prompt)
    low = LowLevelLoop(model.manifest.path, args.context, args.threads)
    high = HighLevelAPI(model.manifest.path, args.context, args.threads)
    rates: dict[str, list[float]] = {"llmkit": [], "low_level": [], "high_level": []}
    llmkit_rate(model, prompt_ids, 8)  # warm-up for all three
    low.rate(prompt_ids, 8)
    high.rate(prompt, 8)
    contenders = [
        ("llmkit", lambda: llmkit_rate(model, prompt_ids, args.tokens)),
        ("low_level", lambda: low.rate(prompt_ids, args.tokens)),
        ("high_level", lambda: high.rate(prompt, args.tokens)),
    ]
    for round_index in range(args.rounds):
        # Rotate who goes first, so no contender always runs in the same slot of a round.
        shift = round_index % len(contenders)
        for name, measure in contenders[shift:] + contenders[:shift]:
            rates[name].append(measure())
    median = {name: statistics.median(values) for name, values in rates.items()}
    print(
        json.dumps(
            {
                "model": args.model,
                "threads": args.threads,
                "generated_tokens": args.tokens,
                "prompt_tokens": len(prompt_ids),
                "rounds": args.rounds,
                "machine": platform.machine(),
                "tokens_per_second_median": {k: round(v, 1) for k, v in median.items()},
                "tokens_per_second_all": {k: [round(v, 1) for v in vs] for k, vs in rates.items()},
                "llmkit_vs_low_level": round(median["llmkit"] / median["low_level"], 3),
                "llmkit_vs_high_level": round(median["llmkit"] / median["high_level"], 3),
                "pairwise_vs_high_level": [
                    round(a / b, 3) for a, b in zip(rates["llmkit"], rates["high_level"])
                ],
                "pairwise_vs_low_level": [
                    round(a / b, 3) for a, b in zip(rates["llmkit"], rates["low_level"])
                ],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
