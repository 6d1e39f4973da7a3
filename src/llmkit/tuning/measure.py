"""One weight format measured in a fresh process: speed, perplexity and greedy answers.

Each candidate file runs in its own process, as `llmkit bench` does, so that its load is cold, its
memory its own and one file's caches do not flatter the next.

    python -m llmkit.tuning.measure '{"path": "...", "threads": 2}'
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, dataclass
from importlib import resources

from llmkit.errors import LlmkitError

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
    import time

    from llmkit.bench import measure_loaded
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
    request = json.dumps({"path": path, "threads": threads, "repetitions": repetitions})
    completed = subprocess.run(
        [sys.executable, "-m", "llmkit.tuning.measure", request],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        lines = [line for line in completed.stderr.strip().splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit code {completed.returncode}"
        raise LlmkitError(f"Measuring {path} failed: {reason}")
    return Measurement(**json.loads(completed.stdout.strip().splitlines()[-1]))


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


def _main(request_json: str) -> None:
    request = json.loads(request_json)
    try:
        result = measure_file(
            request["path"], threads=request.get("threads"), repetitions=request["repetitions"]
        )
    except LlmkitError as error:
        sys.stderr.write(f"{error}\n")
        sys.exit(1)
    sys.stdout.write(json.dumps(asdict(result)) + "\n")


if __name__ == "__main__":
    _main(sys.argv[1])
