"""`llmkit pretrain`: train a small llama model from nothing on text, and put it into the store."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from llmkit.cli.options import at_least, default_of
from llmkit.cli.output import console, error_console, human_size, say
from llmkit.cli.train_progress import ProgressBar, ProgressLines, duration
from llmkit.train.pretrain_config import PretrainConfig


def _default(name: str) -> Any:
    return default_of(PretrainConfig, name)


def pretrain(
    out: Annotated[str, typer.Option("--out", "-o", help="Store name of the trained model.")],
    data: Annotated[
        list[str] | None,
        typer.Option(
            "--data",
            "-d",
            help="Training text, UTF-8 (repeat for several files; a line <|endoftext|> "
            "separates documents).",
        ),
    ] = None,
    demo: Annotated[
        bool,
        typer.Option(
            "--demo", help="Train on the demo corpus: the docstrings of Python's standard library."
        ),
    ] = False,
    size: Annotated[
        str, typer.Option("--size", help="tiny (~1.4M parameters), small (~14M) or a CONFIG.json.")
    ] = _default("size"),
    tokenizer: Annotated[
        str,
        typer.Option(
            "--tokenizer",
            help="train (a byte-level BPE learnt from the corpus) or a store model to reuse.",
        ),
    ] = _default("tokenizer"),
    tokens: Annotated[
        int | None,
        typer.Option("--tokens", help="Train on this many tokens (sets the number of steps)."),
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option("--steps", help="Optimizer steps (default: 250 for tiny, 2000 for small)."),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", "-b", help="Sequences per step (per process).")
    ] = _default("batch_size"),
    context: Annotated[
        int | None,
        typer.Option("--context", help="Tokens per sequence (default: the model's context)."),
    ] = None,
    lr: Annotated[
        float, typer.Option("--lr", help="Peak learning rate (cosine decay to a tenth).")
    ] = _default("lr"),
    warmup_steps: Annotated[
        int | None, typer.Option("--warmup-steps", help="Warm-up steps (default: 5% of them).")
    ] = None,
    eval_split: Annotated[
        float,
        typer.Option("--eval-split", help="The corpus's last fraction, held out for evaluation."),
    ] = _default("eval_split"),
    sample_every: Annotated[
        int | None,
        typer.Option(
            "--sample-every",
            help="Every N steps, print a sample continuation and the held-out loss "
            "(default: five times a run; 0: never).",
        ),
    ] = None,
    sample_prompt: Annotated[
        str | None,
        typer.Option(
            "--sample-prompt",
            help="Text the samples continue (default: the held-out text's start).",
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed for the weights and the data order.")
    ] = _default("seed"),
    export: Annotated[
        str, typer.Option("--export", help="GGUF tensor type: f16, q8_0 or f32.")
    ] = _default("export"),
    force: Annotated[
        bool, typer.Option("--force", help="Replace a store model with the same name.")
    ] = False,
    device: Annotated[
        str | None, typer.Option("--device", help="cpu or cuda (default: cuda when present).")
    ] = None,
    checkpoint_every: Annotated[
        int,
        typer.Option(
            "--checkpoint-every", help="Save a resumable checkpoint every N steps (0: never)."
        ),
    ] = 0,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the run's last checkpoint.")
    ] = False,
    run_dir: Annotated[
        str | None,
        typer.Option(
            "--run-dir",
            help="Metrics, loss plot, tokenizer, checkpoints (default: LLMKIT_HOME/runs/OUT).",
        ),
    ] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", help="CPU threads for training.")
    ] = None,
    log_every: Annotated[
        int,
        typer.Option(
            "--log-every",
            help="When stderr is not a terminal, print a progress line every N steps.",
            callback=at_least("--log-every", 1, "step"),
        ),
    ] = 10,
    verbose: Annotated[
        bool,
        typer.Option("--verbose", help="Show the libraries' own progress bars and warnings."),
    ] = False,
) -> None:
    """Train a small llama model from nothing on next-word prediction and export it as GGUF."""
    config = PretrainConfig(
        out=out, data=tuple(data or ()), demo=demo, size=size, tokenizer=tokenizer, tokens=tokens,
        steps=steps, batch_size=batch_size, context=context, lr=lr, warmup_steps=warmup_steps,
        eval_split=eval_split, sample_every=sample_every, sample_prompt=sample_prompt, seed=seed,
        export=export, force=force, device=device, checkpoint_every=checkpoint_every,
        resume=resume, run_dir=run_dir, threads=threads, verbose=verbose,
    )  # fmt: skip
    _run(config, log_every)


def _run(config: PretrainConfig, log_every: int) -> None:
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
        lines = ProgressLines(log_every)
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
