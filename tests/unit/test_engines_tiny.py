"""Both engines on the same tiny random F32 model: same tokens, same greedy text, prefix reuse."""

from pathlib import Path

import pytest

import llmkit
from llmkit.errors import ContextOverflowError, InvalidParameterError

QUESTION = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def tiny_llamacpp(tiny_gguf: Path):
    with llmkit.load(str(tiny_gguf), context_length=256) as model:
        yield model


@pytest.fixture(scope="module")
def tiny_torch(tiny_gguf: Path):
    pytest.importorskip("torch")
    with llmkit.load(str(tiny_gguf), engine="transformers", context_length=256) as model:
        yield model


def test_template_tokens_and_stops(tiny_llamacpp) -> None:
    assert tiny_llamacpp.end_of_turn_token == "<|im_end|>"
    assert tiny_llamacpp.stop_token_ids == {2}
    ids = tiny_llamacpp.prompt_ids(QUESTION)
    assert ids[0] == 1 and ids.count(2) == 1  # <|im_start|> parsed as one special token
    assert tiny_llamacpp.detokenize(ids) == tiny_llamacpp.render_prompt(QUESTION)


def test_both_engines_tokenize_identically(tiny_llamacpp, tiny_torch) -> None:
    for text in ["hello there", "Ünïcödé 😀 text", "<|im_start|>user\nhi<|im_end|>"]:
        assert tiny_llamacpp.tokenize(text) == tiny_torch.tokenize(text)


def test_greedy_text_is_identical_across_engines(tiny_llamacpp, tiny_torch) -> None:
    kwargs = {"temperature": 0, "max_tokens": 24, "repeat_penalty": 1.0}
    a = tiny_llamacpp.stream_chat(QUESTION, **kwargs)
    b = tiny_torch.stream_chat(QUESTION, **kwargs)
    list(a), list(b)
    assert a.result.token_ids == b.result.token_ids
    assert a.result.text == b.result.text


def test_greedy_with_penalties_is_identical_across_engines(tiny_llamacpp, tiny_torch) -> None:
    kwargs = {"temperature": 0, "max_tokens": 24, "repeat_penalty": 1.3, "repeat_last_n": 16}
    assert tiny_llamacpp.chat(QUESTION, **kwargs) == tiny_torch.chat(QUESTION, **kwargs)


@pytest.mark.parametrize("engine", ["tiny_llamacpp", "tiny_torch"])
def test_cached_prefix_gives_the_same_answer(engine: str, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(engine)
    kwargs = {"temperature": 0, "max_tokens": 12}
    first = model.chat(QUESTION, **kwargs)
    longer = [
        *QUESTION,
        {"role": "assistant", "content": first},
        {"role": "user", "content": "again"},
    ]
    stream = model.stream_chat(longer, **kwargs)
    list(stream)
    assert stream.result.usage.cached_prompt_tokens > 0
    model.engine.context.keep_prefix(0, 0)  # forget the cache
    assert model.chat(longer, **kwargs) == stream.result.text


@pytest.mark.parametrize("engine", ["tiny_llamacpp", "tiny_torch"])
def test_seeded_sampling_is_repeatable(engine: str, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(engine)
    kwargs = {"temperature": 1.0, "seed": 42, "max_tokens": 16}
    assert model.chat(QUESTION, **kwargs) == model.chat(QUESTION, **kwargs)


def test_prompt_longer_than_the_context_is_refused(tiny_llamacpp) -> None:
    with pytest.raises(ContextOverflowError, match="context window holds 256"):
        tiny_llamacpp.chat("word " * 400)


def test_context_beyond_the_model_maximum_is_refused(tiny_gguf: Path) -> None:
    with pytest.raises(InvalidParameterError, match="at most 256 tokens"):
        llmkit.load(str(tiny_gguf), context_length=100_000)


def test_unknown_engine_is_refused(tiny_gguf: Path) -> None:
    with pytest.raises(InvalidParameterError, match="Unknown engine 'vllm'"):
        llmkit.load(str(tiny_gguf), engine="vllm")


def test_streaming_python_api_yields_text_pieces(tiny_llamacpp) -> None:
    pieces = list(tiny_llamacpp.chat(QUESTION, stream=True, temperature=0, max_tokens=8))
    assert len(pieces) > 1 and "".join(pieces) == tiny_llamacpp.chat(
        QUESTION, temperature=0, max_tokens=8
    )


def test_context_the_machine_cannot_hold_is_refused(
    tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmkit import system_memory

    monkeypatch.setattr(system_memory, "memory_info", lambda: (8 * 2**30, 100_000))
    with pytest.raises(ContextOverflowError, match=r"only 0\.0 GiB of memory is free"):
        llmkit.load(str(tiny_gguf), context_length=256)


def test_kv_cache_size_follows_the_model_shape() -> None:
    from llmkit.store.model_info import ModelInfo

    smollm2 = ModelInfo(layers=30, heads=9, kv_heads=3, embedding_length=576)
    # keys and values x 30 layers x 4096 positions x 3 KV heads x 64 dims x 2 bytes (f16)
    assert smollm2.kv_cache_bytes(4096) == 2 * 30 * 4096 * 3 * 64 * 2


# ---- the engine protocol on llama.cpp ----------------------------------------------------
def test_decoding_several_sequences_at_once_equals_one_at_a_time(tiny_llamacpp) -> None:
    import numpy as np

    from llmkit.engines.base import BatchItem

    engine = tiny_llamacpp.engine
    prompts = [engine.tokenize(text) for text in ["hello there", "the cat sat", "on"]]
    alone = []
    single = engine.new_context(1, 64)
    for prompt in prompts:
        single.keep_prefix(0, 0)
        single.decode([BatchItem(0, prompt)])
        single.decode([BatchItem(0, [7])])
        alone.append(single.logits().copy())
    single.close()

    context = engine.new_context(3, 64)
    context.decode([BatchItem(i, prompt, want_logits=False) for i, prompt in enumerate(prompts)])
    context.decode([BatchItem(i, [7]) for i in range(3)])
    # Equal up to float rounding (a batch sums in another order), and the same greedy choice.
    for row, expected in enumerate(alone):
        np.testing.assert_allclose(context.logits(row), expected, atol=5e-3)
        assert context.logits(row).argmax() == expected.argmax()
    np.testing.assert_allclose(context.logits(-1), alone[-1], atol=5e-3)
    assert [list(context.cached(i)) for i in range(3)] == [[*p, 7] for p in prompts]
    context.close()


def test_keep_prefix_forgets_the_rest_and_cached_reports_it(tiny_llamacpp) -> None:
    import numpy as np

    from llmkit.engines.base import BatchItem

    engine = tiny_llamacpp.engine
    prompt = engine.tokenize("hello there, the cat sat on the mat")
    context = engine.new_context(2, 64)
    context.decode([BatchItem(0, prompt), BatchItem(1, prompt[:3])])
    fresh = context.logits(0).copy()
    context.keep_prefix(0, 4)
    assert list(context.cached(0)) == prompt[:4] and list(context.cached(1)) == prompt[:3]
    # Evaluating the forgotten tokens again gives the same logits as the first time.
    context.decode([BatchItem(0, prompt[4:])])
    np.testing.assert_allclose(context.logits(0), fresh, atol=5e-3)
    context.keep_prefix(1, 0)
    assert list(context.cached(1)) == []
    context.close()


class _OnlyThese:
    """A TokenConstraint allowing a fixed set of tokens, finished after `length` tokens."""

    def __init__(self, allowed_ids, vocab_size: int, length: int = 4) -> None:
        import numpy as np

        self.mask = np.zeros(vocab_size, dtype=bool)
        self.mask[list(allowed_ids)] = True
        self.length, self.accepted = length, []

    def allowed(self):
        return self.mask

    def accept(self, token_id: int) -> None:
        self.accepted.append(token_id)

    @property
    def finished(self) -> bool:
        return len(self.accepted) >= self.length


@pytest.mark.parametrize(
    "params",
    [
        {"temperature": 0, "repeat_penalty": 1.0},  # the argmax fast path
        {"temperature": 0, "repeat_penalty": 1.3},  # the native chain, greedy
        {"temperature": 1.5, "seed": 5, "top_k": 0, "top_p": 1.0, "min_p": 0.0},  # a draw
    ],
)
def test_a_sampler_with_a_constraint_picks_only_allowed_tokens(tiny_llamacpp, params) -> None:
    from llmkit.engines.base import BatchItem
    from llmkit.params import SamplingParams

    engine = tiny_llamacpp.engine
    facts = engine.tokenizer_facts
    prompt = engine.tokenize("hello there")
    context = engine.context
    context.keep_prefix(0, 0)
    context.decode([BatchItem(0, prompt)])
    free = context.new_sampler(SamplingParams(**params), prompt).sample()
    allowed = {5, 9, 11, 17} - {free}
    constraint = _OnlyThese(allowed, facts.vocab_size)
    sampler = context.new_sampler(SamplingParams(**params), prompt, constraint)
    tokens = []
    for _ in range(6):
        tokens.append(sampler.sample())
        context.decode([BatchItem(0, [tokens[-1]])])
    assert set(tokens) <= allowed and constraint.accepted == tokens


def test_tokenizer_facts_and_embeddings(tiny_llamacpp) -> None:
    import math

    engine = tiny_llamacpp.engine
    facts = engine.tokenizer_facts
    assert facts.vocab_size == engine.vocab_size
    assert 2 in facts.end_of_generation_ids  # <|im_end|>, the tiny model's end of turn
    ids = engine.tokenize("hello there")
    vector = engine.embed(ids)
    assert math.isclose(sum(v * v for v in vector), 1.0, rel_tol=1e-5)
    assert engine.embed(ids) == vector
    assert engine.embed(engine.tokenize("the cat")) != vector
    with pytest.raises(ContextOverflowError, match="at most 512"):
        engine.embed([5] * 600)
