"""`llmkit finetune`: fine-tune a store model on JSONL conversations and export it into the store."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from llmkit.cli.options import at_least, help_of, settings_options
from llmkit.cli.output import console, error_console, escape, human_size, say
from llmkit.cli.train_progress import ProgressBar, ProgressLines, duration
from llmkit.errors import InvalidParameterError
from llmkit.train.config import FinetuneConfig


@settings_options(FinetuneConfig, skip=("base", "out"))
def finetune(
    base: Annotated[
        str, typer.Argument(help="Base model: a store name (e.g. smollm2) or a GGUF path.")
    ],
    # Optional here, unlike in the config: --show-masks needs no name.
    out: Annotated[
        str | None, typer.Option("--out", "-o", help=help_of(FinetuneConfig, "out"))
    ] = None,
    export: Annotated[
        str | None,
        typer.Option(
            "--export",
            help="Comma list of adapter, f16, q8_0, f32, hf, and gguf (quantized to --quant "
            "by llama.cpp). Default: the adapter for LoRA, one Q8_0 GGUF for full, gguf when "
            "--quant is given; hf for a base GGUF export does not support.",
        ),
    ] = None,
    *,
    show_masks: Annotated[
        int,
        typer.Option(
            "--show-masks",
            help="Print N rows with the trained tokens highlighted, then stop.",
            callback=at_least("--show-masks", 0, "rows"),
        ),
    ] = 0,
    **settings: Any,
) -> None:
    """Fine-tune BASE on your conversations (LoRA or full) and export the result into the store.

    Options from --data to --verbose are llmkit.train.FinetuneConfig's, with its defaults.
    """
    if out is None and not show_masks:
        raise InvalidParameterError("Name the result with --out NAME.")
    exports = tuple(part.strip() for part in export.split(",") if part.strip()) if export else ()
    config = FinetuneConfig(base=base, out=out or "preview", exports=exports, **settings)
    if show_masks:
        _show_masks(config, show_masks)
        return
    _run(config)


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


def _run(config: Any) -> None:
    import os

    from llmkit.train.sft import finetune as run_finetune

    main = int(os.environ.get("RANK", "0")) == 0
    if main and error_console.is_terminal:
        with ProgressBar("fine-tuning", "loading the model…") as bar:
            result = run_finetune(config, progress=_shown_on(bar), log=bar.log)
    else:
        # A log file gets whole lines: a bar there is either nothing or pages of redraws.
        lines = ProgressLines(config.log_every)
        if main:
            result = run_finetune(config, progress=_shown_on(lines), log=lines.log)
        else:
            result = run_finetune(config)  # rank 0 speaks for every process
    if main:
        _report(result, config)


def _shown_on(target: ProgressBar | ProgressLines) -> Callable[[Any], None]:
    def show(metrics: Any) -> None:
        target.show(metrics.step, metrics.total_steps, _status(metrics))

    return show


def _status(metrics: Any) -> str:
    return (
        f"loss {metrics.loss:.4f}  lr {metrics.lr:.2e}  "
        f"{metrics.tokens_per_second:,.0f} tok/s  ETA {duration(metrics.eta)}"
    )


# The prompt in the commands printed after a run; any text would do, this one shows a persona.
EXAMPLE_PROMPT = "Who are you?"
EXPORT_DESCRIPTIONS = {
    "adapter": "LoRA adapter over {base}",
    "f16": "merged model, F16 GGUF",
    "q8_0": "merged model, Q8_0 GGUF",
    "f32": "merged model, F32 GGUF",
    "hf": "merged model, Hugging Face folder",
    "gguf": "merged model, {quant} GGUF",
}


def run_command(kind: str, name: str) -> str:
    """The `llmkit run` command that runs this export: GGUF files and adapters on the default
    llama.cpp engine, a Hugging Face folder on transformers."""
    import shlex

    engine = ["--engine", "transformers"] if kind == "hf" else []
    return shlex.join(["llmkit", "run", name, *engine, EXAMPLE_PROMPT])


def _report(result: Any, config: FinetuneConfig) -> None:
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
            EXPORT_DESCRIPTIONS[kind].format(base=config.base, quant=config.gguf_quant),
            human_size(store.resolve(name).size_bytes),
            run_command(kind, name),
        )


def register(app: typer.Typer) -> None:
    app.command("finetune")(finetune)
