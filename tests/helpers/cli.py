"""Run the real `llmkit` command in a subprocess, the way a user does."""

from __future__ import annotations

import os
import subprocess
import sys


def run_cli(
    *args: str, input: str | None = None, timeout: float = 120, env: dict | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "llmkit", *args],
        input=input,
        # Without input, stdin is empty (as at a terminal), never this process's own: `run` reads
        # piped text, and an inherited pipe that stays open would keep it waiting.
        stdin=subprocess.DEVNULL if input is None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )
