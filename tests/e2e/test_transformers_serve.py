"""`llmkit serve --engine transformers` on the tiny random model, used by the official clients."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import API_KEY, Server, launch_server

pytest.importorskip("torch")
pytest.importorskip("transformers")
openai = pytest.importorskip("openai")
ollama = pytest.importorskip("ollama")
httpx = pytest.importorskip("httpx")

pytestmark = pytest.mark.slow
MESSAGES = [{"role": "user", "content": "Hello there"}]


@pytest.fixture(scope="module")
def torch_server(
    tiny_gguf: Path, session_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    args = [str(tiny_gguf), "--engine", "transformers", "--api-key", API_KEY]
    args += ["--parallel", "2", "--context", "256", "--threads", "2"]
    log = tmp_path_factory.mktemp("torch-server") / "server.log"
    yield from launch_server(args, session_home, log, timeout=120)


@pytest.fixture(scope="module")
def model_name(torch_server: Server) -> str:
    listed = httpx.get(f"{torch_server.url}/v1/models", headers=torch_server.headers, timeout=30)
    names = [model["id"] for model in listed.json()["data"]]
    assert len(names) == 1
    return names[0]


def test_the_model_is_loaded_by_the_transformers_engine(
    torch_server: Server, model_name: str
) -> None:
    assert (
        f"Serving {model_name} (transformers) at {torch_server.url} "
        in torch_server.log.read_text()
    )


def test_openai_chat_completion(torch_server: Server, model_name: str) -> None:
    client = openai.OpenAI(
        base_url=f"{torch_server.url}/v1", api_key=torch_server.api_key, max_retries=0, timeout=120
    )
    reply = client.chat.completions.create(
        model=model_name, messages=MESSAGES, max_tokens=8, temperature=0
    )
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 3
    assert 1 <= reply.usage.completion_tokens <= 8
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_ollama_chat(torch_server: Server, model_name: str) -> None:
    client = ollama.Client(host=torch_server.url, headers=torch_server.headers, timeout=120)
    reply = client.chat(
        model=model_name, messages=MESSAGES, options={"num_predict": 8, "temperature": 0}
    )
    assert reply.done and reply.message.role == "assistant"
    assert reply.prompt_eval_count > 3
    assert 1 <= reply.eval_count <= 8
