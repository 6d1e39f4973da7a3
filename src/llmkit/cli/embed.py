"""`llmkit embed`: a text's vector from a model, for similarity and quick experiments."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from llmkit.cli import options as opt
from llmkit.cli.output import print_json

MAX_INPUTS = 10_000


def embed(
    model: Annotated[str, typer.Argument(help="Model name from `llmkit list`, or a GGUF path.")],
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to embed.")] = None,
    input_file: Annotated[
        Path | None,
        typer.Option("--input", "-i", help="A text file: each non-empty line is embedded."),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="One JSON object with every vector and token count.")
    ] = False,
    engine: opt.Engine = opt.DEFAULT_ENGINE,
    threads: opt.Threads = None,
    verbose: opt.Verbose = False,
) -> None:
    """Print a unit-length vector per text: one JSON array per line, in input order.

    Chat models are not trained as embedders: the vectors suit rough similarity and trying an
    API out, not retrieval at scale.
    """
    from llmkit.errors import InvalidParameterError

    inputs = list(texts or [])
    if input_file is not None:
        try:
            lines = input_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise InvalidParameterError(f"{input_file} cannot be read as text: {error}.") from None
        inputs += [line for line in lines if line.strip()]
    if not inputs and not sys.stdin.isatty():
        inputs = [sys.stdin.read()]
    if not inputs or not any(text.strip() for text in inputs):
        raise InvalidParameterError("Give text to embed: as arguments, with -i FILE, or on stdin.")
    if len(inputs) > MAX_INPUTS:
        raise InvalidParameterError(f"At most {MAX_INPUTS:,} texts at once (got {len(inputs):,}).")
    loaded = opt.load_model(model, engine, None, threads, None, verbose)
    try:
        vectors = [loaded.embed(text) for text in inputs]
        if json_output:
            tokens = [len(loaded.raw_prompt_ids(text)) for text in inputs]
            print_json(
                {
                    "model": loaded.name,
                    "dimensions": len(vectors[0]),
                    "embeddings": vectors,
                    "tokens": tokens,
                }
            )
        else:
            for vector in vectors:
                sys.stdout.write(json.dumps(vector) + "\n")
    finally:
        loaded.close()


def register(app: typer.Typer) -> None:
    app.command(no_args_is_help=True)(embed)
