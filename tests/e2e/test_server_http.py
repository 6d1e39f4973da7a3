"""The server's guards over plain HTTP: API key, body limit, bad input, a full queue, disconnects."""

from __future__ import annotations

import httpx

from tests.e2e.conftest import MAX_BODY, PARALLEL, QUEUE, Server, metrics, wait_for_idle

CHAT = {"model": "smollm2", "messages": [{"role": "user", "content": "Count to one hundred."}]}


def test_health_needs_no_key_but_everything_else_does(server: Server) -> None:
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"
    assert httpx.get(f"{server.url}/").status_code == 200  # the page itself; it asks for the key
    denied = httpx.get(f"{server.url}/v1/models")
    assert denied.status_code == 401 and "API key" in denied.json()["error"]["message"]
    assert httpx.get(f"{server.url}/metrics").status_code == 401
    assert httpx.post(f"{server.url}/api/chat", json=CHAT).json() == {
        "error": "A valid API key is required: send 'Authorization: Bearer <key>'."
    }


def test_bad_requests_get_one_clear_sentence(server: Server) -> None:
    with server.client() as client:
        json_type = {"Content-Type": "application/json"}
        response = client.post("/v1/chat/completions", content=b"{not json", headers=json_type)
        assert (
            response.status_code == 400
            and response.json()["error"]["message"] == "The request body is not valid JSON."
        )
        response = client.post("/v1/chat/completions", json={"messages": "hi"})
        assert response.status_code == 400 and "messages" in response.json()["error"]["message"]
        response = client.post(
            "/api/generate",
            json={"model": "smollm2", "prompt": "hi", "options": {"num_predict": "x"}},
        )
        assert response.status_code == 400 and response.json() == {
            "error": "options.num_predict must be an integer."
        }
        response = client.post(
            "/v1/chat/completions",
            json={**CHAT, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
        )
        assert response.status_code == 400 and "image_url" in response.json()["error"]["message"]
        assert client.get("/v1/nowhere").status_code == 404
        too_big = client.post(
            "/v1/chat/completions", content=b"x" * (MAX_BODY + 1), headers=json_type
        )
        assert too_big.status_code == 413 and "limit" in too_big.json()["error"]["message"]
        assert (
            client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 1}).status_code == 200
        )


def test_a_full_queue_answers_503_with_retry_after(server: Server) -> None:
    body = {**CHAT, "max_tokens": 400, "stream": True, "temperature": 0.7}
    with server.client() as client:
        streams = []
        try:
            for _ in range(PARALLEL + QUEUE):
                stream = client.stream("POST", "/v1/chat/completions", json=body)
                streams.append(stream)
                stream.__enter__()
            refused = client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 1})
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "1"
            assert "slots are busy" in refused.json()["error"]["message"]
        finally:
            for stream in streams:  # hanging up must cancel each generation and free its slot
                stream.__exit__(None, None, None)
    figures = wait_for_idle(server)
    assert (
        figures['llmkit_generation_finished_total{model="smollm2",reason="cancelled"}'] >= PARALLEL
    )


def test_a_client_that_disconnects_mid_stream_stops_its_generation(server: Server) -> None:
    before = metrics(server).get(
        'llmkit_generation_finished_total{model="smollm2",reason="cancelled"}', 0
    )
    with (
        server.client() as client,
        client.stream(
            "POST", "/api/chat", json={**CHAT, "options": {"num_predict": 500}}
        ) as response,
    ):
        for line in response.iter_lines():
            if line:
                break
    figures = wait_for_idle(server)
    assert (
        figures['llmkit_generation_finished_total{model="smollm2",reason="cancelled"}']
        == before + 1
    )


def test_metrics_report_tokens_and_time_to_first_token(server: Server) -> None:
    with server.client() as client:
        client.post("/v1/completions", json={"prompt": "Hello", "max_tokens": 2})
    figures = metrics(server)
    assert figures['llmkit_completion_tokens_total{model="smollm2"}'] > 0
    assert figures['llmkit_time_to_first_token_seconds_count{model="smollm2"}'] > 0
    assert figures['llmkit_slots_total{model="smollm2"}'] == PARALLEL
    # Each API route is its own label, not lumped under "other".
    assert figures['llmkit_http_requests_total{path="/v1/completions",status="200"}'] >= 1
