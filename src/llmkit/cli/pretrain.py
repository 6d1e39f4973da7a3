"""`llmkit pretrain`: train a small llama model from nothing on text, and put it into the store."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from llmkit.cli.options import settings_options
from llmkit.cli.output import console, error_console, human_size, say
from llmkit.cli.train_progress import ProgressBar, ProgressLines, duration
from llmkit.train.pretrain_config import PretrainConfig


@settings_options(PretrainConfig)
def pretrain(
    *,
    data: Annotated[
        list[str] | None,
        typer.Option(
            "--data",
            "-d",
            help="Training text, UTF-8 (repeat for several files; a line <|endoftext|> "
            "separates documents).",
        ),
    ] = None,
    **settings: Any,
) -> None:
    """Train a small llama model from nothing on next-word prediction and export it as GGUF.

    Options other than --data are llmkit.train.PretrainConfig's, with its defaults.
    """
    _run(PretrainConfig(data=tuple(data or ()), **settings))


def _run(config: PretrainConfig) -> None:
    import os

    from llmkit.train.pretrain import pretrain as run_pretrain

    main = int(os.environ.get("RANK", "0")) == 0
    if not main:
        run_pretrain(config)  # rank 0 speaks for every process
        return
    if error_console.is_terminal:
        with ProgressBar("pretraining", "reading the corpus…") as bar:
            result = run_pretrain(config, progress=_shown_on(bar), log=bar.log)
    else:
        lines = ProgressLines(config.log_every)
        result = run_pretrain(config, progress=_shown_on(lines), log=lines.log)
    _report(result, config.export)


def status(step: Any) -> str:
    """loss, tokens seen, tokens per parameter against Chinchilla's ~20, speed and time left."""
    from llmkit.train.pretrain import CHINCHILLA_TOKENS_PER_PARAMETER

    metrics = step.metrics
    return (
        f"loss {metrics.loss:.3f}  {metrics.tokens:,} tokens "
        f"({step.tokens_per_parameter:.2f}/param, Chinchilla ~{CHINCHILLA_TOKENS_PER_PARAMETER})  "
        f"{metrics.tokens_per_second:,.0f} tok/s  ETA {duration(metrics.eta)}"
    )


def _shown_on(target: ProgressBar | ProgressLines) -> Any:
    def show(step: Any) -> None:
        target.show(step.metrics.step, step.metrics.total_steps, status(step))
        if step.sample is not None:
            target.log(
                f"step {step.metrics.step}: held-out loss {step.eval_loss:.3f}; sample: "
                f"…{step.sample!r}"
            )

    return show


def _report(result: Any, export: str) -> None:
    import math
    import shlex

    from llmkit.store.store import ModelStore

    console.print(
        f"held-out loss {result.eval_loss:.3f} (perplexity {math.exp(result.eval_loss):,.1f}); "
        f"a unigram model: {result.unigram_loss:.3f} (perplexity {math.exp(result.unigram_loss):,.1f})"
    )
    console.print(
        f"{result.parameters / 1e6:.2f}M parameters trained on {result.tokens:,} tokens "
        f"({result.tokens / result.parameters:.2f} per parameter) in {result.steps} steps, "
        f"{result.tokens_per_second:,.0f} tokens/s"
    )
    say("metrics, loss curve and tokenizer: {}", result.run_dir)
    for note in result.notes:
        say("{}", note)
    if result.exported:
        manifest = ModelStore().resolve(result.exported)
        say(
            "Exported into the store as [bold]{}[/] ({} GGUF, {}). Try:",
            result.exported,
            export.upper(),
            human_size(manifest.size_bytes),
        )
        for command in (
            ["llmkit", "run", result.exported, "--raw", "The"],
            ["llmkit", "next", result.exported, "The"],
        ):
            say("  {}", shlex.join(command))


def register(app: typer.Typer) -> None:
    app.command("pretrain")(pretrain)
