"""Ollama's model management through the official `ollama` client: create, copy, delete."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.e2e.conftest import Server

ollama = pytest.importorskip("ollama")


@pytest.fixture(scope="module")
def client(server: Server) -> ollama.Client:
    return ollama.Client(host=server.url, headers=server.headers, timeout=120)


def show_in_store(name: str, home: str) -> dict:
    shown = subprocess.run(
        [sys.executable, "-m", "llmkit", "show", name, "--json"],
        capture_output=True, text=True, env={**os.environ, "LLMKIT_HOME": home}, check=True,
    )  # fmt: skip
    return json.loads(shown.stdout)


def test_create_copy_and_delete_a_recipe(client, server: Server, session_home) -> None:
    statuses = [
        part.status
        for part in client.create(
            model="e2e-astro", from_="smollm2", system="You are an astronomer's assistant.",
            parameters={"temperature": 0.1, "num_predict": 32, "stop": ["Observer:"]},
            messages=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}],
            stream=True,
        )
    ]  # fmt: skip
    assert statuses[-1] == "success"
    stored = show_in_store("e2e-astro", str(session_home))
    assert stored["base"] == "smollm2" and stored["system_prompt"].startswith("You are an")
    assert stored["parameters"] == {"temperature": 0.1, "max_tokens": 32, "stop": ["Observer:"]}
    assert [m["role"] for m in stored["messages"]] == ["user", "assistant"]
    client.copy("e2e-astro", "e2e-astro-2")
    assert (
        show_in_store("e2e-astro-2", str(session_home))["system_prompt"] == stored["system_prompt"]
    )
    client.delete("e2e-astro-2")
    client.delete("e2e-astro")
    with pytest.raises(ollama.ResponseError) as missing:
        client.delete("e2e-astro")
    assert missing.value.status_code == 404


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"model": "e2e-bad", "from": "../../etc/passwd"}, "not a valid model name"),
        ({"model": "e2e-bad", "from": "smollm2", "template": "{{ .Prompt }}"}, "Go template"),
        ({"model": "e2e-bad", "from": "smollm2", "parameters": {"temperature": 99}}, "temperature"),
        (
            {"model": "e2e-bad", "from": "smollm2", "files": {"x.gguf": "sha256:00"}},
            "not supported",
        ),
        ({"model": "e2e-bad"}, "'from' must name"),
    ],
)
def test_bad_create_requests_are_400s(server: Server, body: dict, message: str) -> None:
    with server.client() as http:
        response = http.post("/api/create", json={**body, "stream": False})
    assert response.status_code == 400, response.text
    assert message in response.text


def test_the_served_model_cannot_be_deleted(server: Server) -> None:
    with server.client() as http:
        response = http.request("DELETE", "/api/delete", json={"model": "smollm2"})
    assert response.status_code == 400 and "is being served" in response.text


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/create", {"model": "e2e-foreign", "from": "smollm2", "stream": False}),
        ("POST", "/api/copy", {"source": "smollm2", "destination": "e2e-foreign"}),
        ("DELETE", "/api/delete", {"model": "e2e-foreign"}),
    ],
)
def test_a_foreign_web_page_cannot_manage_models(
    server: Server, session_home, method: str, path: str, body: dict
) -> None:
    with server.client() as http:
        response = http.request(method, path, json=body, headers={"Origin": "https://evil.example"})
    assert response.status_code == 403, response.text
    assert not (session_home / "models" / "e2e-foreign").exists()
