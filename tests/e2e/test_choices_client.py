"""`n` choices with the official `openai` client against a real `llmkit serve` of the built-in model
(two slots): seeded choices are reproducible, streamed ones match, the prompt is counted once."""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import Server

openai = pytest.importorskip("openai")

QUESTION = [{"role": "user", "content": "Name a colour."}]
SAMPLED = {"temperature": 1.0, "seed": 5, "max_tokens": 8}


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{server.url}/v1", api_key=server.api_key, max_retries=0, timeout=120
    )


def test_seeded_choices_are_reproducible_and_each_is_its_own_request(client) -> None:
    reply = client.chat.completions.create(model="smollm2", messages=QUESTION, n=2, **SAMPLED)
    assert [choice.index for choice in reply.choices] == [0, 1]
    texts = [choice.message.content for choice in reply.choices]
    again = client.chat.completions.create(model="smollm2", messages=QUESTION, n=2, **SAMPLED)
    assert [choice.message.content for choice in again.choices] == texts
    # Choice 1 is what a request of its own with seed + 1 answers.
    second = client.chat.completions.create(
        model="smollm2", messages=QUESTION, **{**SAMPLED, "seed": 6}
    )
    assert second.choices[0].message.content == texts[1]
    assert reply.usage.prompt_tokens == second.usage.prompt_tokens  # the prompt counted once
    assert reply.usage.completion_tokens <= 2 * 8


def test_streamed_choices_match_the_blocking_ones(client) -> None:
    reply = client.chat.completions.create(model="smollm2", messages=QUESTION, n=2, **SAMPLED)
    stream = client.chat.completions.create(
        model="smollm2",
        messages=QUESTION,
        n=2,
        stream=True,
        stream_options={"include_usage": True},
        **SAMPLED,
    )
    texts, finishes, usage = ["", ""], [None, None], None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            finishes[choice.index] = finishes[choice.index] or choice.finish_reason
    assert texts == [choice.message.content for choice in reply.choices]
    assert finishes == [choice.finish_reason for choice in reply.choices]
    assert usage is not None and usage.completion_tokens == reply.usage.completion_tokens


def test_completions_choices_with_logprobs(client) -> None:
    reply = client.completions.create(
        model="smollm2", prompt="The sky is", n=2, logprobs=1, **SAMPLED
    )
    assert len(reply.choices) == 2
    for choice in reply.choices:
        assert len(choice.logprobs.tokens) == len(choice.logprobs.token_logprobs) > 0


@pytest.mark.slow
def test_a_forced_tool_call_in_every_choice(client) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "paint",
            "parameters": {
                "type": "object",
                "properties": {"colour": {"type": "string", "maxLength": 8}},
                "required": ["colour"],
            },
        },
    }
    reply = client.chat.completions.create(
        model="smollm2",
        messages=QUESTION,
        n=2,
        tools=[tool],
        tool_choice="required",
        temperature=1.0,
        seed=3,
        max_tokens=32,
    )
    for choice in reply.choices:
        assert choice.finish_reason == "tool_calls"
        (call,) = choice.message.tool_calls
        assert call.function.name == "paint" and "colour" in json.loads(call.function.arguments)


def test_n_above_the_slots_is_refused_naming_the_limit(client) -> None:
    with pytest.raises(openai.BadRequestError, match=r"between 1 and 2, not 3.*--parallel 2"):
        client.completions.create(model="smollm2", prompt="Hi", n=3)
