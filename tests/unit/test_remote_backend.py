"""What the remote backend sends each kind of engine server (no server needed: the request body)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from llmkit.errors import ContextOverflowError, InvalidParameterError
from llmkit.generation.batching import BatchRequest
from llmkit.params import SamplingParams
from llmkit.server.remote_backend import EngineServer, RemoteBackend, normalized_url

BOS = 1
SCHEMA = {"type": "object"}


def _backend(owned_by: str, window: int = 64) -> RemoteBackend:
    model = SimpleNamespace(
        stop_token_ids=frozenset({7, 2}),
        format=SimpleNamespace(raw_adds_bos=True),
        engine=SimpleNamespace(tokenizer_facts=SimpleNamespace(bos_id=BOS)),
        detokenize=lambda ids: "".join(f"<{i}>" for i in ids),
    )
    return RemoteBackend(model, EngineServer("http://h:1", "m", owned_by, None), window)


def _request(prompt: list[int], **params) -> BatchRequest:
    return BatchRequest(prompt, SamplingParams(**params))


def test_vllm_gets_token_ids_and_its_own_parameter_names() -> None:
    body = _backend("vllm").body(_request([BOS, 5, 6], stop=("x",), seed=3), SCHEMA, None)
    assert body["prompt"] == [BOS, 5, 6] and body["model"] == "m"
    assert body["max_tokens"] == 61  # the window, less the prompt
    assert body["repetition_penalty"] == 1.1 and "repeat_penalty" not in body
    assert body["stop_token_ids"] == [2, 7] and body["stop"] == ["x"] and body["seed"] == 3
    assert body["response_format"]["json_schema"]["schema"] == SCHEMA
    assert body["stream"] and body["stream_options"] == {"include_usage": True}


def test_llama_server_gets_its_schema_field_and_llmkit_text_without_a_second_bos() -> None:
    body = _backend("llamacpp").body(_request([5], max_tokens=4), SCHEMA, None)
    assert body["json_schema"] == SCHEMA and body["repeat_penalty"] == 1.1
    assert body["max_tokens"] == 4
    text = _backend("llmkit", window=32).body(_request([BOS, 5, 6]), None, None)
    assert text["prompt"] == "<5><6>" and text["max_tokens"] == 29


def test_what_cannot_travel_is_refused() -> None:
    with pytest.raises(InvalidParameterError, match="takes no JSON schema"):
        _backend("llmkit").body(_request([5]), SCHEMA, None)
    with pytest.raises(InvalidParameterError, match="Log-probabilities"):
        _backend("vllm").body(BatchRequest([5], SamplingParams(), logprobs=2), None, None)
    required = SimpleNamespace(may_answer_in_text=False)
    with pytest.raises(InvalidParameterError, match="tool_choice 'auto'"):
        _backend("vllm").body(_request([5]), None, required)  # type: ignore[arg-type]
    with pytest.raises(ContextOverflowError, match="context window holds 64"):
        _backend("vllm").body(_request(list(range(64))), None, None)


def test_urls() -> None:
    assert normalized_url(" http://127.0.0.1:8000/v1/ ") == "http://127.0.0.1:8000"
    with pytest.raises(InvalidParameterError, match="must be an http"):
        normalized_url("127.0.0.1:8000")
