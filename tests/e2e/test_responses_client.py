"""The OpenAI Responses API with the official `openai` client: text, streams, tools, schemas, history."""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import Server

openai = pytest.importorskip("openai")

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 30}},
        "required": ["city"],
    },
}


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{server.url}/v1", api_key=server.api_key, max_retries=0, timeout=120
    )


def test_a_text_response_and_reading_it_back(client) -> None:
    response = client.responses.create(
        model="smollm2", input="What is the capital of France?", temperature=0,
        instructions="Answer in one short sentence.", max_output_tokens=40,
    )  # fmt: skip
    assert response.status in ("completed", "incomplete") and "Paris" in response.output_text
    assert response.usage.input_tokens > 10 and response.usage.output_tokens > 0
    again = client.responses.retrieve(response.id)
    assert again.output_text == response.output_text


def test_a_streamed_response_has_the_typed_events(client) -> None:
    kwargs = dict(
        model="smollm2", input="What is the capital of France?", temperature=0, max_output_tokens=30
    )
    whole = client.responses.create(**kwargs).output_text
    events = list(client.responses.create(stream=True, **kwargs))
    kinds = [event.type for event in events]
    assert kinds[0] == "response.created" and kinds[-1] in (
        "response.completed",
        "response.incomplete",
    )
    deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert deltas == whole == events[-1].response.output_text
    numbers = [event.sequence_number for event in events]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)


def test_a_function_call_then_its_output_via_previous_response_id(client) -> None:
    first = client.responses.create(
        model="smollm2", input="What is the weather in Paris?", tools=[WEATHER],
        tool_choice="required", temperature=0, max_output_tokens=60,
    )  # fmt: skip
    call = next(item for item in first.output if item.type == "function_call")
    assert call.name == "get_weather" and isinstance(json.loads(call.arguments)["city"], str)
    follow = client.responses.create(
        model="smollm2", previous_response_id=first.id, tools=[WEATHER], temperature=0,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"}],
        max_output_tokens=40,
    )  # fmt: skip
    assert follow.previous_response_id == first.id and follow.output


def test_a_json_schema_text_format(client) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}},
        "required": ["city"],
        "additionalProperties": False,
    }
    response = client.responses.create(
        model="smollm2", input="Name the capital of France as JSON.", max_output_tokens=40,
        text={"format": {"type": "json_schema", "name": "city", "schema": schema}},
    )  # fmt: skip
    assert isinstance(json.loads(response.output_text)["city"], str)


def test_errors_are_clear(client) -> None:
    with pytest.raises(openai.NotFoundError, match="no stored response"):
        client.responses.create(model="smollm2", input="Hi", previous_response_id="resp_nope")
    with pytest.raises(openai.BadRequestError, match="not supported"):
        client.responses.create(model="smollm2", input=[{"type": "reasoning", "summary": []}])
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_unknown")
