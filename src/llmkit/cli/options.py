"""Options shared by the verbs, declared and validated once (run, chat, prompt, bench, plan)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from llmkit.engines import ENGINE_NAMES
from llmkit.errors import InvalidParameterError

if TYPE_CHECKING:
    from llmkit.model import Model

# The engine a verb uses when none is named (the first of ENGINE_NAMES, the library's default).
DEFAULT_ENGINE = ENGINE_NAMES[0]


def default_of(config: type, name: str) -> Any:
    """The default of a settings dataclass field (FinetuneConfig, ServerSettings...), so an
    option's default is written once, beside the setting, and never repeated in the CLI."""
    for setting in dataclasses.fields(config):
        if setting.name == name:
            if setting.default is dataclasses.MISSING:
                raise TypeError(f"{config.__name__}.{name} has no plain default")
            return setting.default
    raise TypeError(f"{config.__name__} has no field {name!r}")


def at_least(flag: str, minimum: int, unit: str = "") -> Callable[[int | None], int | None]:
    """An option callback refusing numbers below `minimum` with one sentence (None passes)."""
    least = f"{minimum} {unit}".strip()

    def check(value: int | None) -> int | None:
        if value is not None and value < minimum:
            raise InvalidParameterError(f"{flag} must be at least {least} (got {value}).")
        return value

    return check


def fraction(flag: str) -> Callable[[float | None], float | None]:
    """An option callback accepting numbers in (0, 1]."""

    def check(value: float | None) -> float | None:
        if value is not None and not 0 < value <= 1:
            raise InvalidParameterError(f"{flag} must be above 0 and at most 1 (got {value}).")
        return value

    return check


Engine = Annotated[
    str, typer.Option("--engine", "-e", help="llamacpp (default; GGUF) or transformers (PyTorch).")
]
Context = Annotated[
    int | None,
    typer.Option(
        "--context",
        "-c",
        help="Context window in tokens (default: the model's, at most 4096).",
        callback=at_least("--context", 1, "token"),
    ),
]
Threads = Annotated[
    int | None,
    typer.Option(
        "--threads",
        help="CPU threads (default: all cores).",
        callback=at_least("--threads", 1, "thread"),
    ),
]
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
) -> Model:
    """Load a model for the CLI with a spinner on stderr."""
    from llmkit.chat.template import template_argument
    from llmkit.cli.output import error_console, escape
    from llmkit.model import load

    template_text = template_argument(template) if template else None
    first_use = _built_in_not_yet_registered(model)
    with error_console.status(f"Loading {escape(model)} ({escape(engine)})…"):
        loaded = load(
            model,
            engine=engine,
            context_length=context,
            threads=threads,
            template=template_text,
            verbose=verbose,
        )
    if first_use and loaded.manifest.format == "gguf" and not loaded.manifest.variant:
        # One line, once: a built-in ships in one weight format, which may not be this
        # machine's fastest (docs/tuning.md).
        error_console.print(
            f"[dim]Tip: `llmkit tune {escape(model)}` measures which weight format runs it "
            "fastest on this machine (a few minutes).[/]"
        )
    return loaded


def _built_in_not_yet_registered(model: str) -> bool:
    from llmkit.store.catalog import BUILTIN_MODELS
    from llmkit.store.store import ModelStore

    return model in BUILTIN_MODELS and not ModelStore().has(model)
