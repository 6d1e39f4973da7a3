"""Run lm-eval on one loaded model over local tasks, and keep the figures a person reads."""

from __future__ import annotations

import importlib
import logging
import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
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
    require_module("lm_eval", feature="llmkit eval", extra="eval")


# Set for the lm-eval work only, where the user has not set them: the datasets library reads
# local files without asking a hub first, and lm-eval's and datasets' bars stay off (llmkit
# shows its own progress). tqdm and datasets read the bar switches when first imported; where
# that is inside the scope (as in `llmkit eval`), their bars stay off after it.
LOCAL_ONLY = {
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_OFFLINE": "1",
    "TQDM_DISABLE": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
}


@contextmanager
def local_only() -> Iterator[None]:
    """Around lm-eval's task loading and evaluation: no hub is asked, and afterwards the process
    is as it was (os.environ exactly, huggingface_hub's and datasets' offline settings), so a
    later hub download in this process, or a subprocess, is not left offline.

    huggingface_hub reads HF_HUB_OFFLINE once, when `huggingface_hub.constants` is first
    imported: it is imported before anything is set, so it keeps the user's own setting. The
    datasets library decides at its import too (`datasets.config.HF_HUB_OFFLINE`: from
    HF_DATASETS_OFFLINE when that is set, else from huggingface_hub's setting), so its flag is
    set for the scope whether datasets was imported before or is imported now, and put back.
    """
    import huggingface_hub.constants  # noqa: F401  (read now: the user's own setting)

    environ = dict(os.environ)
    loaded: Any = sys.modules.get("datasets.config")
    flags = None if loaded is None else (loaded.HF_HUB_OFFLINE, loaded.HF_DATASETS_OFFLINE)
    for name, value in LOCAL_ONLY.items():
        os.environ.setdefault(name, value)
    try:
        with suppress(ImportError):  # lm-eval depends on datasets; without it nothing is read
            importlib.import_module("datasets.config")
        _set_datasets_offline()  # HF_DATASETS_OFFLINE=0 of the user's own still lets it ask
        yield
    finally:
        for name in set(os.environ) - set(environ):  # lm-eval sets a few at its import too
            del os.environ[name]
        for name, value in environ.items():
            if os.environ.get(name) != value:
                os.environ[name] = value
        _set_datasets_offline(flags)  # imported in the scope: what the user's environment says


def _set_datasets_offline(flags: tuple[bool, bool] | None = None) -> None:
    """Give the datasets library, where imported, these offline flags, or else those it takes
    from the environment as it is now, by its own rule: HF_DATASETS_OFFLINE where that is set,
    huggingface_hub's setting where not."""
    config: Any = sys.modules.get("datasets.config")
    if config is None:
        return
    if flags is None:
        from huggingface_hub import constants

        value = os.environ.get("HF_DATASETS_OFFLINE")
        offline = (
            bool(constants.HF_HUB_OFFLINE)
            if value is None
            else value.upper() in config.ENV_VARS_TRUE_VALUES
        )
        flags = (offline, offline)
    config.HF_HUB_OFFLINE, config.HF_DATASETS_OFFLINE = flags


def load_tasks(specs: list[TaskSpec]) -> list[Any]:
    """lm-eval's Task objects for the specs, their data read; a task lm-eval cannot load is one
    sentence (called before any model is loaded, so a bad task fails at once)."""
    require_lm_eval()
    _quiet()
    with local_only():
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
    with local_only():
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
