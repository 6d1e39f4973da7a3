"""`llmkit eval`: score models with EleutherAI's lm-eval harness on local tasks, side by side."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from llmkit.cli import options as opt
from llmkit.cli.output import error_console, escape, print_json, print_table, say

if TYPE_CHECKING:
    from llmkit.evaluation.runner import ModelScores


def eval_command(
    models: Annotated[
        list[str],
        typer.Argument(help="Model name(s) from `llmkit list`, or GGUF paths.", show_default=False),
    ],
    compare: Annotated[
        bool,
        typer.Option(
            "--compare", help="Score several models side by side: --compare A B C, one table."
        ),
    ] = False,
    task: Annotated[
        list[str] | None,
        typer.Option(
            "--task",
            help="A built-in task (llmkit-facts, the default) or a multiple-choice .jsonl file "
            'of {"question", "choices", "answer"} lines (repeatable).',
        ),
    ] = None,
    task_file: Annotated[
        list[Path] | None,
        typer.Option("--task-file", help="An lm-eval YAML task of your own (repeatable)."),
    ] = None,
    perplexity: Annotated[
        list[Path] | None,
        typer.Option(
            "--perplexity", help="A plain text file to measure perplexity on (repeatable)."
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit",
            help="Only the first N examples of each task (a quick check).",
            callback=opt.at_least("--limit", 1),
        ),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    engine: opt.Engine = opt.DEFAULT_ENGINE,
    context: opt.Context = None,
    threads: opt.Threads = None,
    verbose: opt.Verbose = False,
) -> None:
    """Score a model with lm-eval on local tasks: multiple-choice accuracy, perplexity.

    Without --task, --task-file or --perplexity it runs the built-in llmkit-facts set (40
    questions of astronomy and general knowledge). With --compare, several models are scored
    on the same tasks and shown side by side.
    """
    from llmkit.errors import InvalidParameterError
    from llmkit.evaluation.runner import evaluate, load_tasks
    from llmkit.evaluation.tasks import resolve_tasks

    if len(models) > 1 and not compare:
        raise InvalidParameterError(
            "llmkit eval scores one model; to score several side by side use --compare A B C."
        )
    if compare and len(models) < 2:
        raise InvalidParameterError("--compare needs two or more models.")
    if len(set(models)) != len(models):
        raise InvalidParameterError("A model is named twice.")
    specs = resolve_tasks(task or [], task_file or [], perplexity or [])
    load_tasks(specs)  # a task lm-eval cannot load fails before any model is loaded
    results: list[ModelScores] = []
    for name in models:
        loaded = opt.load_model(name, engine, context, threads, None, verbose)
        try:
            # A bar only on a terminal, and not over the engine's own log (--verbose).
            hidden = verbose or not error_console.is_terminal
            with _progress(loaded.name, hidden=hidden) as update:
                scores = evaluate(loaded, specs, limit=limit, progress=update)
        finally:
            loaded.close()
        results.append(scores)
        if scores.cut_requests:
            say(
                "[yellow]{}: {} requests were longer than the context window; their oldest "
                "tokens were left out (a larger --context keeps them).[/]",
                name,
                scores.cut_requests,
                err=True,
            )
        say("[dim]{}: scored in {} s[/]", name, f"{scores.seconds:.1f}", err=True)
    if json_output:
        print_json({"limit": limit, "models": [_as_json(scores) for scores in results]})
    else:
        _table(results)


@contextmanager
def _progress(model: str, *, hidden: bool) -> Iterator[Callable[[int, int, str], None]]:
    """A bar on stderr over the requests lm-eval sends (each answer of each question)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=error_console,
        transient=True,
        disable=hidden,
    ) as progress:
        bar = progress.add_task(escape(model), total=None)

        def update(done: int, total: int, kind: str) -> None:
            progress.update(
                bar, completed=done, total=total, description=escape(f"{model}: {kind}")
            )

        yield update


def _as_json(scores: ModelScores) -> dict[str, object]:
    return {
        "model": scores.model,
        "engine": scores.engine,
        "seconds": round(scores.seconds, 3),
        "samples": scores.samples,
        "scores": scores.scores,
        "stderr": scores.stderr,
        "cut_requests": scores.cut_requests,
    }


def _number(value: float) -> str:
    return f"{value:.3f}" if abs(value) < 100 else f"{value:,.1f}"


def _table(results: list[ModelScores]) -> None:
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("task")
    table.add_column("metric")
    table.add_column("n", justify="right")
    for scores in results:
        table.add_column(scores.model, justify="right")
    first = results[0]
    for task, metrics in first.scores.items():
        for metric in metrics:
            cells = []
            for scores in results:
                value = scores.scores.get(task, {}).get(metric)
                error = scores.stderr.get(task, {}).get(metric)
                cell = "-" if value is None else _number(value)
                cells.append(cell if error is None else f"{cell} ± {_number(error)}")
            table.add_row(task, metric, str(first.samples.get(task, "")), *cells)
    table.add_row("time", "seconds", "", *(f"{scores.seconds:.1f}" for scores in results))
    print_table(table)


def register(app: typer.Typer) -> None:
    app.command("eval", no_args_is_help=True)(eval_command)
