"""Property-based fuzzing of the HTTP API against a real server on loopback.

Hypothesis builds request bodies field by field for every POST endpoint: right and wrong types,
values at and past each bound, NaN and Infinity, lone surrogates, deep nesting, unknown fields,
and raw bytes that are not JSON at all. Whatever arrives, the server must answer below 500 in the
API's own error shape, within a time bound, and still serve afterwards with its memory bounded.
Counts are bounded so the suite takes about a minute; figures are in docs/security.md.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Server, wait_for_idle

hypothesis = pytest.importorskip("hypothesis")
psutil = pytest.importorskip("psutil")
st = hypothesis.strategies

EXAMPLES = int(os.environ.get("LLMKIT_FUZZ_EXAMPLES", "100"))
REQUEST_TIMEOUT = 30  # seconds: generation is capped at a few tokens, so this is a hang
RSS_GROWTH_LIMIT = 300 * 2**20  # the embedder's context is created on first use (~tens of MB)

# ---- values ----------------------------------------------------------------------------------
HOSTILE_TEXT = ["\ud800", "a\udfffb", "\x00", "{{ 7 * 7 }}", "%2000000000d", "\u202e", "💥" * 20]
text = st.one_of(st.text(max_size=40), st.sampled_from(HOSTILE_TEXT))
edge_ints = st.sampled_from([0, -1, -2, 1, 2**31 - 1, 2**31, 2**32, 2**63, -(2**63), 10**30])
number = st.one_of(
    st.integers(-(2**70), 2**70),
    edge_ints,
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([float("nan"), float("inf"), -float("inf")]),  # sent as NaN/Infinity
)
leaf = st.one_of(st.none(), st.booleans(), number, text)
anything = st.recursive(
    leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)


def sometimes(valid: Any) -> Any:
    """Mostly a valid value, sometimes anything at all."""
    return st.one_of(valid, valid, valid, anything)


def optional(**fields: Any) -> Any:
    return st.fixed_dictionaries({}, optional=fields)


# Generation is always capped at a few tokens (or refused), so each example is quick.
few_tokens = st.one_of(st.integers(1, 3), st.integers(1, 3), edge_ints, anything)
temperature = st.one_of(st.floats(0, 2), number)
model = st.one_of(st.just("smollm2"), st.just("smollm2:latest"), text)
roles = st.sampled_from(["system", "user", "assistant", "tool", "developer", "wizard", ""])
content = st.one_of(
    text,
    st.none(),
    st.lists(st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url"]), "text": text})),
)
message = st.fixed_dictionaries(
    {"role": sometimes(roles), "content": sometimes(content)},
    optional={"tool_calls": anything, "name": text, "tool_call_id": text},
)
small_schema = st.sampled_from(
    [
        {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
        {"type": "string", "maxLength": 5},
        {"type": "array", "items": {"type": "boolean"}, "maxItems": 2},
        {"enum": ["yes", "no"]},
    ]
)
sampling = {
    "temperature": temperature,
    "top_p": number,
    "top_k": st.one_of(st.integers(0, 50), number),
    "seed": st.one_of(st.integers(0, 2**32 - 1), number),
    "presence_penalty": number,
    "frequency_penalty": number,
    "repeat_penalty": number,
    "min_p": number,
    "stop": st.one_of(text, st.lists(text, max_size=20), anything),
    "stream": st.one_of(st.booleans(), anything),
    "n": st.one_of(st.just(1), number),
    "logprobs": anything,
    "ignore_eos": st.one_of(st.booleans(), anything),
    "user": anything,
}


def openai_chat() -> Any:
    required = {"messages": sometimes(st.lists(message, min_size=1, max_size=3))}
    return st.tuples(
        st.fixed_dictionaries({**required, "max_tokens": few_tokens}),
        optional(
            model=model,
            response_format=st.one_of(
                st.just({"type": "json_object"}),
                small_schema.map(
                    lambda s: {"type": "json_schema", "json_schema": {"name": "x", "schema": s}}
                ),
                anything,
            ),
            **sampling,
        ),
    ).map(lambda parts: {**parts[1], **parts[0]})


def openai_completion() -> Any:
    return st.tuples(
        st.fixed_dictionaries(
            {
                "prompt": sometimes(st.one_of(text, st.lists(text, max_size=2))),
                "max_tokens": few_tokens,
            }
        ),
        optional(model=model, echo=st.one_of(st.booleans(), anything), **sampling),
    ).map(lambda parts: {**parts[1], **parts[0]})


ollama_options = st.tuples(
    st.fixed_dictionaries({"num_predict": few_tokens}),
    optional(
        temperature=temperature,
        top_k=st.one_of(st.integers(0, 50), number),
        top_p=number,
        seed=number,
        repeat_last_n=st.one_of(st.integers(0, 64), number),
        repeat_penalty=number,
        num_ctx=number,
        num_thread=number,
        mirostat=number,
        stop=st.one_of(text, st.lists(text, max_size=20), anything),
    ),
).map(lambda parts: {**parts[1], **parts[0]})


def ollama_body(extra: dict[str, Any]) -> Any:
    return st.tuples(
        st.fixed_dictionaries({"model": model, "options": sometimes(ollama_options), **extra}),
        optional(
            stream=st.one_of(st.booleans(), anything),
            format=st.one_of(st.just("json"), small_schema, anything),
            keep_alive=anything,
            raw=st.one_of(st.booleans(), anything),
            system=text,
        ),
    ).map(lambda parts: {**parts[1], **parts[0]})


embed_input = sometimes(st.one_of(text, st.lists(text, min_size=1, max_size=3)))
BODIES = {
    "/v1/chat/completions": openai_chat(),
    "/v1/completions": openai_completion(),
    "/v1/embeddings": st.fixed_dictionaries(
        {"input": embed_input}, optional={"model": model, "encoding_format": anything}
    ),
    "/api/chat": ollama_body({"messages": sometimes(st.lists(message, max_size=3))}),
    "/api/generate": ollama_body({"prompt": sometimes(text)}),
    "/api/embed": st.fixed_dictionaries({"model": model, "input": embed_input}),
    "/api/show": optional(model=model, name=model, verbose=anything),
}


def nested(depth: int, kind: str) -> str:
    return kind[0] * depth + kind[1] * depth


raw_bodies = st.one_of(
    st.binary(max_size=64),
    st.integers(1, 3000).map(lambda d: '{"messages": ' + nested(d, "[]") + "}"),
    st.integers(1, 3000).map(
        lambda d: '{"model": "smollm2", "options": ' + '{"a":' * d + "1" + "}" * d + "}"
    ),
    st.sampled_from(['{"model": "smollm2"', "[]", "null", '"text"', "1e999", '{"": NaN}', "{}"]),
)
endpoint = st.sampled_from(sorted(BODIES))


def send(client: httpx.Client, path: str, content: bytes) -> httpx.Response:
    return client.post(
        path, content=content, headers={"Content-Type": "application/json"}, timeout=REQUEST_TIMEOUT
    )


def assert_answered_well(path: str, response: httpx.Response) -> None:
    assert response.status_code < 500, (path, response.status_code, response.text[:500])
    if response.status_code >= 400:
        error = response.json()["error"]
        if path.startswith("/api/"):
            assert isinstance(error, str) and error, response.text
        else:
            assert isinstance(error["message"], str) and error["message"], response.text


def server_process(server: Server) -> Any:
    port = server.url.rsplit(":", 1)[1]
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "serve" in cmdline and port in cmdline:
            return process
    raise AssertionError(f"no server process listening on port {port}")


FIGURES: dict[str, Any] = {"inputs": 0, "statuses": {}}


def record(response: httpx.Response) -> None:
    FIGURES["inputs"] += 1
    statuses = FIGURES["statuses"]
    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1


def test_fuzzed_request_bodies_never_get_a_5xx(server: Server) -> None:
    process = server_process(server)
    rss_before = process.memory_info().rss
    settings = hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=REQUEST_TIMEOUT * 1000,
        derandomize=True,  # the same inputs each run: a failure here is reproducible
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )

    with server.client() as client:

        @settings
        @hypothesis.given(path=endpoint, data=st.data())
        def fuzz_fields(path: str, data: Any) -> None:
            body = data.draw(BODIES[path])
            response = send(client, path, json.dumps(body).encode())  # NaN stays NaN
            record(response)
            assert_answered_well(path, response)

        @settings
        @hypothesis.given(path=endpoint, raw=raw_bodies)
        def fuzz_raw(path: str, raw: str | bytes) -> None:
            response = send(client, path, raw.encode() if isinstance(raw, str) else raw)
            record(response)
            assert_answered_well(path, response)

        started = time.monotonic()
        fuzz_fields()
        fuzz_raw()
        elapsed = time.monotonic() - started

    wait_for_idle(server)
    assert httpx.get(f"{server.url}/health", timeout=10).json()["status"] == "ok"
    rss_after = process.memory_info().rss
    print(
        json.dumps(
            {
                "inputs": FIGURES["inputs"],
                "statuses": FIGURES["statuses"],
                "seconds": round(elapsed, 1),
                "rss_before_mb": round(rss_before / 2**20),
                "rss_after_mb": round(rss_after / 2**20),
            }
        )
    )
    assert FIGURES["inputs"] >= 2 * EXAMPLES
    assert FIGURES["statuses"].get(200, 0) > 0, FIGURES  # some inputs were valid and served
    assert rss_after - rss_before < RSS_GROWTH_LIMIT, (rss_before, rss_after)


# ---- cases from the server's own OpenAPI description -----------------------------------------
def _cap_generation(case: Any) -> None:
    """Keep a valid generation request to a few tokens; an invalid one is left as it is."""
    body, path = case.body, case.operation.path
    if not isinstance(body, dict):
        return
    if path in ("/v1/chat/completions", "/v1/completions"):
        body["max_tokens"] = 2
    elif path in ("/api/chat", "/api/generate"):
        options = body.get("options")
        if options is None:
            body["options"] = {"num_predict": 2}
        elif isinstance(options, dict):
            options["num_predict"] = 2


def test_schemathesis_cases_from_the_servers_openapi_never_get_a_5xx(server: Server) -> None:
    schemathesis = pytest.importorskip("schemathesis")
    description = httpx.get(f"{server.url}/openapi.json", headers=server.headers, timeout=10)
    schema = schemathesis.openapi.from_dict(description.json())
    modes = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {"/v1/chat/completions", "/api/chat", "/api/show"} <= {op.path for op in operations}
    cases = st.one_of(
        [operation.as_strategy(generation_mode=mode) for operation in operations for mode in modes]
    )
    process = server_process(server)
    rss_before = process.memory_info().rss
    seen: dict[int, int] = {}

    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=REQUEST_TIMEOUT * 1000,
        derandomize=True,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(case=cases)
    def fuzz(case: Any) -> None:
        _cap_generation(case)
        response = case.call(base_url=server.url, headers=server.headers, timeout=REQUEST_TIMEOUT)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        assert response.status_code < 500, (case.operation.path, case.body, response.content[:500])
        if response.status_code >= 400 and case.operation.path.startswith(("/v1/", "/api/")):
            error = json.loads(response.content)["error"]
            assert isinstance(error, str if case.operation.path.startswith("/api/") else dict)

    started = time.monotonic()
    fuzz()
    elapsed = time.monotonic() - started
    wait_for_idle(server)
    assert httpx.get(f"{server.url}/health", timeout=10).json()["status"] == "ok"
    rss_after = process.memory_info().rss
    print(
        json.dumps(
            {
                "schemathesis_inputs": sum(seen.values()),
                "statuses": seen,
                "seconds": round(elapsed, 1),
                "rss_before_mb": round(rss_before / 2**20),
                "rss_after_mb": round(rss_after / 2**20),
            }
        )
    )
    assert sum(seen.values()) >= EXAMPLES // 2
    assert rss_after - rss_before < RSS_GROWTH_LIMIT, (rss_before, rss_after)
