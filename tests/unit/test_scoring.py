"""Next-token distributions and text scores, on both engines over the tiny random model."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import llmkit
from llmkit.engines.base import BatchItem
from llmkit.errors import ContextOverflowError, InvalidParameterError
from llmkit.generation.scoring import log_softmax, next_tokens, rank_of, score, top_tokens, walk


@pytest.fixture(scope="module", params=["llamacpp", "transformers"])
def model(request, tiny_gguf: Path):
    if request.param == "transformers":
        pytest.importorskip("torch")
    with llmkit.load(str(tiny_gguf), engine=request.param, context_length=128) as loaded:
        yield loaded


def test_every_row_of_an_all_logits_item_is_that_positions_prediction(model) -> None:
    ids = model.tokenize("the cat sat on the mat", add_bos=True)
    context = model.engine.context
    context.keep_prefix(0, 0)
    context.decode([BatchItem(0, ids, all_logits=True)])
    rows = [np.array(context.logits(row)) for row in range(len(ids))]
    context.keep_prefix(0, 0)
    for position, token in enumerate(ids):
        context.decode([BatchItem(0, [token])])
        np.testing.assert_allclose(rows[position], context.logits(), rtol=1e-3, atol=1e-3)


def test_a_score_agrees_with_the_next_token_distribution(model) -> None:
    ids = model.tokenize("the cat sat on the mat", add_bos=True)
    scored = score(model.engine, ids)
    assert len(scored.logprobs) == len(ids) - 1
    for cut in (2, len(ids) - 1):
        chances = next_tokens(model.engine, ids[:cut], top=100)
        following = {c.id: c.logprob for c in chances}
        if ids[cut] in following:
            assert following[ids[cut]] == pytest.approx(scored.logprobs[cut - 1], abs=1e-3)
    assert scored.perplexity == pytest.approx(
        math.exp(-sum(scored.logprobs) / len(scored.logprobs))
    )


def test_a_distribution_is_ranked_and_sums_below_one(model) -> None:
    chances = next_tokens(model.engine, model.tokenize("the cat", add_bos=True), top=20)
    probabilities = [c.probability for c in chances]
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1 + 1e-6
    assert [c.rank for c in chances] == list(range(1, 21))


def test_a_greedy_walk_chooses_the_top_token_each_step(model) -> None:
    ids = model.tokenize("the cat", add_bos=True)
    steps = list(walk(model.engine, ids, model.params(temperature=0.0), steps=4, top=5))
    assert 1 <= len(steps) <= 4
    for step in steps:
        assert step.chosen.rank == 1 and step.chosen.id == step.distribution[0].id


def test_helpers_and_bounds() -> None:
    logits = np.array([1.0, 3.0, 2.0], dtype=np.float32)
    assert np.exp(log_softmax(logits)).sum() == pytest.approx(1.0)
    assert rank_of(logits, 2) == 2 and rank_of(logits, 1) == 1


def test_bad_requests_are_one_sentence(model) -> None:
    with pytest.raises(InvalidParameterError, match="top must be between 1 and 100"):
        top_tokens(model.engine, np.zeros(4, dtype=np.float32), 0)
    with pytest.raises(InvalidParameterError, match="at least two tokens"):
        score(model.engine, [1])
    with pytest.raises(ContextOverflowError, match="context window holds"):
        score(model.engine, [1] * 500)
    with pytest.raises(InvalidParameterError, match="steps must be between"):
        list(walk(model.engine, [1, 2], model.params(), steps=0))


def test_explaining_sampling_follows_the_chain_step_by_step(model) -> None:
    from llmkit.generation.scoring import explain_sampling

    ids = model.tokenize("the cat", add_bos=True)
    params = model.params(temperature=2.0, top_k=20, top_p=0.5, min_p=0.0, repeat_penalty=1.0)
    views = explain_sampling(model.engine, ids, params, top=30)
    names = [view.name for view in views]
    assert names == ["model", "top_k", "top_p", "min_p", "temperature"]
    remaining = [view.remaining for view in views]
    assert remaining[1] == 20 and remaining == sorted(remaining, reverse=True)
    last = views[-1]
    assert sum(chance.probability for chance in last.top) == pytest.approx(1.0, abs=1e-4)
    # A higher temperature flattens what min-p left: the top token loses probability.
    assert last.top[0].probability <= views[-2].top[0].probability + 1e-9
    greedy = explain_sampling(model.engine, ids, model.params(temperature=0.0, repeat_penalty=1.0))
    assert [v.name for v in greedy] == ["model", "greedy"]
    assert greedy[1].top[0].id == greedy[0].top[0].id


def test_both_engines_explain_the_same_sampling(tiny_gguf: Path) -> None:
    pytest.importorskip("torch")
    from llmkit.generation.scoring import explain_sampling

    kept = {}
    for engine in ("llamacpp", "transformers"):
        with llmkit.load(str(tiny_gguf), engine=engine, context_length=128) as loaded:
            ids = loaded.tokenize("the cat", add_bos=True)
            params = loaded.params(temperature=0.7, top_k=10, top_p=0.9, repeat_penalty=1.0)
            views = explain_sampling(loaded.engine, ids, params, top=10)
            kept[engine] = [(v.name, v.remaining) for v in views]
    assert kept["llamacpp"] == kept["transformers"]
