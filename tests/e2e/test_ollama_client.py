"""The official `ollama` package against a real `llmkit serve`: chat, generate, formats, tools, errors."""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import Server

ollama = pytest.importorskip("ollama")
jsonschema = pytest.importorskip("jsonschema")

CITY = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 30},
        "country": {"type": "string", "maxLength": 30},
    },
    "required": ["city", "country"],
}


@pytest.fixture(scope="module")
def client(server: Server) -> ollama.Client:
    return ollama.Client(host=server.url, headers=server.headers, timeout=120)


def test_tags_show_and_ps(client) -> None:
    assert [model.model for model in client.list().models] == ["smollm2"]
    shown = client.show("smollm2")
    assert "im_start" in shown.template and shown.details.family == "llama"
    assert [model.model for model in client.ps().models] == ["smollm2"]


def test_version(server: Server) -> None:
    import httpx

    assert httpx.get(f"{server.url}/api/version", headers=server.headers).json()["version"]


def test_chat_streamed_and_not(client) -> None:
    messages = [{"role": "user", "content": "Name a colour."}]
    options = {"num_predict": 10, "temperature": 0}
    reply = client.chat(model="smollm2:latest", messages=messages, options=options)
    assert reply.done and reply.message.content and reply.eval_count <= 10
    pieces = list(client.chat(model="smollm2", messages=messages, options=options, stream=True))
    assert "".join(piece.message.content for piece in pieces) == reply.message.content
    assert pieces[-1].done and pieces[-1].done_reason == reply.done_reason


def test_generate(client) -> None:
    reply = client.generate(
        model="smollm2", prompt="Say hi.", options={"num_predict": 6, "temperature": 0}
    )
    assert reply.response and reply.done
    raw = client.generate(
        model="smollm2", prompt="The sky is", raw=True, options={"num_predict": 4}, stream=True
    )
    assert any(part.response for part in raw)


def test_format_schema_and_json(client) -> None:
    reply = client.chat(
        model="smollm2",
        messages=[{"role": "user", "content": "Where is the Eiffel tower?"}],
        format=CITY,
        options={"num_predict": 60, "temperature": 0},
    )
    jsonschema.validate(json.loads(reply.message.content), CITY)
    reply = client.generate(
        model="smollm2", prompt="A cat as JSON.", format="json", options={"num_predict": 40}
    )
    assert reply.response.startswith("{")


def test_tools(client) -> None:
    def get_weather(city: str) -> str:
        """Get the current weather for a city.

        Args:
          city: The name of the city
        """
        return "sunny"

    reply = client.chat(
        model="smollm2",
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[get_weather],
        options={"num_predict": 40, "temperature": 0},
    )
    # "auto": a 135M model may answer in words; a call, when made, must be well-formed.
    for call in reply.message.tool_calls or []:
        assert call.function.name == "get_weather" and isinstance(call.function.arguments, dict)
    assert reply.message.content or reply.message.tool_calls


def test_embed(client) -> None:
    reply = client.embed(model="smollm2", input=["one", "two"])
    assert len(reply.embeddings) == 2 and len(reply.embeddings[0]) == 576


def test_errors(client, server: Server) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 404 and "not served" in caught.value.error
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(
            model="smollm2",
            messages=[{"role": "user", "content": "hi"}],
            options={"temperature": -1},
        )
    assert caught.value.status_code == 400 and "temperature" in caught.value.error
    anonymous = ollama.Client(host=server.url)
    with pytest.raises(ollama.ResponseError) as caught:
        anonymous.list()
    assert caught.value.status_code == 401
