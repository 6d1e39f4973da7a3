"""The official `anthropic` package against a real `llmkit serve`: messages, streams, tools, errors."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Server

anthropic = pytest.importorskip("anthropic")

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
WEATHER = {
    "name": "get_weather",
    "description": "The current weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 30}},
        "required": ["city"],
    },
}


@pytest.fixture(scope="module")
def client(server: Server) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=server.api_key, max_retries=0)


def test_a_message_answers_with_usage(client) -> None:
    reply = client.messages.create(
        model="smollm2", max_tokens=40, messages=QUESTION, extra_body={"temperature": 0},
        system="Answer in one short sentence.",
    )  # fmt: skip
    assert reply.type == "message" and reply.role == "assistant"
    assert "Paris" in reply.content[0].text
    assert reply.stop_reason in ("end_turn", "max_tokens")
    assert reply.usage.input_tokens > 10 and reply.usage.output_tokens > 0


def test_max_tokens_and_stop_sequences_are_reported(client) -> None:
    cut = client.messages.create(model="smollm2", max_tokens=2, messages=QUESTION)
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 2
    stopped = client.messages.create(
        model="smollm2",
        max_tokens=40,
        messages=QUESTION,
        extra_body={"temperature": 0},
        stop_sequences=["Paris"],
    )
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == "Paris"
    assert "Paris" not in stopped.content[0].text


def test_a_streamed_message_gives_the_same_text(client) -> None:
    kwargs = dict(model="smollm2", max_tokens=30, messages=QUESTION, extra_body={"temperature": 0})
    whole = client.messages.create(**kwargs).content[0].text
    with client.messages.stream(**kwargs) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == whole == final.content[0].text
    assert final.stop_reason in ("end_turn", "max_tokens") and final.usage.output_tokens > 0


def test_a_forced_tool_call_and_its_result(client) -> None:
    reply = client.messages.create(
        model="smollm2", max_tokens=60, extra_body={"temperature": 0},
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER], tool_choice={"type": "tool", "name": "get_weather"},
    )  # fmt: skip
    assert reply.stop_reason == "tool_use"
    use = next(block for block in reply.content if block.type == "tool_use")
    assert use.name == "get_weather" and isinstance(use.input.get("city"), str)
    follow = client.messages.create(
        model="smollm2", max_tokens=30, extra_body={"temperature": 0}, tools=[WEATHER],
        messages=[
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": reply.content},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": use.id, "content": "Sunny, 21 C"},
            ]},
        ],
    )  # fmt: skip
    assert follow.content and follow.stop_reason in ("end_turn", "max_tokens", "tool_use")


def test_a_streamed_tool_call(client) -> None:
    with client.messages.stream(
        model="smollm2", max_tokens=60, extra_body={"temperature": 0},
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
        tools=[WEATHER], tool_choice={"type": "any"},
    ) as stream:  # fmt: skip
        final = stream.get_final_message()
    use = next(block for block in final.content if block.type == "tool_use")
    assert final.stop_reason == "tool_use" and use.name == "get_weather"


def test_errors_in_anthropics_shape(client, server: Server) -> None:
    wrong = anthropic.Anthropic(base_url=server.url, api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        wrong.messages.create(model="smollm2", max_tokens=5, messages=QUESTION)
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="nope", max_tokens=5, messages=QUESTION)
    with pytest.raises(anthropic.BadRequestError, match="Images are not supported"):
        client.messages.create(
            model="smollm2", max_tokens=5,
            messages=[{"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}},
            ]}],
        )  # fmt: skip
    with server.client() as http:
        response = http.post("/v1/messages", json={"model": "smollm2", "messages": QUESTION})
    assert response.status_code == 400
    assert (
        response.json()["type"] == "error" and "max_tokens" in response.json()["error"]["message"]
    )
