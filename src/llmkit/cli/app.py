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
    "llmkit.cli.ps",
    "llmkit.cli.finetune",
    "llmkit.cli.pretrain",
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


def _click_errors() -> tuple[type[Exception], type[Exception]]:
    """(ClickException, UsageError) of the click that typer parses with."""
    try:  # typer 0.29 carries its own copy of click
        from typer._click import exceptions
    except ImportError:
        from click import exceptions  # type: ignore[no-redef]
    return exceptions.ClickException, exceptions.UsageError


def _message(error: Exception) -> str:
    return str(getattr(error, "format_message", error.__str__)())


def _command_path(args: list[str]) -> str:
    """'llmkit logs rm' from the command line, for an error that lost track of its command."""
    from typer._click.utils import _detect_program_name

    command = typer.main.get_command(app)
    path = [_detect_program_name()]
    for arg in args:
        children = getattr(command, "commands", {})
        if arg not in children:
            break
        command = children[arg]
        path.append(arg)
    return " ".join(path)


def main() -> None:
    from llmkit.cli.output import print_error, print_usage_error

    click_error, usage_error = _click_errors()
    # Not standalone: the parser's errors come back here, to be printed like every other error
    # (one plain line, not typer's box), and --help or typer.Exit comes back as an exit code.
    try:
        code = app(standalone_mode=False)
    except LlmkitError as error:
        print_error(error)
        sys.exit(error.exit_code)
    except usage_error as error:
        if type(error).__name__ != "NoArgsIsHelpError":  # a bare verb has printed its help
            context = getattr(error, "ctx", None)
            command = context.command_path if context else _command_path(sys.argv[1:])
            print_usage_error(_message(error), command)
        sys.exit(getattr(error, "exit_code", 2))
    except click_error as error:
        print_error(_message(error))
        sys.exit(getattr(error, "exit_code", 1))
    except KeyboardInterrupt:
        sys.exit(130)
    except typer.Abort:  # end of input at a prompt
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
