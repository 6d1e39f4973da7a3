"""`llmkit create` and `llmkit cp`: named models made from a recipe, or another name for one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from llmkit.cli.output import say


def create(
    name: Annotated[str, typer.Argument(help="The new model's name.")],
    file: Annotated[
        Path,
        typer.Option(
            "--file", "-f", help="The recipe, in Ollama's Modelfile syntax (see docs/recipes.md)."
        ),
    ] = Path("Modelfile"),
    force: Annotated[bool, typer.Option("--force", help="Replace a model with that name.")] = False,
) -> None:
    """Make a named model from a recipe: a base model with its own system prompt, sampling
    defaults, template, adapter and opening messages. The weights are not copied."""
    from llmkit.errors import InvalidModelFileError
    from llmkit.store.recipes import parse_modelfile
    from llmkit.store.store import ModelStore

    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidModelFileError(f"The recipe {file} cannot be read: {error}.") from error
    recipe = parse_modelfile(text, folder=file.resolve().parent)
    manifest = ModelStore().create_recipe(name, recipe, force=force)
    say(
        "Created [bold]{}[/] from {}. Try it: llmkit run {} \"Hello\"",
        manifest.name, manifest.base, manifest.name,
    )  # fmt: skip


def copy(
    source: Annotated[str, typer.Argument(help="A model from `llmkit list`.")],
    name: Annotated[str, typer.Argument(help="The new name.")],
    force: Annotated[bool, typer.Option("--force", help="Replace a model with that name.")] = False,
) -> None:
    """Give a model another name (its weights are shared, not copied)."""
    from llmkit.store.store import ModelStore

    manifest = ModelStore().copy(source, name, force=force)
    say("Copied {} to [bold]{}[/].", source, manifest.name)


def register(app: typer.Typer) -> None:
    app.command(no_args_is_help=True)(create)
    app.command("cp", no_args_is_help=True)(copy)
