"""`llmkit tune`: the weight format this machine runs a model fastest in, within a quality bound."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from llmkit.cli import options as opt
from llmkit.cli.output import error_console, escape, human_size, print_json, print_table, say

if TYPE_CHECKING:
    from llmkit.tuning.tune import TuneReport


def tune(
    model: Annotated[str, typer.Argument(help="A GGUF model from `llmkit list`.")] = "smollm2",
    max_quality_loss: Annotated[
        str,
        typer.Option(
            "--max-quality-loss",
            help="The most perplexity may rise over the original's, e.g. 1% or 0.005.",
        ),
    ] = "1%",
    memory_budget: Annotated[
        str | None,
        typer.Option(
            "--memory-budget", help="The largest weights file to accept, e.g. 500MB or 1.5GiB."
        ),
    ] = None,
    formats: Annotated[
        str | None,
        typer.Option(
            "--formats",
            help="Comma-separated formats to try (default: Q8_0,Q6_K,Q5_K_M,Q4_K_M,Q4_0).",
        ),
    ] = None,
    repetitions: Annotated[
        int,
        typer.Option(
            help="Speed runs per format (the median counts).",
            callback=opt.at_least("--repetitions", 1, "run"),
        ),
    ] = 3,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Measure and report, but keep the model as it is.")
    ] = False,
    undo: Annotated[
        bool, typer.Option("--undo", help="Go back to the original file (nothing is measured).")
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="The whole report as JSON on stdout.")
    ] = False,
    threads: opt.Threads = None,
) -> None:
    """Try a model in other weight formats on this machine and keep the fastest acceptable one.

    Each format is made with llama.cpp's quantizer and measured in a fresh process: prompt and
    generation speed, perplexity on a reference text and agreement of greedy answers with the
    original. The fastest whose perplexity stays within --max-quality-loss is stored beside the
    original and used from then on; MODEL:original still runs the file as published.
    """
    from llmkit.store.store import ModelStore
    from llmkit.tuning.tune import DEFAULT_FORMATS, parse_bytes, parse_fraction
    from llmkit.tuning.tune import tune as run_tune

    store = ModelStore()
    if undo:
        manifest = store.set_variant(store.get(model).name, None, None)
        say("[bold]{}[/] runs its original file again.", manifest.name)
        return
    loss = parse_fraction(max_quality_loss)
    budget = parse_bytes(memory_budget) if memory_budget else None
    wanted = [f for f in formats.split(",") if f.strip()] if formats else list(DEFAULT_FORMATS)
    with error_console.status("") as status:
        report = run_tune(
            model,
            formats=wanted,
            max_quality_loss=loss,
            memory_budget=budget,
            threads=threads,
            repetitions=repetitions,
            store=store,
            on_step=lambda message: status.update(escape(message) + " ..."),
            keep=not dry_run,
        )
    if json_output:
        print_json(report.to_json())
        return
    _print_report(report, kept=not dry_run)


def _print_report(report: TuneReport, *, kept: bool) -> None:
    from rich.table import Table

    table = Table(title=f"{report.model} on this machine", title_justify="left")
    for header in ("format", "size", "prompt tok/s", "generation tok/s", "perplexity"):
        table.add_column(header, justify="left" if header == "format" else "right")
    table.add_column("same greedy tokens", justify="right")
    table.add_column("")
    for c in report.candidates:
        label = f"{c.format} (original)" if c.original else c.format
        marks = ", ".join(part for part in (c.note, "pareto" if c.pareto else "") if part)
        table.add_row(
            escape(label),
            human_size(c.size_bytes),
            f"{c.prompt_tokens_per_second:.0f} ({c.prompt_speedup:.2f}x)",
            f"{c.generation_tokens_per_second:.0f} ({c.generation_speedup:.2f}x)",
            f"{c.perplexity:.2f} ({c.quality_loss:+.1%})",
            f"{c.agreement:.0%}",
            escape(marks),
        )
    print_table(table)
    if report.chosen is None:
        say("Kept the original: {}.", report.reason)
    elif kept:
        say(
            "[bold]{}[/] now runs as {}: {}. Undo: llmkit tune {} --undo",
            report.model, report.chosen, report.reason, report.model,
        )  # fmt: skip
    else:
        say("Would choose {}: {} (--dry-run: nothing changed).", report.chosen, report.reason)


def register(app: typer.Typer) -> None:
    app.command()(tune)
