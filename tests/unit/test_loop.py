import threading

import pytest
from tests.helpers.fake_engine import FakeEngine

from llmkit.errors import ContextOverflowError
from llmkit.generation.loop import GenerationStream, generate
from llmkit.params import SamplingParams

PIECES = {
    1: b"Hello",
    2: b" wor",
    3: b"ld",
    4: b"<|end|>",
    5: b"\n###",
    6: b" again",
    7: b"\xc3",
    8: b"\xa9",
}
EOT = 4


def run(script, **params):
    engine = FakeEngine(PIECES, script)
    stream = GenerationStream(engine, [10, 11, 12], SamplingParams(**params), stop_token_ids={EOT})
    chunks = list(stream)
    return engine, chunks, stream.result


def test_stop_token_ends_the_answer_and_is_not_printed() -> None:
    engine, chunks, result = run([1, 2, 3, EOT, 6])
    assert "".join(c.text for c in chunks) == result.text == "Hello world"
    assert result.finish_reason == "stop" and result.stopped_by == "<|end|>"
    assert result.usage.prompt_tokens == 3 and result.usage.completion_tokens == 4
    assert engine.context.cached(0) == [10, 11, 12, 1, 2, 3]  # the stop token is never fed back


def test_stop_string_across_tokens_is_held_back() -> None:
    _, chunks, result = run([1, 5, 6], stop=["\n#"])
    assert result.text == "Hello" and result.stopped_by == "\n#"
    assert all("#" not in chunk.text for chunk in chunks)


def test_max_tokens_gives_length_finish() -> None:
    _, _, result = run([1, 2, 3, 6, 6], max_tokens=2)
    assert result.text == "Hello wor" and result.finish_reason == "length"


def test_split_utf8_is_joined() -> None:
    _, _, result = run([7, 8, EOT])
    assert result.text == "é"


def test_ignore_eos_marks_where_the_model_would_stop() -> None:
    _, chunks, result = run([1, EOT, 6], ignore_eos=True, max_tokens=3)
    assert [c.would_stop_at for c in chunks if c.would_stop_at] == ["<|end|>"]
    assert result.text == "Hello again" and result.finish_reason == "length"


def test_cancellation_stops_after_the_current_token() -> None:
    cancel = threading.Event()
    engine = FakeEngine(PIECES, [1, 2, 3, 6, 6, 6])
    stream = GenerationStream(engine, [1], SamplingParams(), cancel=cancel)
    texts = []
    for chunk in stream:
        texts.append(chunk.text)
        cancel.set()
    assert stream.result.finish_reason == "cancelled" and stream.result.text == "Hello"


def test_closing_the_stream_early_records_a_cancelled_result() -> None:
    stream = GenerationStream(FakeEngine(PIECES, [1, 2, 3, 6]), [1], SamplingParams())
    iterator = iter(stream)
    next(iterator)
    iterator.close()
    assert stream.result.finish_reason == "cancelled"


def test_prompt_that_fills_the_context_is_refused() -> None:
    with pytest.raises(ContextOverflowError, match="context window holds 64"):
        generate(FakeEngine(PIECES, [1]), list(range(64)), SamplingParams())


def test_answer_is_capped_by_the_room_left_in_the_context() -> None:
    result = generate(
        FakeEngine(PIECES, [6] * 10, context_length=8), list(range(5)), SamplingParams()
    )
    assert result.usage.completion_tokens == 3 and result.finish_reason == "length"


def test_the_prompt_is_decoded_in_chunks_and_its_cached_beginning_is_reused() -> None:
    from llmkit.generation.loop import PREFILL_CHUNK

    engine = FakeEngine(PIECES, [1, EOT], context_length=4 * PREFILL_CHUNK)
    prompt = list(range(20, 20 + PREFILL_CHUNK + 10))
    first = generate(engine, prompt, SamplingParams(), stop_token_ids={EOT})
    calls = engine.context.calls
    assert [len(items[0].tokens) for items in calls] == [PREFILL_CHUNK, 10, 1]
    assert [items[0].want_logits for items in calls] == [False, True, True]
    assert first.usage.cached_prompt_tokens == 0

    follow_up = [*prompt, 1, 99]
    calls.clear()
    second = generate(engine, follow_up, SamplingParams(), stop_token_ids={EOT})
    # The prompt and the first answer's token are cached; only the new token is evaluated.
    assert second.usage.cached_prompt_tokens == len(prompt) + 1
    assert [list(items[0].tokens) for items in calls] == [[99], [1]]
    assert engine.context.cached(0) == [*follow_up, 1]


def test_a_fresh_prompt_clears_the_cache() -> None:
    engine = FakeEngine(PIECES, [1, EOT])
    generate(engine, [10, 11, 12], SamplingParams(), stop_token_ids={EOT})
    result = generate(engine, [30, 31], SamplingParams(), stop_token_ids={EOT})
    assert result.usage.cached_prompt_tokens == 0
    assert engine.context.cached(0) == [30, 31, 1]


def test_a_constraint_shapes_the_answer_and_its_end_stops_it() -> None:
    from llmkit.generation.constraints import Grammar, constraint_factory

    # The script wants "x" forever; the grammar admits only "ab", then the end-of-generation
    # token, which ends the answer though it is not among the stream's stop tokens.
    engine = FakeEngine({3: b"<eog>"}, [ord("x")] * 10, end_of_generation=[3])
    make = constraint_factory(Grammar.from_lark('start: "ab"'), engine)
    stream = GenerationStream(engine, [10, 11], SamplingParams(), constraint=make())
    chunks = list(stream)
    assert "".join(c.text for c in chunks) == stream.result.text == "ab"
    assert stream.result.finish_reason == "stop" and stream.result.stopped_by == "<eog>"


def test_text_held_for_a_stop_string_is_kept_when_eos_is_ignored() -> None:
    # "ld" might begin "ld!", so it is held back; the stop token under ignore_eos releases it.
    _, chunks, result = run([1, 2, 3, EOT, 6], ignore_eos=True, stop=["ld!"], max_tokens=5)
    assert result.text == "".join(c.text for c in chunks) == "Hello world again"
    assert result.finish_reason == "length"


def test_text_held_for_a_stop_string_is_kept_when_a_stop_token_ends_the_answer() -> None:
    _, chunks, result = run([1, 2, 3, EOT], stop=["ld!"])
    assert result.text == "".join(c.text for c in chunks) == "Hello world"
    assert result.finish_reason == "stop" and result.stopped_by == "<|end|>"
