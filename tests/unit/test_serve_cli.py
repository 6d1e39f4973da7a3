"""`llmkit serve` refuses bad options in one sentence before it loads or binds anything."""

from __future__ import annotations

import pytest
from tests.helpers.cli import run_cli

CASES = {
    "engine-unknown": (["--engine", "nonsense"], "Unknown engine 'nonsense'; choose one of: llamacpp, transformers, vllm."),
    "max-body-zero": (["--max-body", "0"], "--max-body must be at least 1 byte (got 0)."),
    "max-body-negative": (["--max-body", "-5"], "--max-body must be at least 1 byte (got -5)."),
    "context-zero": (["--context", "0"], "--context must be at least 16 tokens (got 0)."),
    "threads-zero": (["--threads", "0"], "--threads must be at least 1 thread (got 0)."),
    "parallel-zero": (["--parallel", "0"], "--parallel must be at least 1 slot and at most 64 (got 0)."),
    "parallel-too-many": (["--parallel", "65"], "--parallel must be at least 1 slot and at most 64 (got 65)."),
    "queue-negative": (["--queue", "-1"], "--queue must be at least 0 requests (got -1)."),
}  # fmt: skip


def test_bounds_hold_without_a_model_list_too() -> None:
    # Served on demand, nothing is loaded at start: the check must not wait for a scheduler.
    result = run_cli("serve", "--parallel", "0")
    assert result.returncode == 2 and "Serving" not in result.stderr


@pytest.mark.parametrize(("args", "sentence"), CASES.values(), ids=CASES.keys())
def test_bad_serve_options_are_refused_in_one_sentence(args: list[str], sentence: str) -> None:
    result = run_cli("serve", "smollm2", *args)
    assert result.returncode == 2
    assert result.stderr == f"Error: {sentence}\n"
    assert result.stdout == ""


def test_serve_help_says_when_to_use_each_engine() -> None:
    result = run_cli("serve", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "llamacpp (default)" in text
    assert "transformers: PyTorch" in text


def test_serve_option_defaults_are_the_server_settings_defaults() -> None:
    import inspect

    from llmkit.cli.app import app
    from llmkit.server.state import ServerSettings

    command = next(
        c for c in app.registered_commands if c.callback and c.callback.__name__ == "serve"
    )
    assert command.callback is not None
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(command.callback).parameters.items()
    }
    settings = ServerSettings()
    assert defaults["engine"] == settings.engine == "llamacpp"
    # The other options are ServerSettings' own fields (cli/options.py settings_options).
    assert defaults["max_body_bytes"] == settings.max_body_bytes
    assert defaults["parallel"] == settings.parallel
    assert defaults["max_queue"] == settings.max_queue
    assert defaults["port"] == settings.port
