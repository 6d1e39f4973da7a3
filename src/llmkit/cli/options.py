"""Options shared by the commands that load a model (run, chat, bench), declared once."""

from __future__ import annotations

from typing import Annotated, Any

import typer

Engine = Annotated[
    str, typer.Option("--engine", "-e", help="llamacpp (default; GGUF) or transformers (PyTorch).")
]
Context = Annotated[
    int | None,
    typer.Option(
        "--context", "-c", help="Context window in tokens (default: the model's, at most 4096)."
    ),
]
Threads = Annotated[int | None, typer.Option("--threads", help="CPU threads (default: all cores).")]
Template = Annotated[
    str | None,
    typer.Option(
        "--template", help="A built-in template name or a .jinja file, instead of the model's."
    ),
]
System = Annotated[str | None, typer.Option("--system", "-s", help="System prompt.")]
Temperature = Annotated[
    float | None,
    typer.Option("--temperature", "-t", help="0 = greedy; higher = more random (default 0.7)."),
]
TopK = Annotated[
    int | None, typer.Option("--top-k", help="Sample from the k most likely tokens (0 = off).")
]
TopP = Annotated[
    float | None,
    typer.Option("--top-p", help="Sample from the smallest set with this much probability."),
]
MinP = Annotated[
    float | None, typer.Option("--min-p", help="Drop tokens less likely than min-p x the best one.")
]
RepeatPenalty = Annotated[
    float | None,
    typer.Option("--repeat-penalty", help="Penalty for repeating recent tokens (1 = off)."),
]
Seed = Annotated[int | None, typer.Option("--seed", help="Random seed, for repeatable sampling.")]
MaxTokens = Annotated[
    int | None, typer.Option("--max-tokens", "-n", help="Stop after this many tokens.")
]
Stop = Annotated[
    list[str] | None, typer.Option("--stop", help="Stop when this text appears (repeatable).")
]
Verbose = Annotated[bool, typer.Option("--verbose", help="Show the engine's own log.")]


def sampling_overrides(**values: Any) -> dict[str, Any]:
    """The sampling options the user actually gave (None means 'use the model's default')."""
    return {key: value for key, value in values.items() if value not in (None, [])}


def load_model(
    model: str,
    engine: str,
    context: int | None,
    threads: int | None,
    template: str | None,
    verbose: bool = False,
):
    """Load a model for the CLI with a spinner on stderr."""
    from llmkit.chat.template import template_argument
    from llmkit.cli.output import error_console
    from llmkit.model import load

    template_text = template_argument(template) if template else None
    with error_console.status(f"Loading {model} ({engine})…"):
        return load(
            model,
            engine=engine,
            context_length=context,
            threads=threads,
            template=template_text,
            verbose=verbose,
        )
