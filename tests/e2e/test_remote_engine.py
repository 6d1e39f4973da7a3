"""`llmkit serve --engine-url`: a real llmkit server in front of a second one used as the engine server.

The engine server is a real OpenAI-compatible server on loopback (another `llmkit serve`), never a
mock of the wire format. The front one renders and tokenizes; the engine server only generates.
At temperature 0 both must give the same text, which they can only do when the prompt arrives
token for token.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmkit.server.launch import free_loopback_port, serve_in_subprocess
from tests.e2e.conftest import Server, metrics
from tests.helpers.cli import run_cli

openai = pytest.importorskip("openai")
ollama = pytest.importorskip("ollama")

ENGINE_KEY = "engine-key-456"
FRONT_KEY = "front-key-789"
QUESTION = [{"role": "user", "content": "Name three colours, one per line."}]


@pytest.fixture(scope="module")
def engine_server(
    builtin_model_path: Path, session_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    args = ["smollm2", "--api-key", ENGINE_KEY, "--context", "1024", "--threads", "1"]
    yield from _launch(args, tmp_path_factory.mktemp("engine") / "engine.log", session_home, {})


@pytest.fixture(scope="module")
def front(
    engine_server: Server, session_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    args = ["smollm2", "--engine-url", engine_server.url + "/v1", "--api-key", FRONT_KEY]
    args += ["--threads", "1"]
    log = tmp_path_factory.mktemp("front") / "front.log"
    yield from _launch(args, log, session_home, {"LLMKIT_ENGINE_API_KEY": ENGINE_KEY})


def _launch(args: list[str], log: Path, home: Path, env: dict[str, str]) -> Iterator[Server]:
    key = args[args.index("--api-key") + 1]
    try:
        launched = serve_in_subprocess(args, log, env={"LLMKIT_HOME": str(home), **env}, timeout=90)
        with launched as running:
            yield Server(running.url, key, log)
    except RuntimeError as error:
        pytest.fail(str(error))


def _openai(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=server.api_key, timeout=120)


def _ask(server: Server, **extra) -> openai.types.chat.ChatCompletion:
    return _openai(server).chat.completions.create(
        model="smollm2", messages=QUESTION, max_tokens=24, temperature=0, **extra
    )


def test_the_front_says_where_it_generates(front: Server, engine_server: Server) -> None:
    assert f"(llmkit at {engine_server.url})" in front.log.read_text()


def test_chat_through_the_front_equals_the_engine_server(front: Server, engine_server: Server):
    through = _ask(front)
    direct = _ask(engine_server)
    assert through.choices[0].message.content == direct.choices[0].message.content
    assert through.choices[0].message.content
    assert through.choices[0].finish_reason == direct.choices[0].finish_reason
    assert through.usage.prompt_tokens == direct.usage.prompt_tokens
    assert through.usage.completion_tokens == direct.usage.completion_tokens


def test_stream_gives_the_same_text(front: Server) -> None:
    whole = _ask(front).choices[0].message.content
    stream = _openai(front).chat.completions.create(
        model="smollm2", messages=QUESTION, max_tokens=24, temperature=0, stream=True
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 3
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_stop_sequence_ends_the_reply_before_it(front: Server) -> None:
    whole = _ask(front).choices[0].message.content
    stop = whole.split()[1]  # the second word: mid-reply, so the stop must cut it short
    reply = _ask(front, stop=[stop]).choices[0]
    assert reply.finish_reason == "stop"
    assert reply.message.content == whole[: whole.index(stop)]


def test_what_cannot_be_forwarded_is_refused_in_one_sentence(front: Server) -> None:
    client = _openai(front)
    schema = {"type": "object", "properties": {"colour": {"type": "string"}}}
    with pytest.raises(openai.BadRequestError, match="takes no JSON schema"):
        _ask(front, response_format={"type": "json_schema", "json_schema": {"schema": schema}})
    with pytest.raises(openai.BadRequestError, match="Log-probabilities are not forwarded"):
        _ask(front, logprobs=True)
    tool = {
        "type": "function",
        "function": {"name": "paint", "parameters": {"type": "object", "properties": {}}},
    }
    with pytest.raises(openai.BadRequestError, match="tool_choice 'auto'"):
        client.chat.completions.create(
            model="smollm2", messages=QUESTION, tools=[tool], tool_choice="required"
        )


def test_ollama_client_through_the_front(front: Server) -> None:
    client = ollama.Client(host=front.url, headers=front.headers, timeout=120)
    options = {"num_predict": 12, "temperature": 0}
    reply = client.chat(model="smollm2", messages=QUESTION, options=options)
    assert reply.done and reply.message.content and reply.eval_count <= 12
    pieces = list(client.chat(model="smollm2", messages=QUESTION, options=options, stream=True))
    assert "".join(piece.message.content for piece in pieces) == reply.message.content
    raw = client.generate(model="smollm2", prompt="The sky is", raw=True, options=options)
    assert raw.response


def test_a_client_that_leaves_frees_the_engine_server(front: Server, engine_server: Server):
    stream = _openai(front).chat.completions.create(
        model="smollm2", messages=QUESTION, max_tokens=500, temperature=0, stream=True
    )
    for _ in zip(range(3), stream):
        pass
    stream.close()
    deadline = time.monotonic() + 20
    while metrics(engine_server)['llmkit_slots_busy{model="smollm2"}'] != 0:
        assert time.monotonic() < deadline, "the engine server still generates for nobody"
        time.sleep(0.2)
    finished = metrics(engine_server)
    assert finished['llmkit_generation_finished_total{model="smollm2",reason="cancelled"}'] >= 1


def test_an_engine_server_that_does_not_answer_is_one_sentence(session_home: Path) -> None:
    url = f"http://127.0.0.1:{free_loopback_port()}"
    port = str(free_loopback_port())
    result = run_cli("serve", "smollm2", "--engine-url", url, "--port", port, timeout=60)
    assert result.returncode != 0
    assert f"The engine server at {url} cannot be reached" in result.stderr
    assert "Traceback" not in result.stderr


def test_engine_vllm_without_vllm_says_so(session_home: Path) -> None:
    pytest.importorskip("fastapi")
    try:
        import vllm  # noqa: F401

        pytest.skip("vLLM is installed here; tests/e2e/test_vllm_engine.py covers it")
    except ImportError:
        pass
    port = str(free_loopback_port())
    result = run_cli("serve", "smollm2", "--engine", "vllm", "--port", port, timeout=60)
    assert result.returncode != 0
    assert "--engine vllm needs vLLM, which is not installed here" in result.stderr
    assert "Traceback" not in result.stderr
