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
    model.engine.prefill([0])  # forget the cache
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
    from llmkit.engines.llamacpp import kv_cache_bytes

    smollm2 = {"layers": 30, "heads": 9, "kv_heads": 3, "embedding_length": 576}
    # keys and values x 30 layers x 4096 positions x 3 KV heads x 64 dims x 2 bytes (f16)
    assert kv_cache_bytes(smollm2, 4096) == 2 * 30 * 4096 * 3 * 64 * 2
