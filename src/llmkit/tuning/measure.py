"""One weight format measured in a fresh process: speed, perplexity and greedy answers.

Each candidate file runs in its own process, as `llmkit bench` does, so that its load is cold, its
memory its own and one file's caches do not flatter the next.

    python -m llmkit.tuning.measure '{"path": "...", "threads": 2}'
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import resources

from llmkit.bench import in_fresh_process, measure_loaded, worker_main

# Questions a user might ask first; the greedy answers of every candidate are compared with the
# original file's, token by token.
PROMPTS = (
    "What is the capital of France?",
    "Explain photosynthesis in one sentence.",
    "Give me three tips for a good night's sleep.",
    "What is 12 times 7?",
    "Write a haiku about the sea.",
    "Who wrote Romeo and Juliet?",
    "What does a thermometer measure?",
    "Name two planets larger than the Earth.",
)
ANSWER_TOKENS = 24
REFERENCE_TOKENS = 1024  # perplexity is taken over this many tokens of the reference text


@dataclass
class Measurement:
    path: str
    load_seconds: float
    prompt_tokens_per_second: float
    generation_tokens_per_second: float
    perplexity: float
    reference_tokens: int
    answers: list[list[int]]  # greedy token ids for each of PROMPTS
    peak_memory_mb: float


def reference_text() -> str:
    """Neutral English prose shipped with llmkit (science, history, cooking, language)."""
    return resources.files("llmkit.tuning").joinpath("reference.txt").read_text()


def measure_file(path: str, *, threads: int | None = None, repetitions: int = 3) -> Measurement:
    """Measure one GGUF file in this process."""
    from llmkit.generation.scoring import score
    from llmkit.model import load

    started = time.perf_counter()
    model = load(path, threads=threads, context_length=REFERENCE_TOKENS + 64)
    load_seconds = time.perf_counter() - started
    speed = measure_loaded(
        model, model=path, engine="llamacpp", load_seconds=load_seconds, repetitions=repetitions
    )
    ids = model.raw_prompt_ids(reference_text())[:REFERENCE_TOKENS]
    perplexity = score(model.engine, ids).perplexity
    greedy = model.params(temperature=0, max_tokens=ANSWER_TOKENS, repeat_penalty=1.0)
    answers = []
    for prompt in PROMPTS:
        stream = model.stream_ids(model.prompt_ids([{"role": "user", "content": prompt}]), greedy)
        for _ in stream:
            pass
        assert stream.result is not None  # set when the iteration ends
        answers.append(list(stream.result.token_ids))
    return Measurement(
        path=path,
        load_seconds=round(load_seconds, 3),
        prompt_tokens_per_second=speed.prompt_tokens_per_second,
        generation_tokens_per_second=speed.generation_tokens_per_second,
        perplexity=round(perplexity, 4),
        reference_tokens=len(ids),
        answers=answers,
        peak_memory_mb=speed.peak_memory_mb,
    )


def measure_in_process(
    path: str, *, threads: int | None = None, repetitions: int = 3
) -> Measurement:
    """Measure one file in a fresh Python process and return what it found."""
    request = {"path": path, "threads": threads, "repetitions": repetitions}
    return Measurement(**in_fresh_process("llmkit.tuning.measure", request, f"Measuring {path}"))


def agreement(answers: list[list[int]], reference: list[list[int]]) -> float:
    """The share of the reference's greedy tokens that a candidate reproduces, position by
    position, up to its first difference in each answer (after one, the texts diverge)."""
    same = total = 0
    for mine, theirs in zip(answers, reference):
        total += len(theirs)
        for a, b in zip(mine, theirs):
            if a != b:
                break
            same += 1
    return same / total if total else 1.0


if __name__ == "__main__":
    worker_main(lambda request: measure_file(**request))
