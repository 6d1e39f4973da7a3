"""`llmkit quantize`: a model in another GGUF weight format, stored beside the original."""

from __future__ import annotations

import shutil
from typing import Annotated

import typer

from llmkit.cli import options as opt
from llmkit.cli.output import byte_progress, say


def quantize(
    model: Annotated[str, typer.Argument(help="A GGUF model from `llmkit list`.")],
    to: Annotated[
        str,
        typer.Option("--to", help="The format: Q4_K_M, Q5_K_M, Q6_K, Q8_0, Q4_0, Q4_1, Q5_0, ..."),
    ],
    out: Annotated[
        str | None,
        typer.Option(
            "--out", help="The new model's name (default: MODEL-FORMAT, e.g. smollm2-q4_k_m)."
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a model with that name.")] = False,
    threads: opt.Threads = None,
) -> None:
    """Re-quantize a GGUF model with llama.cpp's own quantizer; the original stays as it is."""
    from llmkit.engines.llamacpp_quantize import check_format
    from llmkit.engines.llamacpp_quantize import quantize as run_quantize
    from llmkit.errors import InvalidParameterError
    from llmkit.store.paths import validate_model_name
    from llmkit.store.store import ModelStore

    fmt = check_format(to)
    store = ModelStore()
    source = store.resolve(model)
    if source.format != "gguf":
        raise InvalidParameterError(
            f"'{source.name}' is a {source.format} model; only GGUF files can be quantized."
        )
    name = out or f"{source.name}-{fmt.lower()}"
    validate_model_name(name)
    if not force and name in store.names():
        raise InvalidParameterError(f"A model named '{name}' exists; use --force or another --out.")
    staging = store.staging(f"quantize-{name}")
    try:
        target = staging / f"{name}.gguf"
        parameters = (source.info.parameters or 0) or source.size_bytes * 2
        with byte_progress(f"Quantizing {source.name} to {fmt}") as progress:
            run_quantize(
                source.weights_path, target, fmt, parameters=parameters, threads=threads,
                progress=progress,
            )  # fmt: skip
        manifest = store.import_model(
            target, name, move=True, force=force, provenance=f"quantize:{source.name}:{fmt}"
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    size = manifest.size_bytes / 1e6
    say(
        "Stored [bold]{}[/] ({} MB, {}). Try it: llmkit bench {}",
        manifest.name, f"{size:.0f}", fmt, manifest.name,
    )  # fmt: skip


def register(app: typer.Typer) -> None:
    app.command(no_args_is_help=True)(quantize)
