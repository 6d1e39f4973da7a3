"""`llmkit serve` with no model list: the whole store, loaded on demand, through official clients.

One server on a fresh store with a memory budget that holds the built-in model or the tiny test
model but not both, `--log`, and a local hub to pull from. The tests run in order: pull, load,
evict, expire, unload, `llmkit ps` / `llmkit stop`, the history, delete.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.e2e.conftest import Server
from tests.helpers.fake_hub import HubServer

ollama = pytest.importorskip("ollama")
openai = pytest.importorskip("openai")

KEY = "on-demand-key"
HUB_MODEL = "hf.co/owner/tiny"


@dataclass
class OnDemand:
    url: str
    home: Path
    sizes: dict[str, int]
    log: Path

    @property
    def port(self) -> str:
        return self.url.rsplit(":", 1)[1]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "LLMKIT_HOME": str(self.home), "LLMKIT_API_KEY": KEY}
        return subprocess.run(
            [sys.executable, "-m", "llmkit", *args], capture_output=True, text=True, env=env,
            timeout=180,
        )  # fmt: skip


@pytest.fixture(scope="module")
def on_demand(
    builtin_model_path: Path, tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OnDemand]:
    from llmkit.server.launch import serve_in_subprocess
    from llmkit.server.state import ServerSettings, model_memory

    # The planner's estimates with the server's settings: the budget holds either model alone.
    settings = ServerSettings(parallel=1, context_length=256)
    files = {"smollm2": builtin_model_path, "tiny-llama": tiny_gguf}
    sizes = {
        name: model_memory(SimpleNamespace(path=str(path), size_bytes=0), settings)
        for name, path in files.items()
    }
    budget = max(sizes.values()) + min(sizes.values()) // 2
    home = tmp_path_factory.mktemp("on-demand-home")
    log = home / "server.log"
    args = ["--api-key", KEY, "--parallel", "1", "--context", "256", "--threads", "2"]
    args += ["--memory-budget", str(budget), "--log"]
    with HubServer({"owner/tiny/tiny-llama.gguf": tiny_gguf}) as hub:
        env = {"LLMKIT_HOME": str(home), "HF_ENDPOINT": hub.endpoint}
        try:
            with serve_in_subprocess(args, log, env=env, timeout=90) as running:
                yield OnDemand(running.url, home, sizes, log)
        except RuntimeError as error:
            pytest.fail(str(error))


@pytest.fixture(scope="module")
def client(on_demand: OnDemand) -> ollama.Client:
    return ollama.Client(
        host=on_demand.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=120
    )


def loaded(client: ollama.Client) -> list[str]:
    return [model.model for model in client.ps().models]


def wait_until_unloaded(client: ollama.Client, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while loaded(client):
        assert time.monotonic() < deadline, f"still loaded: {loaded(client)}"
        time.sleep(0.1)


def test_pull_streams_progress_and_refuses_unknown_names(client) -> None:
    assert loaded(client) == []
    parts = list(client.pull("smollm2", stream=True))
    assert parts[0].status == "pulling manifest" and parts[-1].status == "success"
    progress = [part for part in parts if part.total]
    assert progress and progress[-1].completed == progress[-1].total
    assert progress[-1].digest and progress[-1].digest.startswith("sha256:")
    assert client.pull(HUB_MODEL).status == "success"  # from the local hub, not streamed
    for missing in ("no-such-model", "hf.co/owner/tiny:Q8_0", "hf.co/owner/absent"):
        with pytest.raises(ollama.ResponseError) as refused:
            client.pull(missing)
        assert refused.value.status_code == 404
    names = {model.model for model in client.list().models}
    assert {"smollm2", "tiny-llama"} <= names
    assert loaded(client) == []  # listing or pulling loads nothing


def test_a_request_loads_its_model_and_ps_shows_memory_and_expiry(client, on_demand) -> None:
    reply = client.generate(model="smollm2", prompt="Say hi.", options={"num_predict": 3})
    assert reply.done
    [model] = client.ps().models
    assert model.model == "smollm2" and model.size == on_demand.sizes["smollm2"]
    left = model.expires_at - datetime.now(timezone.utc)
    assert timedelta(minutes=4) < left <= timedelta(minutes=5)


def test_the_least_recently_used_model_makes_room(client) -> None:
    reply = client.chat(
        model="tiny-llama:latest",
        messages=[{"role": "user", "content": "hello"}],
        options={"num_predict": 2},
    )
    assert reply.done
    assert loaded(client) == ["tiny-llama"]  # the budget holds one: smollm2 was unloaded


def test_keep_alive_per_request_in_ollama_and_openai_requests(client, on_demand) -> None:
    client.generate(model="smollm2", prompt="Hi", keep_alive="30s", options={"num_predict": 2})
    [model] = client.ps().models
    assert (
        timedelta(seconds=20)
        < model.expires_at - datetime.now(timezone.utc)
        <= timedelta(seconds=30)
    )
    openai_client = openai.OpenAI(base_url=f"{on_demand.url}/v1", api_key=KEY)
    openai_client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=2,
        extra_body={"keep_alive": 0},
    )
    wait_until_unloaded(client)  # 0: unloaded as soon as the request was done
    with pytest.raises(ollama.ResponseError) as refused:
        client.generate(model="smollm2", prompt="Hi", keep_alive="soon")
    assert refused.value.status_code == 400 and "keep_alive" in str(refused.value)


def test_an_empty_generate_loads_and_keep_alive_zero_unloads(client) -> None:
    assert client.generate(model="smollm2").done_reason == "load"
    assert loaded(client) == ["smollm2"]
    assert client.generate(model="smollm2", keep_alive=0).done_reason == "unload"
    assert loaded(client) == []


def test_ps_and_stop_commands(client, on_demand) -> None:
    client.generate(model="smollm2", keep_alive=-1)
    shown = on_demand.cli("ps", "--port", on_demand.port)
    assert shown.returncode == 0, shown.stderr
    assert "smollm2" in shown.stdout and "forever" in shown.stdout and "MB" in shown.stdout
    stopped = on_demand.cli("stop", "smollm2", "--port", on_demand.port)
    assert stopped.returncode == 0 and "Unloaded smollm2" in stopped.stdout
    assert loaded(client) == []
    again = on_demand.cli("stop", "smollm2", "--port", on_demand.port)
    assert again.returncode == 1 and "'smollm2' is not loaded" in again.stderr
    from llmkit.server.launch import free_loopback_port

    nobody = on_demand.cli("ps", "--port", str(free_loopback_port()))
    assert nobody.returncode == 1 and "No llmkit server answers" in nobody.stderr
    assert "Traceback" not in nobody.stderr


def test_with_log_every_exchange_is_in_the_history(client, on_demand) -> None:
    client.chat(
        model="smollm2",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Name a planet."},
        ],
        options={"num_predict": 4},
    )
    from llmkit.store.history import History

    deadline = time.monotonic() + 10  # rows are written by a background thread
    while True:
        rows = [e for e in History(on_demand.home).recent() if e.prompt == "Name a planet."]
        if rows or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    [row] = rows
    assert row.kind == "serve" and row.model == "smollm2" and row.system == "Be brief."
    assert row.completion_tokens and row.answer
    assert "Name a planet." in on_demand.cli("logs").stdout  # what `llmkit logs` lists


def test_delete_unloads_a_loaded_model(client, on_demand) -> None:
    client.generate(model="tiny-llama")
    assert "tiny-llama" in loaded(client)
    client.delete("tiny-llama")
    assert "tiny-llama" not in loaded(client)
    assert "tiny-llama" not in {model.model for model in client.list().models}


def test_without_log_the_server_keeps_no_history(server: Server, session_home: Path) -> None:
    from llmkit.store.history import History

    with server.client() as http:
        http.post(
            "/api/generate",
            json={"model": "smollm2", "prompt": "Unlogged?", "stream": False,
                  "options": {"num_predict": 2}},
        ).raise_for_status()  # fmt: skip
    assert not [e for e in History(session_home).recent(limit=100) if e.kind == "serve"]
