"""What a training run records: one JSON line per step, and a loss-curve picture at the end."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "loss.png"


@dataclass(frozen=True)
class StepMetrics:
    step: int
    total_steps: int
    loss: float
    lr: float
    tokens: int  # tokens processed so far (padding not counted), all processes
    tokens_per_second: float
    elapsed: float  # seconds of training in this process (since start or resume)
    eta: float  # seconds left, at the current speed

    def to_json(self) -> dict[str, Any]:
        return {"event": "step", **asdict(self)}


class MetricsLog:
    """metrics.jsonl in the run folder; on resume, lines after the checkpoint are dropped."""

    def __init__(self, run_dir: Path, resume_step: int | None) -> None:
        self.path = run_dir / METRICS_FILE
        run_dir.mkdir(parents=True, exist_ok=True)
        kept = []
        if resume_step is not None and self.path.exists():
            for line in self.path.read_text().splitlines():
                record = json.loads(line)
                if record.get("event") != "step" or record["step"] <= resume_step:
                    kept.append(line)
        self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def steps(self) -> list[dict[str, Any]]:
        records = [json.loads(line) for line in self.path.read_text().splitlines()]
        return [record for record in records if record.get("event") == "step"]


def plot_loss(
    log: MetricsLog,
    path: Path,
    evals: dict[str, float] | None = None,
    curves: dict[str, list[tuple[int, float]]] | None = None,
    levels: dict[str, float] | None = None,
) -> Path | None:
    """The training loss by step as a PNG (and the eval loss before/after as dots); None without matplotlib.

    CURVES are further (step, loss) series (held-out loss during pretraining), LEVELS horizontal
    lines to compare against (a unigram model's loss)."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = log.steps()
    figure, axes = plt.subplots(figsize=(7, 4), dpi=100)
    axes.plot([r["step"] for r in steps], [r["loss"] for r in steps], label="train loss")
    if evals:
        if "before" in evals:
            axes.scatter([0], [evals["before"]], color="tab:red", label="eval loss (before)")
        if "after" in evals and steps:
            axes.scatter(
                [steps[-1]["step"]], [evals["after"]], color="tab:green", label="eval loss (after)"
            )
    for label, points in (curves or {}).items():
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    for label, value in (levels or {}).items():
        axes.axhline(value, linestyle="--", color="gray", label=label)
    axes.set_xlabel("step")
    axes.set_ylabel("loss (nats per token)")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
