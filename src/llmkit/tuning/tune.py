"""`llmkit tune`: find the weight format this machine runs a model fastest in, at a bounded cost.

A model is published in one GGUF format, but which format a CPU's kernels run fastest is a
property of the machine. Each candidate is made with llama.cpp's own quantizer, measured in a
fresh process (prompt and generation speed, perplexity on a reference text, greedy agreement with
the original), and the fastest one whose perplexity is within `max_quality_loss` of the original's
(and whose file fits `memory_budget`) is chosen. The original file is never changed.
"""

from __future__ import annotations

import math
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmkit.errors import InvalidParameterError
from llmkit.store.store import ModelManifest, ModelStore
from llmkit.tuning.measure import Measurement, agreement, measure_in_process

# Formats that llama.cpp's CPU kernels handle well for small and mid-sized models; the original
# format is always measured as the baseline.
DEFAULT_FORMATS = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0")
# A candidate must beat the original by more than run-to-run noise to replace it.
MIN_SPEEDUP = 1.05
_SIZE_UNITS = {
    "": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9,
    "kib": 2**10, "mib": 2**20, "gib": 2**30,
}  # fmt: skip


@dataclass
class Candidate:
    format: str
    size_bytes: int
    prompt_tokens_per_second: float
    generation_tokens_per_second: float
    perplexity: float
    agreement: float  # share of the original's greedy answer tokens reproduced
    original: bool = False
    quality_loss: float = 0.0  # perplexity increase over the original's, as a fraction
    prompt_speedup: float = 1.0
    generation_speedup: float = 1.0
    fits: bool = True
    pareto: bool = False  # no other candidate is faster at both and at least as good
    note: str = ""

    @property
    def speedup(self) -> float:
        """The geometric mean of the prompt and generation speed-ups: one figure to rank by."""
        return math.sqrt(self.prompt_speedup * self.generation_speedup)


@dataclass
class TuneReport:
    model: str
    original_format: str
    max_quality_loss: float
    memory_budget: int | None
    candidates: list[Candidate] = field(default_factory=list)
    chosen: str | None = None  # a format, or None to keep the original
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for entry, candidate in zip(data["candidates"], self.candidates):
            entry["speedup"] = round(candidate.speedup, 3)
        return data


def parse_fraction(text: str) -> float:
    """'1%', '0.5 %' or '0.01' as a fraction between 0 and 1."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(%?)\s*", text)
    if not match:
        raise InvalidParameterError(f"'{text}' is not a quality loss; write it like 1% or 0.01.")
    value = float(match.group(1)) / (100 if match.group(2) else 1)
    if not 0 <= value <= 1:
        raise InvalidParameterError(f"The quality loss must lie between 0% and 100%, not '{text}'.")
    return value


def parse_bytes(text: str) -> int:
    """'500MB', '1.5 GiB' or '2000000000' as a number of bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", text.lower())
    if not match or match.group(2) not in _SIZE_UNITS:
        raise InvalidParameterError(f"'{text}' is not a size; write it like 500MB or 1.5GiB.")
    value = int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])
    if value < 1:
        raise InvalidParameterError(f"The memory budget must be at least one byte, not '{text}'.")
    return value


def tune(
    name: str,
    *,
    formats: Sequence[str] = DEFAULT_FORMATS,
    max_quality_loss: float = 0.01,
    memory_budget: int | None = None,
    threads: int | None = None,
    repetitions: int = 3,
    store: ModelStore | None = None,
    on_step: Callable[[str], None] | None = None,
    keep: bool = True,
) -> TuneReport:
    """Measure the original and each format, choose, and (with `keep`) store the choice."""
    from llmkit.engines.llamacpp_quantize import check_format, quantize

    store = store or ModelStore()
    manifest = store.get(name).original()
    if manifest.format != "gguf":
        raise InvalidParameterError(
            f"'{manifest.name}' is a {manifest.format} model; only GGUF models can be tuned."
        )
    original_format = str(manifest.info.quantization or "unknown").upper()
    wanted = [check_format(fmt) for fmt in formats]
    wanted = [fmt for fmt in dict.fromkeys(wanted) if fmt != original_format]
    if not wanted:
        raise InvalidParameterError(f"No format to try beside the original ({original_format}).")
    report = TuneReport(manifest.name, original_format, max_quality_loss, memory_budget)
    step = on_step or (lambda message: None)
    staging = store.staging(f"tune-{manifest.name}")
    try:
        step(f"Measuring the original file ({original_format})")
        baseline = measure_in_process(
            str(manifest.weights_path), threads=threads, repetitions=repetitions
        )
        report.candidates.append(
            _candidate(original_format, manifest.size_bytes, baseline, baseline, original=True)
        )
        files: dict[str, Path] = {}
        parameters = manifest.info.parameters or manifest.size_bytes * 2
        for fmt in wanted:
            step(f"Making and measuring {fmt}")
            target = staging / f"{manifest.name}-{fmt.lower()}.gguf"
            quantize(manifest.weights_path, target, fmt, parameters=parameters, threads=threads)
            measured = measure_in_process(str(target), threads=threads, repetitions=repetitions)
            report.candidates.append(_candidate(fmt, target.stat().st_size, measured, baseline))
            files[fmt] = target
        _judge(report)
        if keep and report.chosen:
            store.set_variant(
                manifest.name, files[report.chosen], report.chosen, reason=report.reason
            )
        elif keep:
            store.set_variant(manifest.name, None, None)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def _candidate(
    fmt: str, size: int, measured: Measurement, baseline: Measurement, *, original: bool = False
) -> Candidate:
    return Candidate(
        format=fmt,
        size_bytes=size,
        prompt_tokens_per_second=measured.prompt_tokens_per_second,
        generation_tokens_per_second=measured.generation_tokens_per_second,
        perplexity=measured.perplexity,
        agreement=round(agreement(measured.answers, baseline.answers), 3),
        original=original,
        quality_loss=round(measured.perplexity / baseline.perplexity - 1, 4),
        prompt_speedup=round(
            measured.prompt_tokens_per_second / baseline.prompt_tokens_per_second, 3
        ),
        generation_speedup=round(
            measured.generation_tokens_per_second / baseline.generation_tokens_per_second, 3
        ),
    )


def _judge(report: TuneReport) -> None:
    """Mark what fits and what is Pareto-optimal, and choose the fastest acceptable candidate."""
    for candidate in report.candidates:
        if candidate.quality_loss > report.max_quality_loss:
            candidate.fits = False
            candidate.note = f"perplexity +{candidate.quality_loss:.1%}"
        elif report.memory_budget is not None and candidate.size_bytes > report.memory_budget:
            candidate.fits = False
            candidate.note = "over the memory budget"
    for candidate in report.candidates:
        candidate.pareto = not any(_dominates(other, candidate) for other in report.candidates)
    acceptable = [c for c in report.candidates if c.fits and not c.original]
    best = max(acceptable, key=lambda c: c.speedup, default=None)
    if best is None or best.speedup < MIN_SPEEDUP:
        report.chosen = None
        report.reason = (
            f"no format was more than {MIN_SPEEDUP - 1:.0%} faster within "
            f"{report.max_quality_loss:.1%} perplexity; the original stays"
        )
        return
    best.note = "chosen"
    report.chosen = best.format
    report.reason = (
        f"{best.prompt_speedup:.2f}x prompt and {best.generation_speedup:.2f}x generation speed "
        f"of the original {report.original_format} on this machine, perplexity "
        f"{best.quality_loss:+.1%} (limit {report.max_quality_loss:.1%})"
    )


def _dominates(a: Candidate, b: Candidate) -> bool:
    """a is at least as fast at both and at least as good, and differs from b somewhere."""
    at_least = (
        a.prompt_speedup >= b.prompt_speedup
        and a.generation_speedup >= b.generation_speedup
        and a.quality_loss <= b.quality_loss
    )
    facts = (a.prompt_speedup, a.generation_speedup, a.quality_loss)
    return at_least and facts != (b.prompt_speedup, b.generation_speedup, b.quality_loss)


def describe_variant(manifest: ModelManifest) -> str | None:
    """One line for `show`: which file is used and why."""
    if not manifest.variant:
        return None
    return (
        f"runs as {manifest.variant['format']} (tuned for this machine: "
        f"{manifest.variant['reason']}); `{manifest.name}:original` is the file as published"
    )
