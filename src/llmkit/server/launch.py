"""Start `llmkit serve` in a subprocess on a free loopback port and wait until it answers.

Used by the end-to-end tests and the serving benchmark, which both need a real server to talk to.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass
class LaunchedServer:
    url: str
    process: subprocess.Popen
    log_path: Path


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serve_in_subprocess(
    args: list[str], log_path: Path, *, env: dict[str, str] | None = None, timeout: float = 120
) -> Iterator[LaunchedServer]:
    """Run `llmkit serve ARGS --port <free>`; yield once /health answers; stop it afterwards."""
    port = free_loopback_port()
    command = [sys.executable, "-m", "llmkit", "serve", *args, "--port", str(port)]
    with run_until_ready(
        command, port, "/health", log_path, name="llmkit serve", env=env, timeout=timeout
    ) as server:
        yield server


@contextmanager
def run_until_ready(
    command: list[str],
    port: int,
    ready_path: str,
    log_path: Path,
    *,
    name: str,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> Iterator[LaunchedServer]:
    """Start any HTTP server process; yield once GET ready_path answers 200; stop it afterwards."""
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while not _answers(url + ready_path):
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {process.returncode}:\n{log_path.read_text()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{name} did not start in {timeout:.0f} s:\n{log_path.read_text()}"
                )
            time.sleep(0.2)
        yield LaunchedServer(url, process, log_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False
