"""`llmkit bench`: speed and memory of a model, engine beside engine."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated

import typer

from llmkit.cli import options as opt
from llmkit.cli.output import error_console, escape, print_json, print_table

if TYPE_CHECKING:
    from llmkit.bench import BenchResult


def bench(
    model: Annotated[str, typer.Argument(help="Model name or GGUF path.")] = "smollm2",
    engines: Annotated[
        list[str] | None,
        typer.Option(
            "--engine", "-e", help="Engine to measure; repeat to compare (default: llamacpp)."
        ),
    ] = None,
    prompt_tokens: Annotated[
        int,
        typer.Option(
            help="Prompt length for the prefill measurement.",
            callback=opt.at_least("--prompt-tokens", 1, "token"),
        ),
    ] = 128,
    generate_tokens: Annotated[
        int,
        typer.Option(
            help="Tokens to generate per run.",
            callback=opt.at_least("--generate-tokens", 2, "tokens"),
        ),
    ] = 64,
    repetitions: Annotated[
        int,
        typer.Option(
            help="Runs per engine (the median is reported).",
            callback=opt.at_least("--repetitions", 1, "run"),
        ),
    ] = 3,
    threads: opt.Threads = None,
    context: opt.Context = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Measure load time, prompt processing and generation speed, time to first token, peak memory."""
    from rich.progress import Progress, SpinnerColumn, TimeElapsedColumn

    from llmkit.bench import run_benchmarks

    engines = engines or [opt.DEFAULT_ENGINE]
    with Progress(
        SpinnerColumn(),
        "{task.description}",
        "{task.completed}/{task.total}",
        TimeElapsedColumn(),
        console=error_console,
        transient=True,
    ) as progress:
        task = progress.add_task("Benchmarking", total=len(engines))

        def started(engine: str) -> None:
            done = len(engines) - engines[::-1].index(engine) - 1
            progress.update(
                task,
                completed=done,
                description=f"Benchmarking {escape(model)} on {escape(engine)}",
            )

        results = run_benchmarks(
            model,
            engines,
            on_start=started,
            prompt_tokens=prompt_tokens,
            generate_tokens=generate_tokens,
            repetitions=repetitions,
            threads=threads,
            context_length=context,
        )
        progress.update(task, completed=len(engines))
    if json_output:
        print_json([asdict(r) for r in results])
        return
    from rich.table import Table

    table = Table(
        "engine",
        "load (s)",
        "prompt tok/s",
        "generation tok/s",
        "first token (ms)",
        "peak memory (MB)",
        title=f"{escape(model)}: {results[0].prompt_tokens}-token prompt, "
        f"{results[0].generated_tokens} generated, median (min-max) of {repetitions}",
    )

    def spread(result: BenchResult, name: str, scale: float, digits: int) -> str:
        low, middle, high = (value * scale for value in result.spread[name])
        return f"{middle:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"

    for r in results:
        table.add_row(
            escape(r.engine),
            f"{r.load_seconds:.2f}",
            spread(r, "prompt_tokens_per_second", 1, 0),
            spread(r, "generation_tokens_per_second", 1, 1),
            spread(r, "time_to_first_token_seconds", 1000, 0),
            f"{r.peak_memory_mb:.0f}",
        )
    print_table(table)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
