"""A real `llmkit serve` on a free loopback port, shared by every end-to-end test in the session."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

API_KEY = "test-key-123"
PARALLEL, QUEUE, MAX_BODY = 2, 1, 64 * 1024


@dataclass
class Server:
    url: str
    api_key: str
    log: Path

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=60, **kwargs)


@pytest.fixture(scope="session")
def server(
    builtin_model_path: Path, session_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    args = ["smollm2", "--api-key", API_KEY, "--parallel", str(PARALLEL), "--queue", str(QUEUE)]
    args += ["--context", "1024", "--max-body", str(MAX_BODY), "--threads", "2"]
    log = tmp_path_factory.mktemp("server") / "server.log"
    yield from launch_server(args, session_home, log, timeout=90)


def launch_server(args: list[str], home: Path, log: Path, timeout: float) -> Iterator[Server]:
    """`llmkit serve ARGS` in a subprocess for a fixture to yield; a failed start fails the test."""
    from llmkit.server.launch import serve_in_subprocess

    try:
        launched = serve_in_subprocess(args, log, env={"LLMKIT_HOME": str(home)}, timeout=timeout)
        with launched as running:
            yield Server(running.url, API_KEY, log)
    except RuntimeError as error:
        pytest.fail(str(error))


def wait_for_idle(server: Server, timeout: float = 20) -> dict[str, float]:
    """Poll /metrics until no slot is busy and nothing waits; returns the last figures."""
    deadline = time.monotonic() + timeout
    while True:
        figures = metrics(server)
        if (
            figures['llmkit_slots_busy{model="smollm2"}'] == 0
            and figures['llmkit_queue_depth{model="smollm2"}'] == 0
        ):
            return figures
        if time.monotonic() > deadline:
            raise AssertionError(f"slots still busy after {timeout} s: {figures}")
        time.sleep(0.1)


def metrics(server: Server) -> dict[str, float]:
    text = httpx.get(f"{server.url}/metrics", headers=server.headers, timeout=10).text
    figures = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            figures[name] = float(value)
    return figures
