"""Speed of structured (JSON-schema) output against free text on the built-in model, in one run.

Every contender but the last samples through the engine's own sampler (`context.new_sampler`),
as the generation loop and the server do:

- free:          greedy decoding without a constraint (the sampler's argmax fast path).
- gbnf:          the baseline: the schema turned into GBNF by llama-cpp-python's
                 `json_schema_to_gbnf` and enforced by llama.cpp's grammar sampler in a native
                 chain (grammar, then greedy), as llmkit's server did before llguidance.
- llguidance:    the same schema as `Grammar.from_json_schema` + `constraint_factory`; the sampler
                 takes `allowed()`, masks the logits, takes the argmax and accepts it.
- llguidance_mask_logits: the same constraint in a loop of this script, masking with the
                 constraint's own `mask_logits` (a table add) instead of the sampler's masking.

Same engine, prompt and greedy decoding; free text goes on past an end-of-text token so that all
generate the same number of tokens (a step costs more the longer the sequence); rounds are
interleaved so background load hits each alike. Tokens/s counts generated tokens over the time
after the prompt. `in_loop_us` times the constraint calls inside the generation loop,
`replay_us_per_token` the same calls replaying the reply with warm caches.
Prints JSON.

    python benchmarks/structured_speed.py --threads 2 --tokens 128 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import llmkit
from llmkit.engines.base import BatchItem
from llmkit.generation.constraints import Grammar, constraint_factory
from llmkit.params import SamplingParams

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


class TimedConstraint:
    """A constraint that adds up the time its `allowed()` calls take."""

    def __init__(self, inner: Any, times: list[float]) -> None:
        self.inner, self.times = inner, times

    def allowed(self) -> np.ndarray:
        started = time.perf_counter()
        mask = self.inner.allowed()
        self.times.append(time.perf_counter() - started)
        return mask

    def accept(self, token_id: int) -> None:
        self.inner.accept(token_id)

    @property
    def finished(self) -> bool:
        return self.inner.finished


class Runner:
    def __init__(self, engine: Any, tokens: int) -> None:
        self.engine, self.tokens = engine, tokens
        self.context = engine.context
        self.prompt = engine.tokenize(PROMPT, add_bos=True)
        self.end_ids = engine.tokenizer_facts.end_of_generation_ids
        self.greedy = SamplingParams(temperature=0.0)
        self.last: list[int] = []
        # The prompt but its last token is evaluated once; every run re-evaluates that last token.
        self.context.keep_prefix(0, 0)
        self.context.decode([BatchItem(0, self.prompt[:-1], want_logits=False)])

    def run(self, step: Callable[[], int], stop_at_end: bool = True) -> tuple[int, float, bytes]:
        """Generate up to `tokens` tokens; returns (count, seconds after prefill, text)."""
        context = self.context
        context.keep_prefix(0, len(self.prompt) - 1)  # drop the previous contender's reply
        assert list(context.cached(0)) == self.prompt[:-1]
        context.decode([BatchItem(0, self.prompt[-1:])])
        started, out = time.perf_counter(), []
        for _ in range(self.tokens):
            token = step()
            if stop_at_end and token in self.end_ids:
                break
            out.append(token)
            context.decode([BatchItem(0, [token])])
        seconds = time.perf_counter() - started
        self.last = out
        return len(out), seconds, b"".join(self.engine.token_bytes(t) for t in out)

    def sampled(self, constraint: Any = None, stop_at_end: bool = True) -> tuple[int, float, bytes]:
        """Through the engine's own sampler, as the generation loop and the server run."""
        sampler = self.context.new_sampler(self.greedy, self.prompt, constraint)
        return self.run(sampler.sample, stop_at_end)

    def free(self) -> tuple[int, float, bytes]:
        # Free text goes on past an end-of-text token, so that every contender generates the
        # full --tokens: a decode step costs more the longer the sequence.
        return self.sampled(None, stop_at_end=False)

    def mask_logits_loop(self, constraint: Any, times: list[float]) -> tuple[int, float, bytes]:
        """The constraint's own `mask_logits` (a table add) on the logits, then argmax."""

        def step() -> int:
            logits = self.context.logits()
            started = time.perf_counter()
            constraint.mask_logits(logits)  # in place: llama.cpp's logits are not read again
            times.append(time.perf_counter() - started)
            token = int(logits.argmax())
            constraint.accept(token)
            return token

        return self.run(step)


def gbnf_sampler(engine: Any, schema: dict[str, Any]) -> Callable[[], int]:
    """The baseline: llama.cpp's grammar sampler then greedy, one native chain per reply."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    gbnf = json_schema_to_gbnf(json.dumps(schema))
    llama, context = engine.llama, engine.context
    chain = llama.llama_sampler_chain_init(llama.llama_sampler_chain_default_params())
    grammar = llama.llama_sampler_init_grammar(engine.vocab, gbnf.encode(), b"root")
    if not grammar:
        raise SystemExit("llama.cpp could not parse the GBNF grammar")
    llama.llama_sampler_chain_add(chain, grammar)
    llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_greedy())
    # The chain accepts each token it samples into its grammar itself.
    return lambda: int(llama.llama_sampler_sample(chain, context.pointer, -1))


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
    parser.add_argument(
        "--engine",
        choices=("llamacpp", "transformers"),
        default="llamacpp",
        help="GBNF, llama.cpp's own grammar sampler, is a contender on llama.cpp only",
    )
    args = parser.parse_args()

    model = llmkit.load("smollm2", engine=args.engine, threads=args.threads, context_length=1024)
    engine = model.engine
    runner = Runner(engine, args.tokens)

    started = time.perf_counter()
    grammar = Grammar.from_json_schema(SCHEMA)
    compile_s = time.perf_counter() - started
    started = time.perf_counter()
    make = constraint_factory(grammar, engine)  # the first call also builds the vocabulary
    first_bind_s = time.perf_counter() - started
    started = time.perf_counter()
    make = constraint_factory(grammar, engine)
    bind_s = time.perf_counter() - started

    allowed_times: list[float] = []
    mask_times: list[float] = []
    contenders: dict[str, Callable[[], tuple[int, float, bytes]]] = {
        "free": runner.free,
        "gbnf": lambda: runner.run(gbnf_sampler(engine, SCHEMA)),
        "llguidance": lambda: runner.sampled(TimedConstraint(make(), allowed_times)),
        "llguidance_mask_logits": lambda: runner.mask_logits_loop(make(), mask_times),
    }
    if args.engine != "llamacpp":
        del contenders["gbnf"]
    names = list(contenders)
    speeds: dict[str, list[float]] = {name: [] for name in names}
    samples: dict[str, tuple[int, str]] = {}
    guided_tokens: list[int] = []
    runner.free()  # warm-up
    for round_ in range(args.rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            count, seconds, text = contenders[name]()
            speeds[name].append(count / seconds)
            samples[name] = (count, text.decode(errors="replace"))
            if name == "llguidance":
                guided_tokens = runner.last

    medians = {name: statistics.median(values) for name, values in speeds.items()}
    valid = {}
    constrained = [name for name in names if name != "free"]
    for name in constrained:
        try:
            json.loads(samples[name][1])
            valid[name] = True
        except ValueError:
            valid[name] = False  # cut off at --tokens before the JSON closed
    result = {
        "model": "smollm2",
        "engine": args.engine,
        "machine": platform.processor() or platform.machine(),
        "threads": args.threads,
        "tokens": args.tokens,
        "rounds": args.rounds,
        "vocab_size": engine.tokenizer_facts.vocab_size,
        "tokens_per_s": {name: round(value, 1) for name, value in medians.items()},
        "ratio_to_free": {name: round(medians[name] / medians["free"], 3) for name in constrained},
        "ratio_per_round": {
            name: [round(a / b, 3) for a, b in zip(speeds[name], speeds["free"])]
            for name in constrained
        },
        "generated_tokens": {name: samples[name][0] for name in names},
        "complete_json": valid,
        "same_text": samples.get("gbnf", samples["llguidance"])[1] == samples["llguidance"][1],
        "in_loop_us": {
            name: {
                "median": round(1e6 * statistics.median(values), 1),
                "p99": round(1e6 * float(np.percentile(values, 99)), 1),
            }
            for name, values in (("allowed", allowed_times), ("mask_logits", mask_times))
        },
        "replay_us_per_token": replay_costs(make, guided_tokens, engine.tokenizer_facts.vocab_size),
        "grammar_compile_ms": round(1e3 * compile_s, 2),
        "first_bind_ms": round(1e3 * first_bind_s, 1),
        "bind_ms": round(1e3 * bind_s, 2),
        "samples": {name: samples[name][1][:160] for name in constrained},
    }
    print(json.dumps(result, indent=2))
    model.close()


if __name__ == "__main__":
    main()
