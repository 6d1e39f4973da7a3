"""Every `llmkit ...` command that plan and doctor print for the user runs as printed."""

from __future__ import annotations

import re
import shlex

import pytest
from tests.helpers.cli import run_cli

# Commands are printed in backticks or after "see:" / "see it in full:".
COMMAND = re.compile(r"`(llmkit [^`]+)`|\bsee(?: it in full)?: (llmkit [^\n]+)")
SLIDE = ["llama-3.2-1b", "--task", "full", "--dtype", "fp32", "--batch-size", "32"]
PRINTING = [
    ["plan", *SLIDE, "--seq-len", "128", "--device", "T4"],
    ["plan", *SLIDE, "--device", "cpu:16GB"],
    ["plan", "llama-3.1-70b", "--device", "T4"],
    ["plan", "qwen2.5-7b", "--task", "lora", "--batch-size", "6", "--device", "L4"],
    ["plan"],  # the error names the commands to use instead
    ["doctor"],
]


def printed_commands(output: str) -> list[str]:
    return [(quoted or shown).strip() for quoted, shown in COMMAND.findall(output)]


@pytest.fixture
def home(tmp_path) -> dict[str, str]:
    return {"LLMKIT_HOME": str(tmp_path / "home")}


def test_printed_commands_are_found():
    text = "see it in full: llmkit plan x --device T4\n(see `llmkit plan --list`), e.g. `llmkit plan y`."
    assert printed_commands(text) == [
        "llmkit plan x --device T4",
        "llmkit plan --list",
        "llmkit plan y",
    ]


@pytest.mark.parametrize("args", PRINTING, ids=lambda args: " ".join(args[:2]))
def test_every_printed_command_runs(args, home):
    shown = run_cli(*args, env=home)
    commands = printed_commands(shown.stdout + shown.stderr)
    if args != ["plan", "llama-3.1-70b", "--device", "T4"]:
        assert commands, shown.stdout + shown.stderr
    for command in commands:
        result = run_cli(*shlex.split(command)[1:], env=home)
        assert result.returncode == 0, f"{command}\n{result.stdout}{result.stderr}"
        assert "Traceback" not in result.stderr
