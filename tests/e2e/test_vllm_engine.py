"""`llmkit serve MODEL --engine vllm` against real vLLM: runs only where vLLM is installed (a GPU node).

vLLM has no official CPU wheel, so CI never runs this. On a GPU node (commands also in
docs/scaling.md):

    pip install -e '.[serve,torch,dev]' vllm
    huggingface-cli download HuggingFaceTB/SmolLM2-135M-Instruct --local-dir /tmp/smollm2-hf
    llmkit import /tmp/smollm2-hf --name smollm2-hf
    LLMKIT_VLLM_MODEL=smollm2-hf python -m pytest -m vllm tests/e2e/test_vllm_engine.py -v

LLMKIT_VLLM_MODEL names a Hugging Face folder in the store (vLLM serves no GGUF here);
LLMKIT_VLLM_TP sets --tensor-parallel (default 1).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

try:
    import vllm  # noqa: F401
except ImportError as error:
    pytest.skip(
        f"vLLM is not installed ({error}); this test runs on a GPU node with `pip install vllm`.",
        allow_module_level=True,
    )

from llmkit.server.launch import serve_in_subprocess
from tests.e2e.conftest import Server

pytestmark = pytest.mark.vllm
openai = pytest.importorskip("openai")
ollama = pytest.importorskip("ollama")
jsonschema = pytest.importorskip("jsonschema")

MODEL = os.environ.get("LLMKIT_VLLM_MODEL", "smollm2-hf")
QUESTION = [{"role": "user", "content": "Name three colours, one per line."}]


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    args = [MODEL, "--engine", "vllm", "--api-key", "k", "--context", "2048"]
    args += ["--tensor-parallel", os.environ.get("LLMKIT_VLLM_TP", "1")]
    log = tmp_path_factory.mktemp("vllm") / "front.log"
    try:
        # vLLM loads, profiles and captures CUDA graphs before it answers: minutes, not seconds.
        with serve_in_subprocess(args, log, timeout=1800) as running:
            yield Server(running.url, "k", log)
    except RuntimeError as error:
        pytest.fail(str(error))


def _client(front: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=front.url + "/v1", api_key="k", timeout=300)


def test_chat_stream_and_stop(front: Server) -> None:
    client = _client(front)
    ask = {"model": MODEL, "messages": QUESTION, "max_tokens": 24, "temperature": 0}
    whole = client.chat.completions.create(**ask).choices[0].message.content
    assert whole
    stream = client.chat.completions.create(**ask, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == whole
    stop = whole.split()[1]
    cut = client.chat.completions.create(**ask, stop=[stop]).choices[0]
    assert cut.finish_reason == "stop" and cut.message.content == whole[: whole.index(stop)]


def test_json_schema_is_forwarded(front: Server) -> None:
    schema = {
        "type": "object",
        "properties": {"colour": {"type": "string", "maxLength": 20}},
        "required": ["colour"],
        "additionalProperties": False,
    }
    reply = _client(front).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Give a colour as JSON."}],
        max_tokens=40,
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}},
    )
    jsonschema.validate(json.loads(reply.choices[0].message.content), schema)


def test_ollama_client(front: Server) -> None:
    client = ollama.Client(host=front.url, headers=front.headers, timeout=300)
    reply = client.chat(model=MODEL, messages=QUESTION, options={"num_predict": 12})
    assert reply.done and reply.message.content


def test_log_names_vllm(front: Server) -> None:
    assert "(vllm at http://127.0.0.1:" in Path(front.log).read_text()
