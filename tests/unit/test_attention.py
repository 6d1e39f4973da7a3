"""Attention weights from the transformers engine, and the views made of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.helpers.cli import run_cli

import llmkit
from llmkit.errors import InvalidParameterError
from llmkit.generation.attention import draw, select, strongest

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def weights(tiny_gguf: Path):
    with llmkit.load(str(tiny_gguf), engine="transformers", context_length=64) as model:
        tokens, weights = model.attention("the cat sat on the mat")
    return tokens, weights


def test_weights_are_causal_distributions(weights) -> None:
    tokens, array = weights
    layers, heads, rows, columns = array.shape
    assert rows == columns == len(tokens) and layers >= 1 and heads >= 1
    np.testing.assert_allclose(array.sum(axis=-1), 1.0, atol=1e-4)
    assert np.allclose(np.triu(array, k=1), 0.0)  # no token sees a later one


def test_selecting_and_ranking(weights) -> None:
    tokens, array = weights
    mean = select(array, None, None)
    np.testing.assert_allclose(mean, array[-1].mean(axis=0))
    np.testing.assert_allclose(select(array, 0, 1), array[0, 1])
    ranked = strongest(mean, tokens, count=2)
    assert ranked[0] == [(tokens[0], pytest.approx(1.0))]
    assert all(len(row) == min(2, i + 1) for i, row in enumerate(ranked))
    with pytest.raises(InvalidParameterError, match="--layer must be between 0 and"):
        select(array, 99, None)
    with pytest.raises(InvalidParameterError, match="--head must be between 0 and"):
        select(array, 0, 99)


def test_a_heatmap_and_a_grid_of_heads(weights, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    tokens, array = weights
    one = draw(array, tokens, tmp_path / "one.png", layer=None, head=None)
    grid = draw(array, tokens, tmp_path / "grid.png", layer=0, head=None)
    assert one.read_bytes()[:4] == b"\x89PNG" and grid.stat().st_size > one.stat().st_size


def test_llama_cpp_says_which_engine_to_use(tiny_gguf: Path) -> None:
    with (
        llmkit.load(str(tiny_gguf), context_length=64) as model,
        pytest.raises(InvalidParameterError, match="use the transformers engine"),
    ):
        model.attention("the cat")


def test_the_cli_table_and_a_bad_head(tiny_gguf: Path, tmp_path: Path) -> None:
    result = run_cli("attention", str(tiny_gguf), "the cat sat", "--png", str(tmp_path / "a.png"))
    assert result.returncode == 0, result.stderr
    assert "attends most to" in result.stdout and (tmp_path / "a.png").exists()
    bad = run_cli("attention", str(tiny_gguf), "the cat", "--head", "99")
    assert bad.returncode != 0 and "--head must be between" in bad.stderr
