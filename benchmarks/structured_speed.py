"""Speed of structured (JSON-schema) output against free text on the built-in model, in one run.

- free:        greedy decoding without any constraint (numpy argmax over the logits).
- gbnf:        the schema turned into GBNF by llama-cpp-python's `json_schema_to_gbnf` and enforced
               by llama.cpp's grammar sampler, as the server did before llguidance.
- llguidance:  the same schema through llmkit's `Grammar` and llguidance constraint: every step
               takes the allowed-token mask, masks the logits, takes the argmax and accepts it.

All three use the same engine, prompt and loop (prefill, then decode one token at a time); free
text is kept from ending early, so that all generate the same number of tokens (a step costs more
the longer the sequence); rounds are interleaved so background load hits each alike. Tokens/s counts generated tokens over the time
after the prefill. `mask_us` is the cost of one `mask_logits()` call (the mask, applied) on the model's vocabulary.
Prints JSON.

    python benchmarks/structured_speed.py --threads 2 --tokens 128 --rounds 5
"""

from __future__ import annotations

import argparse
import ctypes
import json
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import llmkit
from llmkit.engines.base import TokenizerFacts
from llmkit.generation.constraints import Grammar, constraint_factory

PROMPT = (
    "Here is a list of eight people, with their names, ages, cities and hobbies, "
    "as one JSON object:\n"
)

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "city": {"type": "string"},
        "hobbies": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name", "age", "city", "hobbies"],
    "additionalProperties": False,
}
SCHEMA = {
    "type": "object",
    "properties": {"people": {"type": "array", "items": PERSON, "minItems": 8, "maxItems": 8}},
    "required": ["people"],
    "additionalProperties": False,
}


class FactsView:
    """The engine as the constraint sees it; supplies tokenizer facts where the engine has none."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        facts = getattr(engine, "tokenizer_facts", None)
        if facts is None:
            llama, vocab = engine.llama, engine.vocab
            size = llama.llama_vocab_n_tokens(vocab)
            facts = TokenizerFacts(
                vocab_size=size,
                bos_id=llama.llama_vocab_bos(vocab),
                eos_id=llama.llama_vocab_eos(vocab),
                end_of_generation_ids=frozenset(
                    i for i in range(size) if llama.llama_vocab_is_eog(vocab, i)
                ),
                add_bos=False,
            )
        self.tokenizer_facts = facts
        self.token_bytes = engine.token_bytes
        self.tokenize = engine.tokenize


class Runner:
    def __init__(self, engine: Any, tokens: int) -> None:
        self.engine, self.tokens = engine, tokens
        self.llama = engine.llama
        self.prompt = engine.tokenize(PROMPT, add_bos=True)
        self.size = self.llama.llama_vocab_n_tokens(engine.vocab)
        self.end_ids = FactsView(engine).tokenizer_facts.end_of_generation_ids

    def logits(self) -> np.ndarray:
        address = self.llama.llama_get_logits_ith(self.engine.context, -1)
        row = (ctypes.c_float * self.size).from_address(ctypes.addressof(address.contents))
        return np.frombuffer(row, dtype=np.float32)

    def run(self, choose: Callable[[], int]) -> tuple[int, float, bytes]:
        """Generate up to `tokens` tokens; returns (count, seconds after prefill, text)."""
        self.last: list[int] = []
        # Each contender reuses the cached prompt (all but its last token) alike.
        self.engine.prefill(self.prompt)
        started, out = time.perf_counter(), []
        for _ in range(self.tokens):
            token = choose()
            if token in self.end_ids:
                break
            out.append(token)
            self.engine.decode(token)
        seconds = time.perf_counter() - started
        self.last = out
        return len(out), seconds, b"".join(self.engine.token_bytes(t) for t in out)

    def free(self) -> tuple[int, float, bytes]:
        # The end of text is masked out, so free text runs the full --tokens like the others:
        # a decode step costs more the longer the sequence, so equal lengths keep it fair.
        ends = np.array(sorted(self.end_ids))

        def choose() -> int:
            logits = self.logits()
            logits[ends] = -np.inf
            return int(logits.argmax())

        return self.run(choose)

    def gbnf(self, gbnf: str) -> tuple[int, float, bytes]:
        llama = self.llama
        chain = llama.llama_sampler_chain_init(llama.llama_sampler_chain_default_params())
        grammar = llama.llama_sampler_init_grammar(self.engine.vocab, gbnf.encode(), b"root")
        llama.llama_sampler_chain_add(chain, grammar)
        llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_greedy())
        try:
            return self.run(lambda: llama.llama_sampler_sample(chain, self.engine.context, -1))
        finally:
            llama.llama_sampler_free(chain)

    def guided(self, make: Callable[[], Any], mask_times: list[float]) -> tuple[int, float, bytes]:
        constraint = make()

        def choose() -> int:
            logits = self.logits()
            started = time.perf_counter()
            constraint.mask_logits(logits)  # in place: llama.cpp's logits are not read again
            mask_times.append(time.perf_counter() - started)
            token = int(logits.argmax())
            if not constraint.finished:
                constraint.accept(token)
            return token

        return self.run(choose)


def replay_costs(make: Callable[[], Any], tokens: list[int], size: int) -> dict[str, float]:
    """Median microseconds per token of each constraint call, replaying a generated reply."""
    times: dict[str, list[float]] = {"allowed": [], "mask_logits": [], "accept": []}
    logits = np.zeros(size, dtype=np.float32)
    for _ in range(3):
        constraint = make()
        for token in tokens:
            started = time.perf_counter()
            constraint.allowed()
            middle = time.perf_counter()
            constraint.mask_logits(logits)
            after = time.perf_counter()
            constraint.accept(token)
            times["allowed"].append(middle - started)
            times["mask_logits"].append(after - middle)
            times["accept"].append(time.perf_counter() - after)
    return {name: round(1e6 * statistics.median(values), 1) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    model = llmkit.load("smollm2", threads=args.threads, context_length=1024)
    engine = model.engine
    runner = Runner(engine, args.tokens)

    from llmkit.server.grammar import schema_grammar

    gbnf = schema_grammar(SCHEMA)
    view = FactsView(engine)
    started = time.perf_counter()
    grammar = Grammar.from_json_schema(SCHEMA)
    compile_s = time.perf_counter() - started
    started = time.perf_counter()
    make = constraint_factory(grammar, view)  # the first call also builds the vocabulary
    first_bind_s = time.perf_counter() - started
    started = time.perf_counter()
    make = constraint_factory(grammar, view)
    bind_s = time.perf_counter() - started

    mask_times: list[float] = []
    contenders: dict[str, Callable[[], tuple[int, float, bytes]]] = {
        "free": runner.free,
        "gbnf": lambda: runner.gbnf(gbnf),
        "llguidance": lambda: runner.guided(make, mask_times),
    }
    names = list(contenders)
    speeds: dict[str, list[float]] = {name: [] for name in names}
    samples: dict[str, tuple[int, str]] = {}
    guided_tokens: list[int] = []
    runner.free()  # warm-up
    for round_ in range(args.rounds):
        for name in names[round_ % 3 :] + names[: round_ % 3]:
            count, seconds, text = contenders[name]()
            speeds[name].append(count / seconds)
            samples[name] = (count, text.decode(errors="replace"))
            if name == "llguidance":
                guided_tokens = runner.last

    medians = {name: statistics.median(values) for name, values in speeds.items()}
    valid = {}
    for name in ("gbnf", "llguidance"):
        try:
            json.loads(samples[name][1])
            valid[name] = True
        except ValueError:
            valid[name] = False  # cut off at --tokens before the JSON closed
    result = {
        "model": "smollm2",
        "machine": platform.processor() or platform.machine(),
        "threads": args.threads,
        "tokens": args.tokens,
        "rounds": args.rounds,
        "vocab_size": view.tokenizer_facts.vocab_size,
        "tokens_per_s": {name: round(value, 1) for name, value in medians.items()},
        "ratio_to_free": {
            name: round(medians[name] / medians["free"], 3) for name in ("gbnf", "llguidance")
        },
        "ratio_per_round": {
            name: [round(a / b, 3) for a, b in zip(speeds[name], speeds["free"])]
            for name in ("gbnf", "llguidance")
        },
        "generated_tokens": {name: samples[name][0] for name in names},
        "complete_json": valid,
        "mask_us": {
            "mean": round(1e6 * statistics.fmean(mask_times), 1),
            "median": round(1e6 * statistics.median(mask_times), 1),
            "p99": round(1e6 * float(np.percentile(mask_times, 99)), 1),
        },
        "replay_us_per_token": replay_costs(make, guided_tokens, view.tokenizer_facts.vocab_size),
        "grammar_compile_ms": round(1e3 * compile_s, 2),
        "first_bind_ms": round(1e3 * first_bind_s, 1),
        "bind_ms": round(1e3 * bind_s, 2),
        "llguidance_sample": samples["llguidance"][1][:200],
    }
    print(json.dumps(result, indent=2))
    model.close()


if __name__ == "__main__":
    main()
