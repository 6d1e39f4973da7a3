"""The `llmkit` command: registers every verb group and turns user errors into one clear line."""

from __future__ import annotations

import sys

import typer

from llmkit.errors import LlmkitError

app = typer.Typer(
    name="llmkit",
    help="A private, local workbench for open-weight language models: run, inspect, fine-tune, serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from llmkit import __version__

        typer.echo(f"llmkit {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False,
        "--version",
        "-V",
        help="Print llmkit's version and exit.",
        callback=_print_version,
        is_eager=True,
    ),
) -> None:
    """A private, local workbench for open-weight language models: run, inspect, fine-tune, serve."""


# Every verb module, in the order `llmkit --help` lists them. Each adds its commands to `app`
# and imports heavy libraries only inside the commands, so importing all of them stays fast.
VERB_MODULES = (
    "llmkit.cli.models",
    "llmkit.cli.generate",
    "llmkit.cli.next",
    "llmkit.cli.attention",
    "llmkit.cli.plan",
    "llmkit.cli.prompt",
    "llmkit.cli.bench",
    "llmkit.cli.eval",
    "llmkit.cli.serve",
    "llmkit.cli.finetune",
    "llmkit.cli.agent",
    "llmkit.cli.quantize",
    "llmkit.cli.tune",
    "llmkit.cli.logs",
    "llmkit.cli.create",
    "llmkit.cli.embed",
)


def _register_commands() -> None:
    # A module that fails to import is a bug to see at once, not a verb that silently vanishes:
    # the error propagates (and tests/unit/test_cli_help.py imports every verb).
    import importlib

    for name in VERB_MODULES:
        importlib.import_module(name).register(app)


_register_commands()


def main() -> None:
    try:
        app()
    except LlmkitError as error:
        from llmkit.cli.output import print_error

        print_error(error)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
