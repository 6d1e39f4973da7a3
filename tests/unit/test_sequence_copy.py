"""Context.copy_sequence on both engines (tiny random F32 model) and on the scripted fake engine.

A copied sequence must be indistinguishable from one that read the same tokens itself: the same
logits for the next token, the same cached tokens, and no trace of what it held before.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.helpers.fake_engine import FakeEngine

from llmkit.engines.base import BatchItem, EngineOptions
from llmkit.errors import InvalidParameterError
from llmkit.store.store import ModelManifest


@pytest.fixture(
    scope="module", params=["llamacpp", pytest.param("transformers", marks=pytest.mark.torch)]
)
def engine(request: pytest.FixtureRequest, tiny_gguf: Path):
    manifest = ModelManifest("tiny", str(tiny_gguf), "gguf", "", 0, "test")
    if request.param == "llamacpp":
        from llmkit.engines.llamacpp import LlamaCppEngine

        engine = LlamaCppEngine(manifest, EngineOptions(context_length=128, threads=1))
    else:
        pytest.importorskip("torch")
        from llmkit.engines.transformers import TransformersEngine

        engine = TransformersEngine(manifest, EngineOptions(context_length=128, device="cpu"))
    yield engine
    engine.close()


def _alone(engine, tokens: list[int]) -> np.ndarray:
    """The logits after `tokens`, read by a fresh one-sequence context."""
    context = engine.new_context(1, 128)
    context.decode([BatchItem(0, tokens)])
    logits = np.array(context.logits())
    context.close()
    return logits


def test_copies_continue_as_if_they_had_read_the_prompt(engine) -> None:
    prompt = engine.tokenize("hello there, the cat sat")
    context = engine.new_context(3, 128)
    context.decode([BatchItem(0, prompt), BatchItem(2, engine.tokenize("other words"))])
    context.copy_sequence(0, 1)
    context.copy_sequence(0, 2)  # drops what sequence 2 held
    assert list(context.cached(1)) == list(context.cached(2)) == prompt
    # The copy is applied by the next decode, which carries all three sequences.
    context.decode([BatchItem(0, [7]), BatchItem(1, [7]), BatchItem(2, [9])])
    same = _alone(engine, [*prompt, 7])
    np.testing.assert_allclose(context.logits(0), same, atol=5e-3)
    np.testing.assert_allclose(context.logits(1), same, atol=5e-3)
    np.testing.assert_allclose(context.logits(2), _alone(engine, [*prompt, 9]), atol=5e-3)
    assert list(context.cached(2)) == [*prompt, 9] and list(context.cached(0)) == [*prompt, 7]
    # The sequences are independent from here: one going on does not move the other.
    context.decode([BatchItem(1, [11, 12])])
    context.decode([BatchItem(0, [13])])
    np.testing.assert_allclose(context.logits(0), _alone(engine, [*prompt, 7, 13]), atol=5e-3)
    context.close()


def test_a_copy_cut_back_and_copying_nothing(engine) -> None:
    prompt = engine.tokenize("the answer is")
    context = engine.new_context(2, 128)
    context.decode([BatchItem(0, prompt), BatchItem(1, [5, 6])])
    context.copy_sequence(0, 1)
    context.keep_prefix(1, 2)  # a copy can be cut back like any sequence
    context.decode([BatchItem(1, prompt[2:])])
    np.testing.assert_allclose(context.logits(0), _alone(engine, prompt), atol=5e-3)
    context.keep_prefix(0, 0)
    context.copy_sequence(0, 1)  # an empty sequence copied clears the target
    assert list(context.cached(1)) == []
    context.copy_sequence(1, 1)
    with pytest.raises(InvalidParameterError):
        context.copy_sequence(0, 2)
    context.close()


def test_the_fake_engine_records_copies() -> None:
    engine = FakeEngine({}, script=[1])
    context = engine.new_context(2, 16)
    context.decode([BatchItem(0, [3, 4])])
    context.copy_sequence(0, 1)
    assert context.copies == [(0, 1)] and context.cached(1) == [3, 4]
    with pytest.raises(ValueError):
        context.copy_sequence(0, 5)
