"""`llmkit bench`: load time, prompt and generation speed, time to first token and peak memory.

Each engine is measured in a fresh process, so its load time is cold and its peak memory is its own.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from llmkit.engines import check_engine_name
from llmkit.errors import LlmkitError

if TYPE_CHECKING:
    from llmkit.model import Model

# A neutral English text, repeated to the requested prompt length.
_FILLER = (
    "The river runs past the old mill and under the stone bridge, where children watch the boats "
    "go by on summer evenings while the town prepares for the harvest festival. "
)


@dataclass
class BenchResult:
    model: str
    engine: str
    threads: int | None
    load_seconds: float
    prompt_tokens: int
    prompt_tokens_per_second: float
    time_to_first_token_seconds: float
    generated_tokens: int
    generation_tokens_per_second: float
    peak_memory_mb: float
    repetitions: int
    # [min, median, max] over the repetitions, for each speed and time above.
    spread: dict[str, list[float]] = field(default_factory=dict)


def measure(
    model: str,
    engine: str,
    *,
    prompt_tokens: int = 128,
    generate_tokens: int = 64,
    repetitions: int = 3,
    threads: int | None = None,
    context_length: int | None = None,
) -> BenchResult:
    """Measure one engine in this process (the CLI calls this in a fresh subprocess)."""
    from llmkit.model import load

    started = time.perf_counter()
    loaded = load(model, engine=engine, threads=threads, context_length=context_length)
    load_seconds = time.perf_counter() - started
    return measure_loaded(
        loaded,
        model=model,
        engine=engine,
        load_seconds=load_seconds,
        prompt_tokens=prompt_tokens,
        generate_tokens=generate_tokens,
        repetitions=repetitions,
        threads=threads,
    )


def measure_loaded(
    loaded: Model,
    *,
    model: str,
    engine: str,
    load_seconds: float,
    prompt_tokens: int = 128,
    generate_tokens: int = 64,
    repetitions: int = 3,
    threads: int | None = None,
) -> BenchResult:
    """Prompt and generation speed of a model already loaded (`llmkit tune` reuses it)."""
    ids = loaded.tokenize(_FILLER * (prompt_tokens // 20 + 1))[:prompt_tokens]
    params = loaded.params(
        temperature=0, max_tokens=generate_tokens, ignore_eos=True, repeat_penalty=1.0
    )
    loaded.stream_ids(ids[:8], params.updated(max_tokens=2)).__iter__().__next__()  # warm-up
    runs = []
    for repetition in range(repetitions):
        # A different first token each time, so no cached prefix is reused.
        prompt = [ids[(repetition + 1) % len(ids)], *ids[1:]]
        loaded.engine.context.keep_prefix(0, 0)
        stream = loaded.stream_ids(prompt, params)
        for _ in stream:
            pass
        assert stream.result is not None  # set when the iteration ends
        runs.append(stream.result)
    usage = runs[0].usage
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    figures = {
        "prompt_tokens_per_second": [r.usage.prompt_tokens / r.timing.prompt_seconds for r in runs],
        "time_to_first_token_seconds": [r.timing.first_token_seconds for r in runs],
        "generation_tokens_per_second": [
            r.timing.generation_tokens_per_second(r.usage) for r in runs
        ],
    }
    digits = {"time_to_first_token_seconds": 4}
    spread = {
        name: [round(f(values), digits.get(name, 1)) for f in (min, statistics.median, max)]
        for name, values in figures.items()
    }
    return BenchResult(
        model=model,
        engine=engine,
        threads=threads,
        load_seconds=round(load_seconds, 3),
        prompt_tokens=usage.prompt_tokens,
        prompt_tokens_per_second=spread["prompt_tokens_per_second"][1],
        time_to_first_token_seconds=spread["time_to_first_token_seconds"][1],
        generated_tokens=usage.completion_tokens,
        generation_tokens_per_second=spread["generation_tokens_per_second"][1],
        peak_memory_mb=round(peak_kb / 1024, 1),
        repetitions=repetitions,
        spread=spread,
    )


def run_benchmarks(
    model: str,
    engines: list[str],
    *,
    on_start: Callable[[str], None] | None = None,
    **settings: int | None,
) -> list[BenchResult]:
    """Measure each engine in its own process, one after the other."""
    results = []
    for engine in engines:
        check_engine_name(engine)
        if on_start:
            on_start(engine)
        request = {"model": model, "engine": engine, **settings}
        answer = in_fresh_process("llmkit.bench", request, f"Benchmarking {model} on {engine}")
        results.append(BenchResult(**answer))
    return results


def in_fresh_process(module: str, request: dict[str, Any], doing: str) -> dict[str, Any]:
    """Run `python -m MODULE REQUEST` (a module whose main is `worker_main`) and return its JSON
    answer; a failure is raised with the worker's last line of stderr."""
    completed = subprocess.run(
        [sys.executable, "-m", module, json.dumps(request)],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        lines = [line for line in completed.stderr.strip().splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit code {completed.returncode}"
        raise LlmkitError(f"{doing} failed: {reason}")
    answer: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return answer


def worker_main(compute: Callable[[dict[str, Any]], Any]) -> None:
    """The worker's side of `in_fresh_process`: the request from argv; the dataclass `compute`
    returns goes out as JSON on the last line of stdout, an llmkit error as one line of stderr."""
    try:
        result = compute(json.loads(sys.argv[1]))
    except LlmkitError as error:
        sys.stderr.write(f"{error}\n")
        sys.exit(1)
    sys.stdout.write(json.dumps(asdict(result)) + "\n")


if __name__ == "__main__":
    worker_main(lambda request: measure(request.pop("model"), request.pop("engine"), **request))
