"""`llmkit finetune`: fine-tune a store model on JSONL conversations and export it into the store."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from llmkit.cli.options import at_least
from llmkit.cli.output import console, error_console, escape, human_size, say
from llmkit.errors import InvalidParameterError


def finetune(
    base: Annotated[
        str, typer.Argument(help="Base model: a store name (e.g. smollm2) or a GGUF path.")
    ],
    data: Annotated[
        str,
        typer.Option(
            "--data", "-d", help="Training data, JSONL (messages, prompt/completion or text rows)."
        ),
    ],
    out: Annotated[
        str | None,
        typer.Option(
            "--out",
            "-o",
            help="Store name of the result (with several exports, the others get -f16, -q8, -hf).",
        ),
    ] = None,
    eval_data: Annotated[str | None, typer.Option("--eval", help="Evaluation data, JSONL.")] = None,
    eval_split: Annotated[
        float | None,
        typer.Option("--eval-split", help="Hold out this fraction of --data for evaluation."),
    ] = None,
    method: Annotated[str, typer.Option("--method", help="lora (default) or full.")] = "lora",
    epochs: Annotated[int, typer.Option("--epochs", help="Passes over the data.")] = 1,
    max_steps: Annotated[
        int | None,
        typer.Option(
            "--max-steps", help="Stop after this many optimizer steps (overrides --epochs)."
        ),
    ] = None,
    lr: Annotated[
        float, typer.Option("--lr", help="Peak learning rate (linear decay to 0).")
    ] = 2e-4,
    warmup_steps: Annotated[
        int, typer.Option("--warmup-steps", help="Steps of linear warm-up.")
    ] = 0,
    batch_size: Annotated[
        int, typer.Option("--batch-size", "-b", help="Sequences per micro-batch (per process).")
    ] = 4,
    grad_accum: Annotated[
        int, typer.Option("--grad-accum", help="Micro-batches per optimizer step.")
    ] = 1,
    max_length: Annotated[
        int, typer.Option("--max-length", help="Longest sequence in tokens.")
    ] = 512,
    too_long: Annotated[
        str,
        typer.Option(
            "--too-long", help="Rows over --max-length: truncate or drop (always reported)."
        ),
    ] = "truncate",
    packing: Annotated[
        bool,
        typer.Option("--packing", help="Pack short rows into --max-length sequences (no padding)."),
    ] = False,
    lora_r: Annotated[int, typer.Option("--lora-r", help="LoRA rank.")] = 16,
    lora_alpha: Annotated[
        float, typer.Option("--lora-alpha", help="LoRA alpha (scale = alpha / r).")
    ] = 32.0,
    lora_dropout: Annotated[
        float, typer.Option("--lora-dropout", help="Dropout on the LoRA input.")
    ] = 0.0,
    lora_targets: Annotated[
        str, typer.Option("--lora-targets", help="all, attention, qv, mlp or a list like q,v,down.")
    ] = "all",
    seed: Annotated[
        int, typer.Option("--seed", help="Seed for data order and LoRA initialisation.")
    ] = 0,
    template: Annotated[
        str | None,
        typer.Option(
            "--template", help="Chat template (built-in name or file) for a base without one."
        ),
    ] = None,
    export: Annotated[
        str | None,
        typer.Option(
            "--export",
            help="Comma list of adapter, f16, q8_0, f32, hf (default: the adapter for LoRA, "
            "one Q8_0 GGUF for full; hf for a base GGUF export does not support).",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace store models with the same names.")
    ] = False,
    device: Annotated[
        str | None, typer.Option("--device", help="cpu or cuda (default: cuda when present).")
    ] = None,
    gradient_checkpointing: Annotated[
        bool, typer.Option("--gradient-checkpointing", help="Recompute activations to save memory.")
    ] = False,
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
            "--run-dir", help="Metrics, loss plot and checkpoints (default: LLMKIT_HOME/runs/OUT)."
        ),
    ] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", help="CPU threads for training.")
    ] = None,
    allow_pickle: Annotated[
        bool,
        typer.Option(
            "--allow-pickle",
            help="Accept a base model whose only weights are pickles (loading them can run code).",
        ),
    ] = False,
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
    show_masks: Annotated[
        int,
        typer.Option(
            "--show-masks", help="Print N rows with the trained tokens highlighted, then stop."
        ),
    ] = 0,
) -> None:
    """Fine-tune BASE on your conversations (LoRA or full) and export the result into the store."""
    from llmkit.train.config import FinetuneConfig

    if out is None and not show_masks:
        raise InvalidParameterError("Name the result with --out NAME.")
    config = FinetuneConfig(
        base=base, data=data, out=out or "preview", eval_data=eval_data, eval_split=eval_split,
        method=method, epochs=epochs, max_steps=max_steps, lr=lr, warmup_steps=warmup_steps,
        batch_size=batch_size, grad_accum=grad_accum, max_length=max_length, too_long=too_long,
        packing=packing, lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
        lora_targets=lora_targets, seed=seed, template=template,
        exports=tuple(part.strip() for part in export.split(",") if part.strip()) if export else (),
        force=force, device=device, gradient_checkpointing=gradient_checkpointing,
        checkpoint_every=checkpoint_every, resume=resume, run_dir=run_dir, threads=threads,
        allow_pickle=allow_pickle, verbose=verbose,
    )  # fmt: skip
    if show_masks:
        _show_masks(config, show_masks)
        return
    _run(config, log_every)


def _show_masks(config: Any, count: int) -> None:
    from llmkit.cli.model_text import Mark, print_marked
    from llmkit.train.masks import mask_segments
    from llmkit.train.prepare import prepare_run
    from llmkit.train.quiet import quiet_libraries

    # Piped, the trained text is bracketed, since a pipe carries no highlighting.
    trained_mark, context_mark = Mark("reverse green", "⟦", "⟧"), Mark("dim")
    with quiet_libraries(config.verbose):
        prepared = prepare_run(config, check_names=False)
    shown = "[reverse green]highlighted[/]" if console.is_terminal else "⟦bracketed⟧"
    console.print(
        f"[bold]{len(prepared.train)}[/] training rows; {shown} tokens are "
        "trained on (the loss covers them), the rest is context only.\n"
    )
    for example in prepared.train[:count]:
        console.print(
            f"[bold]{escape(example.source)}[/] ({len(example)} tokens, "
            f"{example.trained_tokens} trained)"
        )
        segments = mask_segments(example, prepared.detokenize)
        print_marked(
            [(piece, trained_mark if trained else context_mark) for piece, trained in segments]
        )
        console.print()


def _run(config: Any, log_every: int) -> None:
    import os

    from llmkit.train.sft import finetune as run_finetune

    main = int(os.environ.get("RANK", "0")) == 0
    if main and error_console.is_terminal:
        with _ProgressBar() as bar:
            result = run_finetune(config, progress=bar.show, log=bar.log)
    else:
        # A log file gets whole lines: a bar there is either nothing or pages of redraws.
        lines = _ProgressLines(log_every)
        if main:
            result = run_finetune(config, progress=lines.show, log=lines.log)
        else:
            result = run_finetune(config)  # rank 0 speaks for every process
    if main:
        _report(result, config.base)


def _status(metrics: Any) -> str:
    return (
        f"loss {metrics.loss:.4f}  lr {metrics.lr:.2e}  "
        f"{metrics.tokens_per_second:,.0f} tok/s  ETA {_duration(metrics.eta)}"
    )


class _ProgressBar:
    """The terminal's bar, which appears with the first message (errors found up front print
    without one)."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, Progress, TextColumn

        self.bar = Progress(
            TextColumn("[bold]fine-tuning"),
            BarColumn(),
            TextColumn("step {task.completed}/{task.total}"),
            TextColumn("{task.fields[status]}"),
            console=error_console,
        )
        self.task = self.bar.add_task("train", total=None, status="loading the model…")

    def __enter__(self) -> _ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def show(self, metrics: Any) -> None:
        self.bar.start()
        self.bar.update(
            self.task, completed=metrics.step, total=metrics.total_steps, status=_status(metrics)
        )

    def log(self, message: str) -> None:
        self.bar.start()
        self.bar.console.print(escape(message))


class _ProgressLines:
    """One plain line for the first step, every EVERY steps and the last, for logs and pipes."""

    def __init__(self, every: int) -> None:
        self.every = every

    def show(self, metrics: Any) -> None:
        step, total = metrics.step, metrics.total_steps
        if step == 1 or step % self.every == 0 or step == total:
            self.log(f"step {step}/{total}  {_status(metrics)}")

    def log(self, message: str) -> None:
        error_console.print(message, markup=False)


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}:{seconds:02d}"


# The prompt in the commands printed after a run; any text would do, this one shows a persona.
EXAMPLE_PROMPT = "Who are you?"
EXPORT_DESCRIPTIONS = {
    "adapter": "LoRA adapter over {base}",
    "f16": "merged model, F16 GGUF",
    "q8_0": "merged model, Q8_0 GGUF",
    "f32": "merged model, F32 GGUF",
    "hf": "merged model, Hugging Face folder",
}


def run_command(kind: str, name: str) -> str:
    """The `llmkit run` command that runs this export: GGUF files and adapters on the default
    llama.cpp engine, a Hugging Face folder on transformers."""
    import shlex

    engine = ["--engine", "transformers"] if kind == "hf" else []
    return shlex.join(["llmkit", "run", name, *engine, EXAMPLE_PROMPT])


def _report(result: Any, base: str) -> None:
    from rich.table import Table

    from llmkit.store.store import ModelStore

    table = Table(show_edge=False, header_style="bold", title="evaluation", title_justify="left")
    table.add_column("")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    if result.eval_before is not None:
        table.add_row("eval loss", f"{result.eval_before:.4f}", f"{result.eval_after:.4f}")
        table.add_row(
            "perplexity",
            f"{result.perplexity(result.eval_before):,.2f}",
            f"{result.perplexity(result.eval_after):,.2f}",
        )
        console.print(table)
    else:
        console.print(
            "No evaluation data (use --eval or --eval-split to compare before and after)."
        )
    console.print(
        f"final training loss {result.final_loss:.4f} after {result.steps} steps, "
        f"{result.tokens_per_second:,.0f} tokens/s"
    )
    say("metrics and loss curve: {}", result.run_dir)
    for note in result.notes:
        say("{}", note)
    store = ModelStore()
    say("Exported into the store (run it with the command beside it):")
    for kind, name in result.exports.items():
        say(
            "  [bold]{}[/]  {}, {}  →  {}",
            name,
            EXPORT_DESCRIPTIONS[kind].format(base=base),
            human_size(store.resolve(name).size_bytes),
            run_command(kind, name),
        )


def register(app: typer.Typer) -> None:
    app.command("finetune")(finetune)
