"""`n` choices through the OpenAI API: a real server on loopback, the real batch scheduler, and the
scripted fake engine answering by seed, so every choice's text and every chunk's index is exact."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("httpx")

import httpx
from tests.helpers.fake_engine import FakeEngine
from tests.helpers.loopback import serve

from llmkit.errors import InvalidParameterError
from llmkit.generation.batching import BatchScheduler
from llmkit.model import Model
from llmkit.server import service
from llmkit.server.remote_backend import EngineServer, RemoteBackend
from llmkit.server.state import ServedModel, ServerSettings, ServerState
from llmkit.store.store import ModelManifest

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
END = 302
HELLO = [{"role": "user", "content": "Hello"}]
PARALLEL = 3


def _by_seed(seed: int | None) -> list[int]:
    """Seed 7 answers "seed 7 here", a character a token; without a seed, "any"."""
    text = "any" if seed is None else f"seed {seed} here"
    return [*(ord(c) for c in text), END]


def _fake_model() -> Model:
    engine = FakeEngine(
        {END: b"<|im_end|>"},
        script=[END],
        context_length=512,
        end_of_generation=[END],
        vocab_size=400,
        seeded_script=_by_seed,
    )
    manifest = ModelManifest(
        "fake", "/nowhere.gguf", "gguf", "0" * 64, 1, "test",
        info={"chat_template": CHATML, "eos_token": "<|im_end|>"},
    )  # fmt: skip
    return Model(manifest, engine)


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    model = _fake_model()
    scheduler = BatchScheduler(model, parallel=PARALLEL, max_queue=4, slot_context=512)
    state = ServerState([ServedModel("fake", model, scheduler)], ServerSettings())
    with serve(state) as served:
        yield served
    scheduler.close()


def _post(url: str, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{url}/v1/{path}", json={"model": "fake", **body}, timeout=20)


def _sse(text: str) -> list[Any]:
    lines = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    return [line if line == "[DONE]" else json.loads(line) for line in lines]


def test_chat_choices_each_with_its_seed_and_the_prompt_counted_once(url) -> None:
    one = _post(url, "chat/completions", {"messages": HELLO, "seed": 4}).json()
    reply = _post(url, "chat/completions", {"messages": HELLO, "seed": 4, "n": 3}).json()
    assert [c["index"] for c in reply["choices"]] == [0, 1, 2]
    texts = [c["message"]["content"] for c in reply["choices"]]
    assert texts == ["seed 4 here", "seed 5 here", "seed 6 here"]
    assert texts[0] == one["choices"][0]["message"]["content"]
    assert {c["finish_reason"] for c in reply["choices"]} == {"stop"}
    usage, single = reply["usage"], one["usage"]
    assert usage["prompt_tokens"] == single["prompt_tokens"]
    assert usage["completion_tokens"] == sum(len(t) + 1 for t in texts)  # each with its end
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_streamed_chunks_carry_their_choice_index(url) -> None:
    body = {
        "messages": HELLO,
        "seed": 20,
        "n": 2,
        "stream": True,
        "stream_options": {"include_usage": True},
        "logprobs": True,
    }
    events = _sse(_post(url, "chat/completions", body).text)
    assert events[-1] == "[DONE]" and events[-2]["choices"] == []
    texts, finishes, tokens = ["", ""], [None, None], [0, 0]
    for event in events[:-2]:
        (choice,) = event["choices"]
        index = choice["index"]
        texts[index] += choice["delta"].get("content") or ""
        finishes[index] = finishes[index] or choice["finish_reason"]
        tokens[index] += len((choice["logprobs"] or {}).get("content") or [])
    assert texts == ["seed 20 here", "seed 21 here"]
    assert finishes == ["stop", "stop"] and tokens == [12, 12]
    assert events[-2]["usage"]["completion_tokens"] == 26
    # Every choice opens with its role, before any text.
    assert [e["choices"][0]["delta"].get("role") for e in events[:2]] == ["assistant"] * 2


def test_completions_choices_streamed_and_not(url) -> None:
    body = {"prompt": "Once", "seed": 1, "n": 2, "max_tokens": 4, "echo": True}
    reply = _post(url, "completions", body).json()
    assert [c["text"] for c in reply["choices"]] == ["Onceseed", "Onceseed"]
    assert [c["index"] for c in reply["choices"]] == [0, 1]
    assert reply["usage"]["completion_tokens"] == 8
    body = {"prompt": "Once", "seed": 1, "n": 2, "max_tokens": 40, "stream": True}
    events = _sse(_post(url, "completions", body).text)
    texts = ["", ""]
    for event in events[:-1]:
        texts[event["choices"][0]["index"]] += event["choices"][0]["text"]
    assert texts == ["seed 1 here", "seed 2 here"] and events[-1] == "[DONE]"


def test_stop_strings_and_json_schemas_apply_to_every_choice(url) -> None:
    body = {"messages": HELLO, "seed": 3, "n": 2, "stop": [" h"]}
    reply = _post(url, "chat/completions", body).json()
    assert [c["message"]["content"] for c in reply["choices"]] == ["seed 3", "seed 4"]
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    body = {
        "messages": HELLO,
        "n": 2,
        "max_tokens": 30,
        "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
    }
    reply = _post(url, "chat/completions", body).json()
    texts = [choice["message"]["content"] for choice in reply["choices"]]
    # The fake engine's script is forced into the schema, in each choice by its own grammar.
    assert len(texts) == 2 and all("".join(t.split()).startswith('{"a"') for t in texts)


def test_n_above_the_slots_is_a_400_naming_the_limit(url) -> None:
    reply = _post(url, "chat/completions", {"messages": HELLO, "n": PARALLEL + 1})
    assert reply.status_code == 400
    message = reply.json()["error"]["message"]
    assert f"between 1 and {PARALLEL}, not {PARALLEL + 1}" in message
    assert _post(url, "completions", {"prompt": "x", "n": 0}).status_code == 400
    # ... and the server goes on serving.
    assert _post(url, "chat/completions", {"messages": HELLO, "n": PARALLEL}).status_code == 200


def test_an_engine_server_behind_the_model_takes_one_choice_per_request() -> None:
    import asyncio

    model = _fake_model()
    remote = RemoteBackend(model, EngineServer("http://127.0.0.1:1", "m", None, None), 512)
    state = ServerState([ServedModel("fake", model, remote)], ServerSettings())
    ask = service.GenerationRequest("fake", messages=HELLO)
    with pytest.raises(InvalidParameterError, match="n above 1 needs a local engine"):
        asyncio.run(service.start_choices(state, ask, 2))
