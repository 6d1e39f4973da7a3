"""The transformers engine against the engine protocol, on the tiny random F32 model.

The batched context must compute what one sequence at a time computes: same greedy tokens, same
logits after a cache is cut back, whatever mix of prompt chunks and single tokens a call carries.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llmkit.engines.base import BatchItem, EngineOptions
from llmkit.errors import ContextOverflowError, InvalidParameterError
from llmkit.params import SamplingParams

pytestmark = pytest.mark.torch

GREEDY = SamplingParams(temperature=0, repeat_penalty=1.0)
PROMPTS = ["hello there", "the answer is", "a", "Ünïcödé 😀 text and more words"]


@pytest.fixture(scope="module")
def engine(tiny_gguf: Path):
    pytest.importorskip("torch")
    from llmkit.engines.transformers import TransformersEngine
    from llmkit.store.store import ModelManifest

    manifest = ModelManifest("tiny", str(tiny_gguf), "gguf", "", 0, "test")
    engine = TransformersEngine(manifest, EngineOptions(context_length=256, device="cpu"))
    yield engine
    engine.close()


def greedy_alone(engine, prompt: list[int], steps: int) -> list[int]:
    context = engine.new_context(1, 256)
    context.decode([BatchItem(0, prompt)])
    sampler = context.new_sampler(GREEDY, prompt)
    tokens = []
    for _ in range(steps):
        tokens.append(sampler.sample())
        context.decode([BatchItem(0, [tokens[-1]])])
    return tokens


def test_tokenizer_facts(engine) -> None:
    facts = engine.tokenizer_facts
    assert facts.vocab_size == 267
    assert (facts.bos_id, facts.eos_id) == (1, 2)
    assert 2 in facts.end_of_generation_ids
    assert facts.add_bos is False
    # The tokenizer's own special tokens, which grammars must never spell out as text.
    assert {1, 2} <= facts.special_ids


def test_batched_greedy_equals_one_sequence_at_a_time(engine) -> None:
    prompts = [engine.tokenize(text) for text in PROMPTS]
    expected = [greedy_alone(engine, prompt, 12) for prompt in prompts]
    context = engine.new_context(len(prompts), 256)
    context.decode([BatchItem(i, prompt) for i, prompt in enumerate(prompts)])
    samplers = [context.new_sampler(GREEDY, prompt) for prompt in prompts]
    produced: list[list[int]] = [[] for _ in prompts]
    for _ in range(12):
        for row, sampler in enumerate(samplers):
            produced[row].append(sampler.sample(row))
        context.decode([BatchItem(i, [tokens[-1]]) for i, tokens in enumerate(produced)])
    assert produced == expected
    for i, prompt in enumerate(prompts):
        assert list(context.cached(i)) == prompt + produced[i]


def test_prompt_chunks_and_single_tokens_mix_in_one_call(engine) -> None:
    first, second = engine.tokenize(PROMPTS[0]), engine.tokenize(PROMPTS[3])
    expected_first = greedy_alone(engine, first, 6)
    expected_second = greedy_alone(engine, second, 3)
    context = engine.new_context(3, 256)
    context.decode([BatchItem(0, first)])
    sampler = context.new_sampler(GREEDY, first)
    tokens = [sampler.sample()]
    context.decode([BatchItem(0, [tokens[-1]])])
    tokens.append(sampler.sample())
    # Sequence 2 starts its prompt (in two chunks, the first without logits) beside sequence 0.
    half = len(second) // 2
    context.decode([BatchItem(2, second[:half], want_logits=False), BatchItem(0, [tokens[-1]])])
    tokens.append(sampler.sample(0))
    context.decode([BatchItem(0, [tokens[-1]]), BatchItem(2, second[half:])])
    tokens.append(sampler.sample(0))
    other = context.new_sampler(GREEDY, second)
    others = [other.sample(1)]
    for _ in range(2):
        context.decode([BatchItem(2, [others[-1]]), BatchItem(0, [tokens[-1]])])
        others.append(other.sample(0))
        tokens.append(sampler.sample(1))
    assert tokens == expected_first
    assert others == expected_second
    assert list(context.cached(1)) == []


def test_keep_prefix_gives_the_logits_of_a_fresh_prefill(engine) -> None:
    prompt = engine.tokenize("hello there, the answer is")
    fresh = engine.new_context(1, 256)
    fresh.decode([BatchItem(0, prompt)])
    expected = fresh.logits().copy()

    context = engine.new_context(2, 256)
    context.decode([BatchItem(0, prompt[:4] + engine.tokenize(" other words")), BatchItem(1, [5])])
    context.keep_prefix(0, 4)
    assert list(context.cached(0)) == prompt[:4]
    context.decode([BatchItem(0, prompt[4:]), BatchItem(1, [6, 7])])
    np.testing.assert_allclose(context.logits(0), expected, atol=1e-5)
    assert context.logits(0).dtype == np.float32
    context.keep_prefix(0, 0)
    assert list(context.cached(0)) == []
    assert list(context.cached(1)) == [5, 6, 7]


def test_the_engine_context_is_one_sequence(engine) -> None:
    assert engine.context.sequences == 1
    assert engine.context.sequence_length == engine.context_length


def test_overflow_clears_the_sequence_and_bad_items_are_refused(engine) -> None:
    context = engine.new_context(2, 8)
    context.decode([BatchItem(0, [5, 6, 7]), BatchItem(1, [5])])
    with pytest.raises(ContextOverflowError):
        context.decode([BatchItem(0, list(range(10, 16))), BatchItem(1, [6])])
    assert list(context.cached(0)) == []
    with pytest.raises(InvalidParameterError):
        context.decode([BatchItem(2, [5])])
    with pytest.raises(InvalidParameterError):
        context.decode([BatchItem(1, [5]), BatchItem(1, [6])])


class OnlyTokens:
    """A constraint allowing a fixed set of tokens, recording what it was told."""

    def __init__(self, vocab_size: int, allowed: set[int]) -> None:
        self.mask = np.zeros(vocab_size, dtype=bool)
        self.mask[list(allowed)] = True
        self.accepted: list[int] = []

    def allowed(self) -> np.ndarray:
        return self.mask

    def accept(self, token_id: int) -> None:
        self.accepted.append(token_id)

    @property
    def finished(self) -> bool:
        return False


def test_a_constraint_masks_every_other_token(engine) -> None:
    prompt = engine.tokenize("hello there")
    context = engine.new_context(1, 256)
    context.decode([BatchItem(0, prompt)])
    logits = context.logits()
    # The two least likely tokens: the model would never pick them unconstrained.
    unlikely = {int(i) for i in np.argsort(logits)[:2]}
    constraint = OnlyTokens(engine.tokenizer_facts.vocab_size, unlikely)
    greedy = context.new_sampler(GREEDY, prompt, constraint).sample()
    assert greedy == max(unlikely, key=lambda i: logits[i])
    hot = SamplingParams(temperature=1.5, top_k=0, top_p=1.0, min_p=0.0, seed=3)
    draws = {context.new_sampler(hot, prompt, constraint).sample() for _ in range(20)}
    assert draws <= unlikely
    assert constraint.accepted[0] == greedy and len(constraint.accepted) == 21


def test_embeddings_are_unit_length_and_deterministic(engine) -> None:
    ids = engine.tokenize("hello there")
    vector = engine.embed(ids)
    assert len(vector) == 64
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    assert engine.embed(ids) == vector
    assert engine.embed(engine.tokenize("the answer")) != vector
    with pytest.raises(ContextOverflowError):
        engine.embed([])


def test_the_batch_scheduler_runs_over_the_engine(tiny_gguf: Path) -> None:
    import llmkit
    from llmkit.generation.batching import BatchRequest, BatchScheduler

    questions = ["hello there", "the cat", "an answer", "on and on"]
    with llmkit.load(str(tiny_gguf), engine="transformers", context_length=128) as model:
        params = model.params(temperature=0, max_tokens=12, repeat_penalty=1.0)
        prompts = [model.prompt_ids([{"role": "user", "content": q}]) for q in questions]
        expected = [model.stream_ids(prompt, params) for prompt in prompts]
        for stream in expected:
            list(stream)
        scheduler = BatchScheduler(model, parallel=4, max_queue=8, slot_context=128)
        try:
            handles = [scheduler.submit(BatchRequest(prompt, params)) for prompt in prompts]
            answers = ["".join(chunk.text for chunk in handle) for handle in handles]
        finally:
            scheduler.close()
    for stream, handle, answer in zip(expected, handles, answers):
        assert handle.result.token_ids == stream.result.token_ids
        assert answer == stream.result.text
