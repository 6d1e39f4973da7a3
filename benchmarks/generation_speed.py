"""Generation speed of the llama.cpp engine against two baselines on the same model, in one process.

- llmkit:       llmkit's llama.cpp engine through the full generation loop (stop handling, streaming).
- low-level:    a minimal loop on llama-cpp-python's low-level API: llama_decode + numpy argmax.
- high-level:   llama-cpp-python's own `Llama.create_completion` (greedy), called the usual way
                (one call, the whole answer back); `high_level_stream` is the same call streamed.
- control:      a second, independent copy of the low-level loop. The spread of control / low-level
                is what this machine's noise alone does to a ratio of two identical loops.

All use the same GGUF, context size, batch size and thread count, greedy decoding and the same
prompt; runs are interleaved (A B C, B C A, C A B, ...) so background load and position in the
round hit each alike. Every call to llama_decode is timed too, which splits each contender's time
per token into the model evaluation and everything around it. Prints JSON.

    python benchmarks/generation_speed.py --threads 2 --tokens 128 --rounds 15
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

import llmkit

PROMPT = (
    "The river runs past the old mill and under the stone bridge, where children watch the boats "
    "go by on summer evenings. The town"
)


class DecodeClock:
    """Adds up the time spent inside llama_decode while armed, whoever calls it."""

    def __init__(self) -> None:
        import llama_cpp
        import llama_cpp.llama_cpp as bindings

        # The package re-exports the bindings: the high-level API calls one name, the rest the other.
        self.namespaces = [llama_cpp, bindings]
        self.original = bindings.llama_decode
        self.seconds, self.calls, self.armed = 0.0, 0, False
        for namespace in self.namespaces:
            namespace.llama_decode = self._timed

    def _timed(self, context, batch):  # type: ignore[no-untyped-def]
        if not self.armed:
            return self.original(context, batch)
        started = time.perf_counter()
        status = self.original(context, batch)
        self.seconds += time.perf_counter() - started
        self.calls += 1
        return status

    def arm(self) -> None:
        self.seconds, self.calls, self.armed = 0.0, 0, True

    def disarm(self) -> None:
        self.armed = False


@dataclass
class Sample:
    tokens_per_second: float
    in_decode_us: float | None = None  # per token, inside llama_decode
    around_decode_us: float | None = None  # per token, everything else


def timed_stream(tokens: Iterator[object], clock: DecodeClock) -> Sample:
    """Time a per-token iterator from its first token to its end (the first is prompt work)."""
    next(tokens)
    clock.arm()
    started = time.perf_counter()
    steps = sum(1 for _ in tokens)
    elapsed = time.perf_counter() - started
    clock.disarm()
    assert clock.calls == steps, (clock.calls, steps)
    in_decode = clock.seconds / steps
    return Sample(steps / elapsed, in_decode * 1e6, (elapsed / steps - in_decode) * 1e6)


def llmkit_tokens(model, prompt_ids: list[int], tokens: int) -> Iterator[object]:
    model.engine.context.keep_prefix(0, 0)  # no cached prefix: every contender starts cold
    stream = model.stream_ids(
        prompt_ids, temperature=0, repeat_penalty=1.0, max_tokens=tokens, ignore_eos=True
    )
    for chunk in stream:
        if chunk.token_id is not None:
            yield chunk
    assert stream.result is not None and stream.result.usage.completion_tokens == tokens


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

    def tokens(self, prompt_ids: list[int], tokens: int) -> Iterator[int]:
        llama = self.llama
        llama.llama_memory_clear(llama.llama_get_memory(self.context), True)
        array = (llama.llama_token * len(prompt_ids))(*prompt_ids)
        llama.llama_decode(self.context, llama.llama_batch_get_one(array, len(prompt_ids)))
        one = (llama.llama_token * 1)()
        for step in range(tokens):
            logits = np.ctypeslib.as_array(
                llama.llama_get_logits_ith(self.context, -1), shape=(self.vocab_size,)
            )
            one[0] = int(np.argmax(logits))
            yield one[0]
            if step < tokens - 1:
                llama.llama_decode(self.context, llama.llama_batch_get_one(one, 1))


class HighLevelAPI:
    """llama-cpp-python's Llama.create_completion."""

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

    def _call(self, prompt: str, tokens: int, stream: bool = False):  # type: ignore[no-untyped-def]
        self.llm.reset()
        return self.llm.create_completion(
            prompt, max_tokens=tokens, temperature=0.0, top_k=1, repeat_penalty=1.0, stream=stream
        )

    def _timed(self, prompt: str, tokens: int) -> tuple[float, int]:
        started = time.perf_counter()
        out = self._call(prompt, tokens)
        return time.perf_counter() - started, out["usage"]["completion_tokens"]

    def rate(self, prompt: str, tokens: int) -> Sample:
        """Per-token time from an N-token and a 1-token call, so prompt work cancels out."""
        one, _ = self._timed(prompt, 1)
        many, produced = self._timed(prompt, tokens)
        return Sample((produced - 1) / (many - one))

    def tokens(self, prompt: str, tokens: int) -> Iterator[object]:
        for chunk in self._call(prompt, tokens, stream=True):
            if (
                chunk["choices"][0]["finish_reason"] is None
            ):  # the last chunk only says why it ended
                yield chunk


def median_of(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return round(statistics.median(present), 1) if present else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=15)
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
    control = LowLevelLoop(model.manifest.path, args.context, args.threads)
    high = HighLevelAPI(model.manifest.path, args.context, args.threads)
    clock = DecodeClock()
    contenders: list[tuple[str, Callable[[int], Sample]]] = [
        ("llmkit", lambda n: timed_stream(llmkit_tokens(model, prompt_ids, n), clock)),
        ("low_level", lambda n: timed_stream(low.tokens(prompt_ids, n), clock)),
        ("high_level", lambda n: high.rate(prompt, n)),
        ("high_level_stream", lambda n: timed_stream(high.tokens(prompt, n), clock)),
        ("control", lambda n: timed_stream(control.tokens(prompt_ids, n), clock)),
    ]
    for _, measure in contenders:
        measure(8)  # warm-up
    samples: dict[str, list[Sample]] = {name: [] for name, _ in contenders}
    for round_index in range(args.rounds):
        # Rotate who goes first, so no contender always runs in the same slot of a round.
        shift = round_index % len(contenders)
        for name, measure in contenders[shift:] + contenders[:shift]:
            samples[name].append(measure(args.tokens))

    rates = {name: [s.tokens_per_second for s in values] for name, values in samples.items()}
    median = {name: statistics.median(values) for name, values in rates.items()}

    def pairwise(name: str, baseline: str) -> list[float]:
        return [round(a / b, 3) for a, b in zip(rates[name], rates[baseline])]

    def summary(name: str, baseline: str) -> dict[str, object]:
        ratios = pairwise(name, baseline)
        return {
            "ratio_of_medians": round(median[name] / median[baseline], 3),
            "median_of_rounds": round(statistics.median(ratios), 3),
            "rounds": ratios,
        }

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
                "per_token_us_in_llama_decode": {
                    k: median_of([s.in_decode_us for s in v]) for k, v in samples.items()
                },
                "per_token_us_around_llama_decode": {
                    k: median_of([s.around_decode_us for s in v]) for k, v in samples.items()
                },
                "llmkit_vs_low_level": summary("llmkit", "low_level"),
                "llmkit_vs_high_level": summary("llmkit", "high_level"),
                "llmkit_vs_high_level_stream": summary("llmkit", "high_level_stream"),
                "control_vs_low_level": summary("control", "low_level"),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
