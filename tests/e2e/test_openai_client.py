"""The official `openai` package against a real `llmkit serve`: chat, completions, JSON, tools, errors."""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import Server

openai = pytest.importorskip("openai")
jsonschema = pytest.importorskip("jsonschema")

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 30}},
            "required": ["city"],
        },
    },
}


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{server.url}/v1", api_key=server.api_key, max_retries=0, timeout=120
    )


def test_models_are_listed(client) -> None:
    assert [model.id for model in client.models.list()] == ["smollm2"]
    assert client.models.retrieve("smollm2").id == "smollm2"


def test_chat_streamed_and_not_give_the_same_greedy_answer(client) -> None:
    reply = client.chat.completions.create(
        model="smollm2", messages=QUESTION, max_tokens=12, temperature=0
    )
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage.completion_tokens <= 12 and reply.usage.prompt_tokens > 5

    stream = client.chat.completions.create(
        model="smollm2",
        messages=QUESTION,
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == choice.message.content
    assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == choice.finish_reason


def test_legacy_completions(client) -> None:
    reply = client.completions.create(
        model="smollm2", prompt="The capital of France is", max_tokens=6, temperature=0
    )
    assert reply.choices[0].text and reply.usage.completion_tokens <= 6
    pieces = client.completions.create(
        model="smollm2",
        prompt="The capital of France is",
        max_tokens=6,
        temperature=0,
        stream=True,
    )
    assert "".join(chunk.choices[0].text for chunk in pieces) == reply.choices[0].text


def test_stop_strings_and_seed(client) -> None:
    kwargs = {
        "model": "smollm2",
        "messages": QUESTION,
        "max_tokens": 16,
        "temperature": 0.9,
        "seed": 11,
    }
    first = client.chat.completions.create(**kwargs).choices[0].message.content
    assert client.chat.completions.create(**kwargs).choices[0].message.content == first
    word = first.split()[1] if len(first.split()) > 1 else first[:2]
    cut = client.chat.completions.create(**kwargs, stop=[word]).choices[0]
    assert word not in cut.message.content and cut.finish_reason == "stop"


def test_json_schema_output_always_validates(client) -> None:
    for seed in (1, 2, 3):
        reply = client.chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": "Invent a person."}],
            max_tokens=60,
            temperature=1.0,
            seed=seed,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "person", "schema": PERSON},
            },
        )
        assert reply.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(reply.choices[0].message.content), PERSON)


def test_json_object_output_parses(client) -> None:
    reply = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Describe a cat in JSON."}],
        max_tokens=60,
        temperature=0,
        response_format={"type": "json_object"},
    )
    if reply.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(reply.choices[0].message.content), dict)
    else:  # a long object can run out of tokens; what there is must still be the start of one
        assert reply.choices[0].message.content.startswith("{")


def test_required_tool_call_and_tool_result(client) -> None:
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    reply = client.chat.completions.create(
        model="smollm2",
        messages=messages,
        tools=[WEATHER_TOOL],
        tool_choice="required",
        max_tokens=40,
        temperature=0,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and call.id.startswith("call_")
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, WEATHER_TOOL["function"]["parameters"])

    follow_up = [
        *messages,
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21, "sky": "clear"}'},
    ]
    answer = client.chat.completions.create(
        model="smollm2", messages=follow_up, max_tokens=12, temperature=0
    )
    assert answer.choices[0].message.content


def test_named_tool_call_streamed(client) -> None:
    stream = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Weather in Rome?"}],
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=40,
        temperature=0,
        stream=True,
    )
    chunks = [chunk for chunk in stream if chunk.choices]
    calls = [call for chunk in chunks for call in (chunk.choices[0].delta.tool_calls or [])]
    assert calls and calls[0].function.name == "get_weather"
    assert "city" in json.loads(calls[0].function.arguments)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_auto_tool_choice_answers_one_way_or_the_other(client) -> None:
    reply = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Say hello."}],
        tools=[WEATHER_TOOL],
        max_tokens=12,
        temperature=0,
    )
    message = reply.choices[0].message
    assert message.content or message.tool_calls


def test_embeddings(client) -> None:
    reply = client.embeddings.create(model="smollm2", input=["a cat", "a dog"])
    assert len(reply.data) == 2 and len(reply.data[0].embedding) == 576
    assert abs(sum(v * v for v in reply.data[0].embedding) - 1.0) < 1e-3


def test_errors_come_back_as_openai_errors(client, server: Server) -> None:
    with pytest.raises(openai.NotFoundError, match="not served"):
        client.chat.completions.create(model="nope", messages=QUESTION)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model="smollm2", messages=QUESTION, temperature=50)
    with pytest.raises(openai.BadRequestError, match="context window"):
        client.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": "word " * 2000}]
        )
    with pytest.raises(openai.BadRequestError, match="between 1 and 2, not 3"):
        client.chat.completions.create(model="smollm2", messages=QUESTION, n=3)
    with pytest.raises(openai.BadRequestError, match="schema"):
        client.chat.completions.create(
            model="smollm2", messages=QUESTION, response_format={"type": "json_schema"}
        )
    wrong_key = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="API key"):
        wrong_key.models.list()
    # ... and the server is still serving.
    assert client.chat.completions.create(model="smollm2", messages=QUESTION, max_tokens=2).choices
