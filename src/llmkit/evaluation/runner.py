"""Run lm-eval on one loaded model over local tasks, and keep the figures a person reads."""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmkit.errors import LlmkitError, require_module

if TYPE_CHECKING:
    from llmkit.evaluation.adapter import Progress
    from llmkit.evaluation.tasks import TaskSpec
    from llmkit.model import Model

# Figures lm-eval reports beside the scores, that are not scores.
SKIPPED_KEYS = {"alias", "samples", "sample_len"}


@dataclass
class ModelScores:
    """One model's results: task -> metric -> value (and its standard error, where known)."""

    model: str
    engine: str
    seconds: float
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    stderr: dict[str, dict[str, float]] = field(default_factory=dict)
    samples: dict[str, int] = field(default_factory=dict)
    cut_requests: int = 0


def require_lm_eval() -> None:
    """lm-eval is an optional extra: say which one when it is missing."""
    # No hub is reachable: the datasets library must read local files without asking one first
    # (it reads these when it is imported).
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # lm-eval and datasets draw bars of their own; llmkit shows its own progress.
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    require_module("lm_eval", feature="llmkit eval", extra="eval")


def load_tasks(specs: list[TaskSpec]) -> list[Any]:
    """lm-eval's Task objects for the specs, their data read; a task lm-eval cannot load is one
    sentence (called before any model is loaded, so a bad task fails at once)."""
    require_lm_eval()
    _quiet()
    from lm_eval.tasks import TaskManager

    try:
        loaded = TaskManager(include_defaults=False).load([spec.config for spec in specs])
    except Exception as error:  # lm-eval and datasets raise many kinds for a bad task
        raise LlmkitError(f"lm-eval could not load the tasks: {_first_line(error)}") from error
    return list(loaded["tasks"].values())


def evaluate(
    model: Model,
    specs: list[TaskSpec],
    *,
    limit: int | None = None,
    progress: Progress | None = None,
) -> ModelScores:
    """Score one model on the tasks with lm-eval's own evaluator."""
    tasks = load_tasks(specs)  # fresh for each model: lm-eval keeps requests on its tasks
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from llmkit.evaluation.adapter import LlmkitLM

    lm = LlmkitLM(model, progress)
    started = time.perf_counter()
    results = simple_evaluate(
        model=lm,
        tasks=tasks,
        # Without one, lm-eval indexes its hundreds of built-in tasks first.
        task_manager=TaskManager(include_defaults=False),
        limit=limit,
        bootstrap_iters=1000,
        log_samples=False,
    )
    seconds = time.perf_counter() - started
    scores = ModelScores(model.name, model.engine.name, seconds, cut_requests=lm.cut_requests)
    for task, figures in (results or {}).get("results", {}).items():
        scores.scores[task], scores.stderr[task] = _figures(figures)
    for task, counts in (results or {}).get("n-samples", {}).items():
        scores.samples[task] = int(counts.get("effective", counts.get("original", 0)))
    return scores


def _figures(raw: dict[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    """lm-eval's 'acc,none' and 'acc_stderr,none' keys as {'acc': ...} and {'acc': stderr}."""
    values: dict[str, float] = {}
    errors: dict[str, float] = {}
    for key, value in raw.items():
        metric = key.split(",")[0]
        if metric in SKIPPED_KEYS or not isinstance(value, (int, float)):
            continue
        if metric.endswith("_stderr"):
            if math.isfinite(value):
                errors[metric.removesuffix("_stderr")] = float(value)
        else:
            values[metric] = float(value)
    return values, errors


def _quiet() -> None:
    # lm-eval and datasets log every step; only their errors are kept.
    for name in ("lm-eval", "lm_eval", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
