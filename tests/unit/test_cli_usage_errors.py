"""Mistyped command lines through the real CLI: one plain line each, said before any work.

A click usage error reads like every other llmkit error (`Error: ...`, then where the options
are explained), never a box; an id or index that cannot exist is refused with a true sentence.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tests.helpers.cli import run_cli

from llmkit.store.history import Exchange, History


@pytest.mark.parametrize(
    ("args", "first_line"),
    [
        (["run", "--no-such-flag"], "Error: No such option: --no-such-flag"),
        (["logs", "--count", "many"], "Error: Invalid value for '--count' / '-n'"),
        (["serve", "--port"], "Error: Option '--port' requires an argument."),
        (["no-such-verb"], "Error: No such command 'no-such-verb'."),
    ],
)
def test_a_usage_error_is_one_plain_line_and_a_pointer_to_help(
    args: list[str], first_line: str
) -> None:
    result = run_cli(*args)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith(first_line), result.stderr
    verb = " ".join(arg for arg in args[:1] if arg != "no-such-verb")
    assert lines[1] == f"Try '{' '.join(['python -m llmkit', verb]).strip()} --help'."
    assert not any(mark in result.stderr for mark in "╭│╰─")


def test_a_bare_verb_still_shows_its_help() -> None:
    result = run_cli("quantize")
    assert "Usage:" in result.stdout + result.stderr and "--to" in result.stdout + result.stderr


def _logged(home: Path, count: int) -> list[int]:
    history = History(home)
    for index in range(count):
        history.add(Exchange("c", "run", "m", f"prompt {index}", "answer"))
    return [exchange.id or 0 for exchange in history.recent(limit=count)]


def test_logs_rm_refuses_ids_that_cannot_exist_and_counts_truly(fresh_home: Path) -> None:
    ids = sorted(_logged(fresh_home, 3))
    negative = run_cli("logs", "rm", "-3")
    assert negative.returncode == 2 and "Traceback" not in negative.stderr
    assert negative.stderr.startswith("Error: -3 is not an exchange id"), negative.stderr
    assert "Deleted" not in negative.stdout
    after_dashes = run_cli("logs", "rm", "--", "-3")
    assert after_dashes.stderr == negative.stderr
    shown = run_cli("logs", "show", "-3")
    assert shown.returncode == 2 and shown.stderr == negative.stderr
    unknown = run_cli("logs", "rm", "999")
    assert unknown.returncode == 2
    assert unknown.stderr == "Error: There is no logged exchange 999; see `llmkit logs`.\n"
    some = run_cli("logs", "rm", str(ids[0]), "999")
    assert some.returncode == 0, some.stderr
    assert some.stdout == "Deleted 1 exchange (there is no logged exchange 999).\n"
    nothing = run_cli("logs", "rm")
    assert nothing.returncode == 2 and nothing.stderr.startswith("Error: Name the ids")
    assert len(History(fresh_home).recent(limit=10)) == 2


def test_attention_refuses_a_layer_the_model_lacks_before_loading_it(
    tiny_gguf: Path, tmp_path: Path
) -> None:
    # transformers cannot be imported here, so loading the model would fail with another
    # sentence: the one below can only come from the check made before loading.
    blocked = tmp_path / "blocked" / "transformers"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('blocked for this test')\n")
    path = os.pathsep.join(filter(None, [str(blocked.parent), os.environ.get("PYTHONPATH")]))
    env = {"PYTHONPATH": path}
    layer = run_cli("attention", str(tiny_gguf), "the cat", "--layer", "99", env=env)
    assert layer.returncode == 2, layer.stderr
    assert layer.stderr.startswith("Error: --layer must be between 0 and 1, or -1 for the last")
    head = run_cli("attention", str(tiny_gguf), "the cat", "--head", "4", env=env)
    assert head.returncode == 2 and "the model has 4 attention heads" in head.stderr
    assert "needs the 'torch' extra" in run_cli("attention", str(tiny_gguf), "x", env=env).stderr
