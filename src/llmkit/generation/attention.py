"""Which earlier tokens each token attends to: selecting, averaging and drawing attention weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from llmkit.errors import InvalidParameterError, require_module


def select(weights: np.ndarray, layer: int | None, head: int | None) -> np.ndarray:
    """The (tokens, tokens) map for a layer and head; the mean over heads when head is None,
    and over the last layer when layer is None (negative layers count from the end)."""
    layers, heads = weights.shape[:2]
    check_indices(layers, heads, layer, head)
    chosen = weights[layers - 1 if layer is None else layer]
    return chosen.mean(axis=0) if head is None else chosen[head]


def check_indices(
    layers: int | None, heads: int | None, layer: int | None, head: int | None
) -> None:
    """Refuse a layer or head the model does not have (a count of None is not checked), so the
    CLI can ask before loading the model, from the counts its ModelInfo records."""
    if layer is not None and layers is not None and not -layers <= layer < layers:
        raise InvalidParameterError(
            f"--layer must be between 0 and {layers - 1}, or -1 for the last (got {layer}): "
            f"the model has {layers} layers."
        )
    if head is not None and heads is not None and not 0 <= head < heads:
        raise InvalidParameterError(
            f"--head must be between 0 and {heads - 1} (got {head}): the model has {heads} "
            "attention heads per layer."
        )


def strongest(
    attention_map: np.ndarray, tokens: list[str], count: int = 3
) -> list[list[tuple[str, float]]]:
    """For each token, the `count` earlier (or same) tokens it attends to most, strongest first."""
    rows = []
    for position in range(len(tokens)):
        row = attention_map[position, : position + 1]
        best = np.argsort(-row, kind="stable")[:count]
        rows.append([(tokens[i], float(row[i])) for i in best])
    return rows


def draw(
    weights: np.ndarray, tokens: list[str], path: Path, *, layer: int | None, head: int | None
) -> Path:
    """A heatmap PNG: one map, or with a layer and no head, a grid of that layer's heads."""
    require_module("matplotlib", feature="--png", extra="plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [token.replace("\n", "\\n") for token in tokens]
    index = weights.shape[0] - 1 if layer is None else layer % weights.shape[0]
    maps = (
        [(f"layer {index}, head {h}", weights[index, h]) for h in range(weights.shape[1])]
        if layer is not None and head is None
        else [(_title(index, head), select(weights, index, head))]
    )
    columns = min(4, len(maps))
    rows = -(-len(maps) // columns)
    size = max(4.0, 0.35 * len(tokens))
    figure, axes = plt.subplots(rows, columns, figsize=(size * columns, size * rows), squeeze=False)
    for axis in axes.flat[len(maps) :]:
        axis.axis("off")
    for axis, (title, attention_map) in zip(axes.flat, maps):
        axis.imshow(attention_map, cmap="viridis", vmin=0.0)
        axis.set_title(title)
        axis.set_xticks(range(len(labels)), labels, rotation=90, fontsize=8)
        axis.set_yticks(range(len(labels)), labels, fontsize=8)
        axis.set_xlabel("attends to")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _title(layer: int, head: int | None) -> str:
    return f"layer {layer}, " + ("mean over heads" if head is None else f"head {head}")
