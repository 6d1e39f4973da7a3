"""The batch scheduler on a tiny random model: same answers as one at a time, limits, cancellation."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest

import llmkit
from llmkit.errors import ContextOverflowError, InvalidParameterError
from llmkit.generation.batching import BatchRequest, BatchScheduler, QueueFullError
from llmkit.params import SamplingParams

QUESTIONS = ["hello there", "the cat", "an answer", "on and on"]


@pytest.fixture(scope="module")
def tiny(tiny_gguf: Path):
    with llmkit.load(str(tiny_gguf), context_length=128, threads=1) as model:
        yield model


@pytest.fixture(scope="module")
def scheduler(tiny):
    scheduler = BatchScheduler(tiny, parallel=4, max_queue=8, slot_context=128, threads=1)
    yield scheduler
    scheduler.close()


def _ids(model, text: str) -> list[int]:
    return model.prompt_ids([{"role": "user", "content": text}])


def _text(handle) -> str:
    return "".join(chunk.text for chunk in handle)


def test_batched_greedy_answers_match_one_at_a_time(tiny, scheduler) -> None:
    params = tiny.params(temperature=0, max_tokens=16, repeat_penalty=1.0)
    expected = [tiny.stream_ids(_ids(tiny, q), params) for q in QUESTIONS]
    for stream in expected:
        list(stream)
    handles = [scheduler.submit(BatchRequest(_ids(tiny, q), params)) for q in QUESTIONS]
    answers = [_text(handle) for handle in handles]
    for stream, handle, answer in zip(expected, handles, answers):
        assert handle.result.token_ids == stream.result.token_ids
        assert answer == stream.result.text == handle.result.text
    assert scheduler.busy_slots == 0


def test_a_follow_up_turn_reuses_the_cached_beginning(tiny, scheduler) -> None:
    params = tiny.params(temperature=0, max_tokens=8, repeat_penalty=1.0)
    first = [{"role": "user", "content": "hello there"}]
    handle = scheduler.submit(BatchRequest(tiny.prompt_ids(first), params))
    reply = _text(handle)
    follow_up = [
        *first,
        {"role": "assistant", "content": reply},
        {"role": "user", "content": "and?"},
    ]
    expected = tiny.stream_ids(tiny.prompt_ids(follow_up), params)
    list(expected)
    handle = scheduler.submit(BatchRequest(tiny.prompt_ids(follow_up), params))
    list(handle)
    assert handle.result.usage.cached_prompt_tokens >= len(tiny.prompt_ids(first))
    assert handle.result.token_ids == expected.result.token_ids


def test_penalties_and_seeded_sampling_match_too(tiny, scheduler) -> None:
    params = tiny.params(temperature=0.8, seed=7, max_tokens=12, repeat_penalty=1.3)
    stream = tiny.stream_ids(_ids(tiny, "the cat"), params)
    list(stream)
    handle = scheduler.submit(BatchRequest(_ids(tiny, "the cat"), params))
    list(handle)
    assert handle.result.token_ids == stream.result.token_ids


def test_max_tokens_is_clamped_to_the_slot_context(tiny, scheduler) -> None:
    prompt = _ids(tiny, "the " * 40)
    handle = scheduler.submit(
        BatchRequest(prompt, tiny.params(temperature=0, max_tokens=10_000, ignore_eos=True))
    )
    list(handle)
    assert handle.result.finish_reason == "length"
    assert len(prompt) + handle.result.usage.completion_tokens == 128


def test_a_prompt_longer_than_a_slot_is_refused(tiny, scheduler) -> None:
    with pytest.raises(ContextOverflowError, match="context window"):
        scheduler.submit(BatchRequest(_ids(tiny, "the " * 200), tiny.params()))
    with pytest.raises(ContextOverflowError, match="empty"):
        scheduler.submit(BatchRequest([], tiny.params()))


def test_stop_strings_end_the_answer_without_showing_them(tiny, scheduler) -> None:
    params = tiny.params(temperature=0, max_tokens=24, repeat_penalty=1.0)
    full = _text(scheduler.submit(BatchRequest(_ids(tiny, "hello there"), params)))
    if len(full) < 6:
        pytest.skip("the random model's answer is too short to cut")
    stop = full[3:6]
    handle = scheduler.submit(BatchRequest(_ids(tiny, "hello there"), params.updated(stop=[stop])))
    text = _text(handle)
    assert handle.result.finish_reason == "stop" and handle.result.stopped_by == stop
    assert text == full[: full.index(stop)]


def test_cancel_frees_the_slot(tiny, scheduler) -> None:
    params = tiny.params(max_tokens=100, ignore_eos=True)
    handle = scheduler.submit(BatchRequest(_ids(tiny, "on and on"), params))
    chunks = iter(handle)
    next(chunks)
    handle.cancel()
    rest = list(chunks)
    assert rest[-1].finish_reason == "cancelled"
    assert handle.result.usage.completion_tokens < 100
    assert scheduler.busy_slots == 0


def test_a_request_cancelled_while_queued_never_runs(tiny) -> None:
    scheduler = BatchScheduler(tiny, parallel=1, max_queue=4, slot_context=128, threads=1)
    try:
        cancel = threading.Event()
        cancel.set()
        handle = scheduler.submit(BatchRequest(_ids(tiny, "the cat"), tiny.params(), cancel=cancel))
        assert list(handle)[-1].finish_reason == "cancelled"
        assert handle.result.usage.completion_tokens == 0
    finally:
        scheduler.close()


def test_the_queue_is_bounded(tiny) -> None:
    scheduler = BatchScheduler(tiny, parallel=1, max_queue=0, slot_context=128, threads=1)
    try:
        params = tiny.params(max_tokens=100, ignore_eos=True)
        first = scheduler.submit(BatchRequest(_ids(tiny, "the cat"), params))
        with pytest.raises(QueueFullError, match="try again"):
            scheduler.submit(BatchRequest(_ids(tiny, "the cat"), params))
        first.cancel()
        list(first)
    finally:
        scheduler.close()


def test_a_grammar_constrains_the_answer(tiny, scheduler) -> None:
    from llmkit.generation.constraints import Grammar, constraint_factory

    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,  # a random model would otherwise add keys until the end
    }
    params = tiny.params(temperature=1.0, seed=3, max_tokens=80)
    make = constraint_factory(Grammar.from_json_schema(schema), tiny.engine)
    handle = scheduler.submit(BatchRequest(_ids(tiny, "hello"), params, constraint=make))
    text = _text(handle)
    assert handle.result.finish_reason == "stop", text
    assert isinstance(json.loads(text)["ok"], bool)


def test_a_broken_grammar_is_reported_to_the_caller(tiny, scheduler) -> None:
    from llmkit.generation.constraints import Grammar

    handle = scheduler.submit(
        BatchRequest(
            _ids(tiny, "hello"),
            tiny.params(),
            constraint=lambda: Grammar.from_lark("start: ("),
        )
    )
    with pytest.raises(InvalidParameterError, match="grammar"):
        list(handle)
    assert scheduler.busy_slots == 0


def test_async_callers_get_the_same_chunks(tiny, scheduler) -> None:
    params = tiny.params(temperature=0, max_tokens=8, repeat_penalty=1.0)
    expected = _text(scheduler.submit(BatchRequest(_ids(tiny, "the cat"), params)))

    async def ask() -> list[str]:
        handles = [scheduler.submit(BatchRequest(_ids(tiny, "the cat"), params)) for _ in range(3)]
        answers = []
        for handle in handles:
            answers.append("".join([chunk.text async for chunk in handle]))
        return answers

    assert asyncio.run(ask()) == [expected] * 3


def test_parallel_must_be_sensible(tiny) -> None:
    with pytest.raises(InvalidParameterError, match="parallel"):
        BatchScheduler(tiny, parallel=0)


# ---- the same scheduler over the scripted fake engine (no weights) --------------------------
class _Constraint:
    """Allows exactly the tokens of `text_ids`, in order, then only end-of-generation tokens."""

    def __init__(self, text_ids: list[int], ends: set[int], vocab_size: int) -> None:
        self.text_ids, self.ends, self.vocab_size = text_ids, ends, vocab_size
        self.accepted: list[int] = []

    def allowed(self):
        import numpy as np

        mask = np.zeros(self.vocab_size, dtype=bool)
        if self.finished:
            mask[list(self.ends)] = True
        else:
            mask[self.text_ids[len(self.accepted)]] = True
        return mask

    def accept(self, token_id: int) -> None:
        self.accepted.append(token_id)

    @property
    def finished(self) -> bool:
        return len(self.accepted) >= len(self.text_ids)


def _fake_model(engine, stops=()):
    from types import SimpleNamespace

    return SimpleNamespace(engine=engine, stop_token_ids=frozenset(stops))


def test_the_scheduler_batches_any_engine() -> None:
    from tests.helpers.fake_engine import FakeEngine

    # Each prompt answers with its own letters, then the stop token 0.
    engine = FakeEngine({0: b"<end>"}, script=lambda prompt: [*prompt, 0], context_length=64)
    scheduler = BatchScheduler(_fake_model(engine, {0}), parallel=2, max_queue=4)
    try:
        prompts = ["abc", "de", "fghij"]
        handles = [
            scheduler.submit(BatchRequest([ord(c) for c in p], SamplingParams())) for p in prompts
        ]
        assert [_text(handle) for handle in handles] == prompts
        assert [h.result.finish_reason for h in handles] == ["stop"] * 3
        context = engine.contexts[0]
        assert (context.sequences, context.sequence_length) == (2, 64)
        # Some decode call evaluated both slots at once.
        assert any(len({item.sequence for item in items}) == 2 for items in context.calls)
    finally:
        scheduler.close()
    assert engine.contexts[0].closed


def test_a_finished_constraint_ends_at_an_end_of_generation_token() -> None:
    from tests.helpers.fake_engine import FakeEngine

    text = [ord(c) for c in '{"ok":1}']
    # The model would ramble; the constraint forces the text, then lets only token 3 follow.
    engine = FakeEngine({3: b"<eog>"}, script=[ord("x")] * 20, end_of_generation=[3])
    made: list[_Constraint] = []

    def constraint() -> _Constraint:
        made.append(_Constraint(text, {3}, engine.tokenizer_facts.vocab_size))
        return made[-1]

    scheduler = BatchScheduler(_fake_model(engine), parallel=1)
    try:
        handle = scheduler.submit(
            BatchRequest([1, 2], SamplingParams(max_tokens=20), constraint=constraint)
        )
        assert _text(handle) == '{"ok":1}'
        assert handle.result.finish_reason == "stop" and handle.result.stopped_by == "<eog>"
        assert len(made) == 1 and made[0].accepted == [*text, 3]
    finally:
        scheduler.close()


def test_a_failed_decode_ends_the_running_requests_and_the_scheduler_goes_on() -> None:
    from tests.helpers.fake_engine import FakeEngine

    engine = FakeEngine({}, script=[ord("a")] * 5, context_length=64)
    scheduler = BatchScheduler(_fake_model(engine), parallel=2)
    try:
        engine.fail_decodes = 1
        failed = scheduler.submit(BatchRequest([1, 2], SamplingParams(max_tokens=3)))
        with pytest.raises(ContextOverflowError):
            list(failed)
        assert scheduler.stats.requests_finished["error"] == 1
        handle = scheduler.submit(BatchRequest([1, 2], SamplingParams(max_tokens=3)))
        assert _text(handle) == "aaa" and handle.result.usage.cached_prompt_tokens == 0
    finally:
        scheduler.close()
