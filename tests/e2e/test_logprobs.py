"""Log-probabilities through the server: OpenAI chat and completions, Ollama, streamed and not."""

from __future__ import annotations

import json
import math

import pytest

from tests.e2e.conftest import Server

openai = pytest.importorskip("openai")

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{server.url}/v1", api_key=server.api_key, max_retries=0, timeout=120
    )


def test_chat_logprobs_cover_the_answer_token_by_token(client) -> None:
    reply = client.chat.completions.create(
        model="smollm2", messages=QUESTION, temperature=0, max_tokens=12,
        logprobs=True, top_logprobs=3, extra_body={"repeat_penalty": 1.0},
    )  # fmt: skip
    choice = reply.choices[0]
    content = choice.logprobs.content
    assert "".join(entry.token for entry in content) == choice.message.content
    assert len(content) == reply.usage.completion_tokens - (choice.finish_reason == "stop")
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        # Greedy without penalties: the chosen token is the most likely one.
        assert entry.top_logprobs[0].token == entry.token
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob)
        assert bytes(entry.bytes).decode("utf-8", "replace") == entry.token
        probabilities = [math.exp(alt.logprob) for alt in entry.top_logprobs]
        assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1.0001


def test_streamed_chat_logprobs_match_the_whole_reply(client) -> None:
    kwargs = dict(model="smollm2", messages=QUESTION, temperature=0, max_tokens=12, logprobs=True)
    whole = client.chat.completions.create(**kwargs).choices[0].logprobs.content
    streamed = [
        entry
        for chunk in client.chat.completions.create(stream=True, **kwargs)
        if chunk.choices and chunk.choices[0].logprobs
        for entry in chunk.choices[0].logprobs.content
    ]
    assert [(e.token, round(e.logprob, 4)) for e in streamed] == [
        (e.token, round(e.logprob, 4)) for e in whole
    ]
    assert all(e.top_logprobs == [] for e in streamed)  # top_logprobs not asked: none


def test_completions_logprobs_in_the_legacy_shape(client) -> None:
    reply = client.completions.create(
        model="smollm2", prompt="The capital of France is", max_tokens=3, temperature=0, logprobs=2
    )
    logprobs = reply.choices[0].logprobs
    assert "".join(logprobs.tokens) == reply.choices[0].text
    assert logprobs.tokens[0] == " Paris" and logprobs.token_logprobs[0] > math.log(0.5)
    assert all(len(top) == 2 for top in logprobs.top_logprobs)
    assert logprobs.text_offset[0] == 0


def test_no_logprobs_unless_asked(client) -> None:
    reply = client.chat.completions.create(model="smollm2", messages=QUESTION, max_tokens=4)
    assert reply.choices[0].logprobs is None


def test_echo_scores_the_prompts_own_tokens_as_evaluation_harnesses_ask(
    client, server: Server
) -> None:
    prompt = "The capital of France is"
    reply = client.completions.create(
        model="smollm2", prompt=prompt, max_tokens=1, temperature=0, echo=True, logprobs=2,
        extra_body={"repeat_penalty": 1.0},
    )  # fmt: skip
    choice = reply.choices[0]
    logprobs = choice.logprobs
    assert choice.text.startswith(prompt)
    count = reply.usage.prompt_tokens
    assert len(logprobs.tokens) == count + reply.usage.completion_tokens
    assert "".join(logprobs.tokens[:count]) == prompt  # the prompt, token by token
    assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None
    assert all(value <= 0 for value in logprobs.token_logprobs[1:])
    assert logprobs.text_offset == sorted(logprobs.text_offset) and logprobs.text_offset[0] == 0
    # The same figures again, whatever the server's slots held before (no cached prefix is used).
    again = client.completions.create(
        model="smollm2", prompt=prompt, max_tokens=1, temperature=0, echo=True, logprobs=0,
        extra_body={"repeat_penalty": 1.0},
    )  # fmt: skip
    first = logprobs.token_logprobs[1:count]
    assert again.choices[0].logprobs.token_logprobs[1:count] == pytest.approx(first, abs=1e-3)
    # A likelier continuation scores higher than an unlikely one, as a harness relies on.
    totals = {}
    for ending in (" Paris", " cheese"):
        scored = client.completions.create(
            model="smollm2", prompt=prompt + ending, max_tokens=1, echo=True, logprobs=0,
        )  # fmt: skip
        totals[ending] = scored.choices[0].logprobs.token_logprobs[count]
    assert totals[" Paris"] > totals[" cheese"]


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/v1/chat/completions", {"messages": QUESTION, "top_logprobs": 2}, "needs logprobs: true"),
        (
            "/v1/chat/completions",
            {"messages": QUESTION, "logprobs": True, "top_logprobs": 21},
            "top_logprobs",
        ),
        ("/v1/completions", {"prompt": "Hi", "logprobs": 30}, "from 0 to 20"),
        (
            "/v1/completions",
            {"prompt": "Hi", "logprobs": 1, "echo": True, "stream": True},
            "echo with logprobs needs stream: false",
        ),
        (
            "/api/chat",
            {"messages": QUESTION, "top_logprobs": 2, "stream": False},
            "needs logprobs: true",
        ),
    ],
)
def test_bad_logprob_requests_are_a_400(
    server: Server, path: str, body: dict, expected: str
) -> None:
    with server.client() as http:
        response = http.post(path, json={"model": "smollm2", "max_tokens": 2, **body})
    assert response.status_code == 400 and expected in response.text


def test_ollama_logprobs_streamed_and_not(server: Server) -> None:
    body = {
        "model": "smollm2", "prompt": "The capital of France is", "raw": True,
        "options": {"temperature": 0, "num_predict": 3}, "logprobs": True, "top_logprobs": 2,
    }  # fmt: skip
    with server.client() as http:
        whole = http.post("/api/generate", json={**body, "stream": False}).json()
        lines = http.post("/api/generate", json={**body, "stream": True}).text.splitlines()
    assert "".join(e["token"] for e in whole["logprobs"]) == whole["response"]
    assert whole["logprobs"][0]["token"] == " Paris"
    assert len(whole["logprobs"][0]["top_logprobs"]) == 2
    streamed = [e for line in lines for e in json.loads(line).get("logprobs", [])]
    assert [e["token"] for e in streamed] == [e["token"] for e in whole["logprobs"]]
