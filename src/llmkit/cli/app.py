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


def _register_commands() -> None:
    # Each module adds its commands to `app`; heavy libraries are imported inside the commands.
    from llmkit.cli import generate, models

    for module in (models, generate):
        module.register(app)
    for optional in (
        "llmkit.cli.plan",
        "llmkit.cli.prompt",
        "llmkit.cli.bench",
        "llmkit.cli.serve",
        "llmkit.cli.finetune",
    ):
        try:
            module = __import__(optional, fromlist=["register"])
        except ModuleNotFoundError as error:
            if error.name != optional:
                raise
            continue
        module.register(app)


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
