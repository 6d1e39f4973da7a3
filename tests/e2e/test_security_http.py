"""The server against a hostile web page and hostile requests, over real HTTP on loopback.

A page in the user's browser can send a text/plain POST without a preflight, send any Origin, and
with DNS rebinding any Host; each must be refused. Hostile values in bodies (unbounded sampler
options, NaN, lone surrogates, deep nesting, unknown roles, `stream: "yes"`) must get a 4xx in the
API's own error shape, and leave the server serving.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx
import pytest

from tests.e2e.conftest import Server, metrics
from tests.helpers.cli import run_cli

GENERATE = {"model": "smollm2", "prompt": "Hi", "stream": False, "options": {"num_predict": 1}}
CHAT = {"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
EVIL = "http://evil.example"
ALLOWED_BY_FLAG = "http://localhost:*"
ALLOWED_BY_ENV = "https://notes.example"


@pytest.fixture(scope="module")
def open_server(
    builtin_model_path: Path, session_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A server without a key that allows one origin by flag (a pattern) and one by environment."""
    from llmkit.server.launch import serve_in_subprocess

    args = ["smollm2", "--allow-origin", ALLOWED_BY_FLAG, "--context", "512", "--threads", "1"]
    log = tmp_path_factory.mktemp("open-server") / "server.log"
    env = {"LLMKIT_HOME": str(session_home), "LLMKIT_ORIGINS": f"{ALLOWED_BY_ENV}, "}
    with serve_in_subprocess(args, log, env=env, timeout=90) as running:
        yield running.url


def assert_error_shape(path: str, response: httpx.Response, status: int) -> str:
    """The documented error body of the API behind `path`; returns its message."""
    assert response.status_code == status, response.text
    body = response.json()
    if path.startswith("/api/"):
        assert set(body) == {"error"} and isinstance(body["error"], str)
        return body["error"]
    error = body["error"]
    assert isinstance(error["message"], str) and error["type"] and error["code"] == str(status)
    return error["message"]


# ---- a web page in the user's browser --------------------------------------------------------
def test_a_cross_origin_simple_post_is_refused_before_anything_runs(server: Server) -> None:
    # What a page on another site can send without a preflight: text/plain, no key needed to try.
    accepted = 'llmkit_generation_requests_total{model="smollm2"}'
    before = metrics(server)[accepted]
    response = httpx.post(
        f"{server.url}/api/generate",
        content=json.dumps(GENERATE),
        headers={"Content-Type": "text/plain", "Origin": EVIL, **server.headers},
    )
    message = assert_error_shape("/api/generate", response, 403)
    assert EVIL in message and "--allow-origin" in message
    assert "access-control-allow-origin" not in response.headers
    assert metrics(server)[accepted] == before  # nothing reached the scheduler


def test_a_cross_origin_read_is_refused_even_for_get(server: Server) -> None:
    response = httpx.get(f"{server.url}/v1/models", headers={"Origin": EVIL, **server.headers})
    assert_error_shape("/v1/models", response, 403)


def test_a_body_that_is_not_declared_json_is_refused(server: Server) -> None:
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {**server.headers, **({"Content-Type": content_type} if content_type else {})}
        response = httpx.post(
            f"{server.url}/v1/chat/completions", content=json.dumps(CHAT), headers=headers
        )
        assert "application/json" in assert_error_shape("/v1/chat/completions", response, 415)
    charset = {**server.headers, "Content-Type": "application/json; charset=utf-8"}
    assert (
        httpx.post(
            f"{server.url}/v1/chat/completions",
            content=json.dumps(CHAT),
            headers=charset,
            timeout=60,
        ).status_code
        == 200
    )


@pytest.mark.parametrize("path", ["/api/show", "/health", "/", "/v1/models"])
def test_a_rebinding_host_is_refused_everywhere(server: Server, path: str) -> None:
    # DNS rebinding: the page's own name now points at 127.0.0.1, so the browser sends its Host.
    method = "POST" if path == "/api/show" else "GET"
    response = httpx.request(
        method,
        f"{server.url}{path}",
        json={"model": "smollm2"} if method == "POST" else None,
        headers={"Host": "evil.example", **server.headers},
    )
    assert response.status_code == 403
    assert "evil.example" in response.text
    assert "gguf" not in response.text  # the model's path never leaves


def test_loopback_host_names_are_accepted(server: Server) -> None:
    port = urlsplit(server.url).port
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "LOCALHOST"):
        response = httpx.get(f"{server.url}/health", headers={"Host": host})
        assert response.status_code == 200, host


def test_the_pages_own_origin_may_call_the_api(server: Server) -> None:
    # The chat page at / is same-origin: the browser sends Origin = the server's own address.
    response = httpx.post(
        f"{server.url}/v1/chat/completions",
        json=CHAT,
        timeout=60,
        headers={"Origin": server.url, **server.headers},
    )
    assert response.status_code == 200 and response.json()["choices"][0]["message"]
    assert httpx.get(f"{server.url}/", headers={"Origin": server.url}).status_code == 200


def test_a_preflight_from_an_unknown_origin_is_refused(server: Server) -> None:
    response = httpx.options(
        f"{server.url}/v1/chat/completions",
        headers={
            "Origin": EVIL,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, authorization",
        },
    )
    assert response.status_code == 403
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize(
    "origin", ["http://localhost:3000", "http://localhost:8080", ALLOWED_BY_ENV]
)
def test_allowed_origins_get_a_preflight_and_a_readable_answer(
    open_server: str, origin: str
) -> None:
    preflight = httpx.options(
        f"{open_server}/v1/chat/completions",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, x-stainless-os",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == origin
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert preflight.headers["access-control-allow-headers"] == "content-type, x-stainless-os"
    assert preflight.headers["vary"] == "Origin"
    response = httpx.post(
        f"{open_server}/v1/chat/completions", json=CHAT, headers={"Origin": origin}, timeout=60
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == origin
    assert "Origin" in response.headers["vary"]


@pytest.mark.parametrize(
    "origin",
    ["http://evil.example", "http://localhost.evil.example:3000", "null", "https://localhost:3000"],
)
def test_origins_outside_the_allowed_patterns_stay_refused(open_server: str, origin: str) -> None:
    response = httpx.post(
        f"{open_server}/api/generate", json=GENERATE, headers={"Origin": origin}, timeout=60
    )
    assert_error_shape("/api/generate", response, 403)


# ---- hostile values in request bodies --------------------------------------------------------
DEEP_CALLS = {"a": 1}
for _ in range(900):
    DEEP_CALLS = {"a": DEEP_CALLS}

CASES = [
    # item 2: sampler options without a bound
    ("/api/generate", {**GENERATE, "options": {"repeat_last_n": 2147483647}}, "repeat_last_n"),
    ("/api/generate", {**GENERATE, "options": {"repeat_last_n": 250000000}}, "repeat_last_n"),
    ("/api/generate", {**GENERATE, "options": {"top_k": 10**9}}, "top_k"),
    ("/api/generate", {**GENERATE, "options": {"num_predict": 2**40}}, "num_predict"),
    ("/api/generate", {**GENERATE, "options": {"num_ctx": 2**40}}, "num_ctx"),
    ("/api/chat", {**GENERATE, "options": {"seed": 2**64}}, "seed"),
    ("/v1/chat/completions", {**CHAT, "max_tokens": 10**12}, "max_tokens"),
    ("/v1/chat/completions", {**CHAT, "top_k": 10**6}, "top_k"),
    ("/v1/chat/completions", {**CHAT, "seed": -5}, "seed"),
    ("/v1/completions", {"prompt": "Hi", "max_tokens": 1, "stop": ["x"] * 100}, "stop"),
    # item 12: strict types
    ("/v1/chat/completions", {**CHAT, "stream": "yes"}, "stream"),
    ("/api/chat", {**GENERATE, "messages": CHAT["messages"], "stream": "yes"}, "stream"),
    ("/api/generate", {**GENERATE, "stream": 1}, "stream"),
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "wizard", "content": "Hi"}]}, "role"),
    ("/api/chat", {"model": "smollm2", "messages": [{"role": "wizard", "content": "Hi"}]}, "role"),
    # item 7: what used to be a 500
    (
        "/v1/chat/completions",
        {**CHAT, "messages": [{"role": "user", "content": "\ud800"}]},
        "surrogate",
    ),
    ("/api/generate", {**GENERATE, "prompt": "a\udfffb"}, "surrogate"),
    ("/api/chat", {**GENERATE, "model": "\ud800"}, "surrogate"),
    ("/v1/embeddings", {"input": "\ud800"}, "surrogate"),
    ("/api/embed", {"model": "smollm2", "input": ["ok", "\ud800"]}, "surrogate"),
    (
        "/v1/chat/completions",
        {
            **CHAT,
            "messages": [
                {"role": "assistant", "content": "", "tool_calls": [DEEP_CALLS]},
                {"role": "user", "content": "Hi"},
            ],
        },
        "nests deeper",
    ),
]


@pytest.mark.parametrize(("path", "body", "named"), CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_hostile_values_get_a_400_in_the_apis_own_shape(
    server: Server, path: str, body: dict, named: str
) -> None:
    # json.dumps escapes the surrogates as \\ud800, exactly what a hostile client sends.
    response = httpx.post(
        f"{server.url}{path}",
        content=json.dumps(body),
        headers={"Content-Type": "application/json", **server.headers},
        timeout=30,
    )
    assert named in assert_error_shape(path, response, 400)


RAW_CASES = [
    ("/api/generate", '{"model":"smollm2","prompt":"Hi","options":{"num_predict":NaN}}', "NaN"),
    ("/api/generate", '{"model":"smollm2","prompt":"Hi","options":{"top_k":Infinity}}', "NaN"),
    (
        "/v1/chat/completions",
        '{"messages":[{"role":"user","content":"Hi"}],"temperature":-Infinity}',
        "NaN",
    ),
    ("/v1/chat/completions", '{"messages":[{"role":"user","content":"Hi"}],"top_p":1e999}', "NaN"),
    ("/v1/chat/completions", '{"messages":' + "[" * 5000 + "]" * 5000 + "}", "nests deeper"),
    ("/api/chat", '{"model": "smollm2", "messages": [', "not valid JSON"),
    ("/v1/completions", b'{"prompt": "\xff\xfe"}', "not valid JSON"),
    ("/api/embed", '{"model": "smollm2", "input": "' + "1" * 10 + '"} trailing', "not valid JSON"),
]


@pytest.mark.parametrize(("path", "raw", "named"), RAW_CASES)
def test_bodies_that_are_not_plain_json_get_a_400_in_the_apis_own_shape(
    server: Server, path: str, raw: str | bytes, named: str
) -> None:
    response = httpx.post(
        f"{server.url}{path}",
        content=raw,
        headers={"Content-Type": "application/json", **server.headers},
        timeout=30,
    )
    message = assert_error_shape(path, response, 400)
    assert named in message and "detail" not in response.json()


def test_the_server_still_serves_after_every_hostile_request(server: Server) -> None:
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"
    with server.client() as client:
        response = client.post("/api/generate", json=GENERATE)
    assert response.status_code == 200 and response.json()["done"] is True


# ---- llmkit serve's own arguments ------------------------------------------------------------
def test_a_port_out_of_range_is_one_sentence() -> None:
    result = run_cli("serve", "--port", "70000", timeout=60)
    assert result.returncode != 0
    assert "between 1 and 65535" in result.stderr and "Traceback" not in result.stderr


def test_a_port_in_use_is_one_sentence_and_nothing_claims_to_serve() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_cli("serve", "--port", str(port), timeout=60)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"Port {port} on 127.0.0.1 is already in use" in output
    assert "Serving" not in output and "Traceback" not in output


def test_an_allowed_origin_without_a_scheme_is_refused_at_once() -> None:
    result = run_cli("serve", "--allow-origin", "localhost:3000", timeout=60)
    assert result.returncode != 0 and "needs a scheme" in result.stderr


def test_a_crafted_path_cannot_forge_lines_in_metrics(server: Server) -> None:
    # Found by the schemathesis suite: the raw path used to become a label in /metrics.
    forged = '/v1/x"} 1\nllmkit_forged_total{a="'
    httpx.get(f"{server.url}{quote(forged)}", headers=server.headers)
    httpx.get(f"{server.url}/v1/models/{quote(forged)}", headers=server.headers)
    text = httpx.get(f"{server.url}/metrics", headers=server.headers).text
    assert "forged" not in text
    assert all(len(line.rsplit(" ", 1)) == 2 for line in text.splitlines() if line)
