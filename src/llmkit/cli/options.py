"""Options shared by the verbs, declared and validated once (run, chat, prompt, bench, plan)."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from llmkit.engines import ENGINE_NAMES
from llmkit.errors import InvalidParameterError
from llmkit.settings import Option, option_of

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


Command = TypeVar("Command", bound=Callable[..., Any])


def settings_options(config: type, *, skip: Collection[str] = ()) -> Callable[[Command], Command]:
    """Give a command one option per field of the settings dataclass `config` that declares one
    (`llmkit.settings.setting`): flag, type, default, help and range check all come from the
    field, so none of them is written twice. The command takes them as `**settings`, ready for
    `config(**settings)`; its own positional-or-keyword parameters are listed before them in
    `--help`, its keyword-only ones after. Fields in `skip`, or that the command names itself,
    are left to the command.
    """

    def decorate(command: Command) -> Command:
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
        taken = {p.name for p in own} | set(skip)
        hints = typing.get_type_hints(config)
        derived = [
            inspect.Parameter(
                field.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=(
                    inspect.Parameter.empty
                    if field.default is dataclasses.MISSING
                    else field.default
                ),
                annotation=Annotated[hints[field.name], _typer_option(field.name, option)],
            )
            for field in dataclasses.fields(config)
            if (option := option_of(field)) is not None and field.name not in taken
        ]
        names = {p.name for p in derived}
        first = [p for p in own if p.kind is not p.KEYWORD_ONLY]
        last = [p for p in own if p.kind is p.KEYWORD_ONLY]
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in first]
        params += derived + last

        @functools.wraps(command)
        def run(**values: Any) -> Any:
            settings = {name: values.pop(name) for name in names}
            return command(**values, **settings)

        # Typer reads the options from the signature; the annotations of the derived ones are
        # real objects here, so nothing has to be resolved from the command's own module.
        run.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        run.__annotations__ = {}
        return typing.cast(Command, run)

    return decorate


def _typer_option(name: str, option: Option) -> Any:
    flag = option.flag_of(name)
    return typer.Option(
        *(option.flags or (f"--{name.replace('_', '-')}",)),
        help=option.help,
        envvar=option.envvar,
        show_envvar=option.envvar is not None,
        callback=(lambda value: option.check(flag, value)) if option.bounded else None,
    )


def help_of(config: type, name: str) -> str:
    """The help text a settings field declares, for a command that offers it its own way."""
    for setting in dataclasses.fields(config):
        option = option_of(setting)
        if setting.name == name and option is not None:
            return option.help
    raise TypeError(f"{config.__name__}.{name} declares no option")


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
