"""`llmkit attention`: which earlier tokens each token looks at (transformers engine)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from llmkit.cli import options as opt
from llmkit.cli.output import print_json, print_table, say


def attention(
    model: Annotated[str, typer.Argument(help="Model name from `llmkit list`, or a GGUF path.")],
    text: Annotated[str, typer.Argument(help="The text whose attention to show.")],
    layer: Annotated[
        int | None, typer.Option("--layer", help="Layer (0 first, -1 last; default: the last).")
    ] = None,
    head: Annotated[
        int | None, typer.Option("--head", help="Head (default: the mean over heads).")
    ] = None,
    png: Annotated[
        Path | None,
        typer.Option("--png", help="Write a heatmap; with --layer and no --head, a grid of heads."),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="The tokens and the whole (layers, heads, n, n) array.")
    ] = False,
    context: opt.Context = None,
    threads: opt.Threads = None,
    verbose: opt.Verbose = False,
) -> None:
    """Show, for each token, the earlier tokens it attends to most (a layer, a head or the mean).

    Needs the transformers engine (PyTorch), which exposes the attention weights.
    """
    from rich.table import Table

    from llmkit.generation.attention import check_indices, draw, select, strongest
    from llmkit.store.store import ModelStore

    # Refused from the counts the store recorded, before minutes of loading; select() checks
    # again against the weights themselves, for a model whose counts are unknown.
    if layer is not None or head is not None:
        info = ModelStore().resolve(model).info
        check_indices(info.layers, info.heads, layer, head)
    loaded = opt.load_model(model, "transformers", context, threads, None, verbose)
    try:
        tokens, weights = loaded.attention(text)
    finally:
        loaded.close()
    attention_map = select(weights, layer, head)
    if json_output:
        print_json({"tokens": tokens, "shape": list(weights.shape), "attention": weights.tolist()})
    else:
        which = "the last layer" if layer is None else f"layer {layer}"
        say(
            "[dim]{} layers, {} heads; {}, {}:[/]",
            weights.shape[0], weights.shape[1], which,
            "the mean over heads" if head is None else f"head {head}", err=True,
        )  # fmt: skip
        table = Table("#", "token", "attends most to", box=None, pad_edge=False)
        for position, row in enumerate(strongest(attention_map, tokens)):
            shown = "  ".join(f"{_shown(t)} {100 * w:.0f}%" for t, w in row)
            table.add_row(str(position), _shown(tokens[position]), shown)
        print_table(table)
    if png is not None:
        draw(weights, tokens, png, layer=layer, head=head)
        say("Wrote {}", png, err=True)


def _shown(token: str) -> str:
    text = token.replace("\n", "\\n")
    return "␣" + text[1:] if text.startswith(" ") else text


def register(app: typer.Typer) -> None:
    app.command(no_args_is_help=True)(attention)
