"""What `run`, `chat` and `template` print, through the real CLI and the built-in model: piped text
combined with the prompt, would-be stops in --json, exact piped templates, and the chat terminal."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
from tests.helpers.cli import run_cli

import llmkit


def _run_json(*args: str, input: str | None = None) -> dict:
    result = run_cli("run", "smollm2", *args, "-t", "0", "--json", input=input)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_piped_text_is_read_with_the_prompt(builtin_model_path) -> None:
    alone = _run_json("Summarise in one line.", "-n", "2")
    combined = _run_json(
        "Summarise in one line.", "-n", "2", input="The meeting moved to Friday at noon.\n"
    )
    assert combined["usage"]["prompt_tokens"] > alone["usage"]["prompt_tokens"] + 5


def test_json_marks_where_ignore_eos_passed_a_stop(builtin_model_path) -> None:
    args = ("Say hi.", "--ignore-eos", "-n", "60")
    data = _run_json(*args)
    marks = data["would_stop_at"]
    assert marks and all(mark["token"] == "<|im_end|>" for mark in marks)
    text = run_cli("run", "smollm2", *args, "-t", "0").stdout
    # The same places text mode marks, at the same offsets of the same answer.
    marked, last = "", 0
    for mark in marks:
        marked += data["text"][last : mark["offset"]] + f"⟨would stop: {mark['token']}⟩"
        last = mark["offset"]
    assert text == marked + data["text"][last:] + "\n"
    assert _run_json("Say hi.", "-n", "5")["would_stop_at"] == []


def test_piped_templates_are_exact(builtin_model_path, tmp_path: Path) -> None:
    with llmkit.load("smollm2") as model:
        assert model.template is not None
        expected = model.template.text
    for args in (("template", "smollm2"), ("show", "smollm2", "--template")):
        result = run_cli(*args)
        assert result.returncode == 0, result.stderr
        assert result.stdout == expected, args
    # Tabs and lines far past 80 columns come through unchanged.
    text = "{% for m in messages %}\t" + "{{ m['content'] }} " * 30 + "{% endfor %}"
    path = tmp_path / "wide.jinja"
    path.write_text(text)
    assert run_cli("template", "show", str(path)).stdout == text


def test_an_empty_template_is_an_error(builtin_model_path, tmp_path: Path) -> None:
    path = tmp_path / "empty.jinja"
    path.write_text("\n")
    for args in (
        ("prompt", "smollm2", "-m", "user:hi", "--template", str(path)),
        ("template", "check", str(path)),
        ("run", "smollm2", "hi", "--template", str(path)),
    ):
        result = run_cli(*args)
        assert result.returncode != 0, args
        assert "is empty" in result.stderr and "Traceback" not in result.stderr


pexpect = pytest.importorskip("pexpect")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.mark.slow
def test_chat_in_a_narrow_terminal(builtin_model_path) -> None:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "llmkit", "chat", "smollm2", "-t", "0", "--context", "2048", "-n", "80"],
        # rich takes a "dumb" terminal to be 80 columns wide, whatever its size.
        env={**os.environ, "COLUMNS": "40", "TERM": "xterm", "NO_COLOR": "1"},
        encoding="utf-8",
        timeout=90,
        dimensions=(24, 40),
    )
    try:
        child.expect(">>> ")
        child.sendline('"""Tell me a story')
        child.expect_exact("... ")
        child.sendline('about a lighthouse keeper."""')
        child.expect_exact('keeper."""')  # the terminal's echo
        child.expect(r"\w+ \w+ \w+ \w+")  # the answer is streaming
        child.send("TYPEDAHEAD")  # typed during the answer
        child.expect(">>> ")
        answer = ANSI.sub("", child.before)
        assert "TYPEDAHEAD" not in answer
        lines = [line for line in answer.split("\r\n") if line.strip()]
        assert len(lines) > 1 and all(len(line) <= 40 for line in lines)
        child.sendline("/set temperature 0.5")
        child.expect_exact("temperature = 0.5")  # (inside one styled run)
        child.expect(">>> ")
        child.sendline("/history")
        child.expect(">>> ")
        history = ANSI.sub("", child.before)
        assert "1. user: Tell me a story\r\nabout a lighthouse keeper.\r\n" in history
        assert "2. assistant:" in history
        assert "TYPEDAHEAD" not in history  # nor kept for the next message
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
