"""n choices of one prompt in the batch scheduler: read once, copied, decoded as n sequences.

On the scripted fake engine the decode calls and copies are exact; on the tiny random model (both
engines) choice i must answer what a request of its own with seed + i answers.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from tests.helpers.fake_engine import FakeEngine

import llmkit
from llmkit.errors import InvalidParameterError
from llmkit.generation.batching import BatchRequest, BatchScheduler
from llmkit.params import SamplingParams

END = 0


def _fake_scheduler(engine: FakeEngine, **options) -> BatchScheduler:
    model = SimpleNamespace(engine=engine, stop_token_ids=frozenset({END}))
    return BatchScheduler(model, **options)


def _text(handle) -> str:
    return "".join(chunk.text for chunk in handle)


def _by_seed(seed: int | None) -> list[int]:
    """Each seed its own answer: "s7" for seed 7, then the end."""
    return [*(ord(c) for c in f"s{seed}"), END]


def _prompt_tokens_read(context) -> dict[int, int]:
    """How many tokens each sequence was given, over every decode call."""
    counts: dict[int, int] = {}
    for items in context.calls:
        for item in items:
            counts[item.sequence] = counts.get(item.sequence, 0) + len(item.tokens)
    return counts


def test_the_prompt_is_read_once_and_each_choice_samples_with_its_own_seed() -> None:
    engine = FakeEngine({END: b"<end>"}, script=[END], seeded_script=_by_seed)
    scheduler = _fake_scheduler(engine, parallel=4, max_queue=4)
    try:
        prompt = [ord(c) for c in "a prompt of some length"]
        handles = scheduler.submit_choices(BatchRequest(prompt, SamplingParams(seed=7)), 3)
        assert [_text(handle) for handle in handles] == ["s7", "s8", "s9"]
        context = engine.contexts[0]
        leader = context.calls[0][0].sequence
        assert context.calls[0] == [context.calls[0][0]] and context.calls[0][0].tokens == prompt
        targets = [target for source, target in context.copies if source == leader]
        assert len(context.copies) == len(set(targets)) == 2 and leader not in targets
        # Every other sequence got only its own answer's tokens, never the prompt.
        for sequence, count in _prompt_tokens_read(context).items():
            assert count == (len(prompt) + 2 if sequence == leader else 2)
        results = [handle.result for handle in handles]
        assert [r.usage.prompt_tokens for r in results] == [len(prompt)] * 3
        assert [r.usage.cached_prompt_tokens for r in results] == [0, len(prompt), len(prompt)]
        assert scheduler.stats.prompt_tokens_total == len(prompt)
        assert [p.seed for p in engine.sampler_params] == [7, 8, 9]
        assert scheduler.busy_slots == 0
    finally:
        scheduler.close()


def test_without_a_seed_the_choices_sample_independently_and_seeds_wrap() -> None:
    engine = FakeEngine({END: b"<end>"}, script=[END], seeded_script=_by_seed)
    scheduler = _fake_scheduler(engine, parallel=2)
    try:
        handles = scheduler.submit_choices(BatchRequest([1, 2], SamplingParams()), 2)
        assert [_text(handle) for handle in handles] == ["sNone", "sNone"]
        handles = scheduler.submit_choices(BatchRequest([1, 2], SamplingParams(seed=2**32 - 1)), 2)
        assert [_text(handle) for handle in handles] == [f"s{2**32 - 1}", "s0"]
    finally:
        scheduler.close()


def test_n_must_fit_the_slots() -> None:
    scheduler = _fake_scheduler(FakeEngine({}, script=[END]), parallel=2)
    try:
        with pytest.raises(InvalidParameterError, match=r"between 1 and 2, not 3.*--parallel 2"):
            scheduler.submit_choices(BatchRequest([1], SamplingParams()), 3)
        with pytest.raises(InvalidParameterError, match="not 0"):
            scheduler.submit_choices(BatchRequest([1], SamplingParams()), 0)
    finally:
        scheduler.close()


def test_a_request_for_choices_waits_for_enough_free_slots_and_is_not_overtaken() -> None:
    engine = FakeEngine({END: b"<end>"}, script=[ord("x")] * 3 + [END], context_length=64)
    engine.decode_delay = 0.01
    scheduler = _fake_scheduler(engine, parallel=2, max_queue=4)
    try:
        params = SamplingParams(max_tokens=6)
        first = scheduler.submit(BatchRequest([1], params))
        pair = scheduler.submit_choices(BatchRequest([2], params), 2)
        last = scheduler.submit(BatchRequest([3], params))
        assert [_text(h) for h in [first, *pair, last]] == ["xxx"] * 4
        # The pair started (its first token) before the single request queued behind it.
        assert max(h.result.timing.first_token_seconds + h.submitted for h in pair) <= (
            last.result.timing.first_token_seconds + last.submitted
        )
    finally:
        scheduler.close()


def test_a_waiting_request_for_choices_that_is_cancelled_holds_no_one_back() -> None:
    engine = FakeEngine({END: b"<end>"}, script=[ord("x")], context_length=256)
    engine.decode_delay = 0.01
    scheduler = _fake_scheduler(engine, parallel=2, max_queue=4)
    try:
        long = scheduler.submit(BatchRequest([1], SamplingParams(max_tokens=200)))
        pair = scheduler.submit_choices(BatchRequest([2], SamplingParams(max_tokens=60)), 2)
        for handle in pair:
            handle.cancel()
        short = scheduler.submit(BatchRequest([3], SamplingParams(max_tokens=2)))
        assert _text(short) == "xx"
        assert long.result is None  # the short one ran beside it, not after it
        assert [_text(h) for h in pair] == ["", ""]
        assert {h.result.finish_reason for h in pair} == {"cancelled"}
        assert _text(long) == "x" * 200
    finally:
        scheduler.close()


def test_cancelling_the_choice_that_reads_the_prompt_hands_it_on() -> None:
    engine = FakeEngine({END: b"<end>"}, script=[END], seeded_script=_by_seed, context_length=256)
    engine.decode_delay = 0.02
    # Four prompt tokens per step: reading the prompt takes many steps.
    scheduler = _fake_scheduler(engine, parallel=3, batch_size=4)
    try:
        prompt = list(range(1, 81))
        handles = scheduler.submit_choices(BatchRequest(prompt, SamplingParams(seed=1)), 3)
        context = engine.contexts[0]
        deadline = time.monotonic() + 10
        while len(context.calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.005)
        handles[0].cancel()
        handles[2].cancel()  # a follower cancelled on its own: the others carry on
        texts = [_text(handle) for handle in handles]
        assert [h.result.finish_reason for h in handles] == ["cancelled", "stop", "cancelled"]
        assert texts[1] == "s2"
        # The prompt was read once in all: the heir went on from where the first had got to.
        read = _prompt_tokens_read(context)
        assert sum(read.values()) == len(prompt) + 2
        assert scheduler.busy_slots == 0
    finally:
        scheduler.close()


def test_the_prompt_logprobs_reach_every_choice() -> None:
    engine = FakeEngine({END: b"<end>"}, script=[ord("y"), END])
    scheduler = _fake_scheduler(engine, parallel=2)
    try:
        request = BatchRequest([5, 6, 7], SamplingParams(), logprobs=1, prompt_logprobs=True)
        handles = scheduler.submit_choices(request, 2)
        assert [_text(handle) for handle in handles] == ["y", "y"]
        for handle in handles:
            assert [entry.bytes for entry in handle.result.prompt_logprobs] == [
                b"\x05",
                b"\x06",
                b"\x07",
            ]
            assert len(handle.result.logprobs) == 1
    finally:
        scheduler.close()


# ---- on the tiny random model, both engines -----------------------------------------------
@pytest.fixture(
    scope="module", params=["llamacpp", pytest.param("transformers", marks=pytest.mark.torch)]
)
def tiny(request: pytest.FixtureRequest, tiny_gguf: Path):
    if request.param == "transformers":
        pytest.importorskip("torch")
    with llmkit.load(str(tiny_gguf), engine=request.param, context_length=128, threads=1) as model:
        scheduler = BatchScheduler(model, parallel=3, slot_context=128)
        yield model, scheduler
        scheduler.close()


def test_each_choice_answers_as_a_request_with_its_own_seed(tiny) -> None:
    model, scheduler = tiny
    prompt = model.prompt_ids([{"role": "user", "content": "the cat"}])
    params = model.params(temperature=1.0, seed=11, max_tokens=10, top_k=0, min_p=0.0)
    handles = scheduler.submit_choices(BatchRequest(prompt, params, logprobs=2), 3)
    choices = [(_text(handle), handle.result) for handle in handles]
    for index, (text, result) in enumerate(choices):
        own_seed = dataclasses.replace(params, seed=11 + index)
        alone = scheduler.submit(BatchRequest(prompt, own_seed, logprobs=2))
        assert _text(alone) == text
        assert alone.result.token_ids == result.token_ids
        expected = [entry.logprob for entry in alone.result.logprobs]
        assert [entry.logprob for entry in result.logprobs] == pytest.approx(expected, abs=1e-3)
    assert len({tuple(result.token_ids) for _, result in choices}) > 1  # they are not copies


def test_greedy_choices_equal_the_one_greedy_answer(tiny) -> None:
    model, scheduler = tiny
    prompt = model.prompt_ids([{"role": "user", "content": "hello there"}])
    params = model.params(temperature=0, max_tokens=12, repeat_penalty=1.0, stop=["e t"])
    alone = scheduler.submit(BatchRequest(prompt, params))
    expected = _text(alone)
    handles = scheduler.submit_choices(BatchRequest(prompt, params), 3)
    assert [_text(handle) for handle in handles] == [expected] * 3
    assert {handle.result.finish_reason for handle in handles} == {alone.result.finish_reason}
