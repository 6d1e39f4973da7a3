"""User text prints as typed: never read as rich markup or emoji codes, never wrapped when piped."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import pytest
from rich.console import Console
from rich.table import Table
from tests.helpers.cli import run_cli

from llmkit.cli import output

MARKUP = "[red]x[/red]:smile:"
EMOJI = ("😄", "🅱")  # what rich makes of :smile: and :b:

# Each command's error path, fed a name that rich would style or turn into an emoji, and the
# text the message must hold as typed.
ERROR_PATHS = {
    "show": (["show", MARKUP], MARKUP),
    "show-tag": (["show", "a:b:c"], "a:b:c"),
    "run": (["run", MARKUP, "hi"], MARKUP),
    "chat": (["chat", MARKUP], MARKUP),
    "prompt": (["prompt", MARKUP, "-m", "user:hi"], MARKUP),
    "template-show": (["template", "show", MARKUP], MARKUP),
    "template-check": (["template", "check", MARKUP], MARKUP),
    "plan": (["plan", MARKUP], MARKUP),
    "bench": (["bench", MARKUP, "--repetitions", "1"], MARKUP),
    "pull": (["pull", MARKUP], MARKUP),
    "rm": (["rm", MARKUP], MARKUP),
    "import": (["import", "/nonexistent/model.gguf", "--name", "a:b:c"], "a:b:c"),
    "serve": (["serve", MARKUP, "--port", "FREE_PORT"], MARKUP),
    "finetune": (["finetune", MARKUP, "--data", "/nonexistent/d.jsonl", "--out", "ok"], MARKUP),
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(("args", "typed"), ERROR_PATHS.values(), ids=ERROR_PATHS.keys())
def test_error_messages_print_user_text_as_typed(
    args: list[str], typed: str, fresh_home: Path
) -> None:
    args = [str(_free_port()) if arg == "FREE_PORT" else arg for arg in args]
    result = run_cli(*args, env={"LLMKIT_HOME": str(fresh_home)})
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    assert message.startswith("Error:"), result.stderr
    assert typed in message, result.stderr
    assert not any(emoji in result.stderr + result.stdout for emoji in EMOJI)


def _capture(monkeypatch: pytest.MonkeyPatch, *, terminal: bool, width: int = 40) -> io.StringIO:
    buffer = io.StringIO()
    for name, stderr in (("console", False), ("error_console", True)):
        console = Console(
            file=buffer,
            width=width,
            force_terminal=terminal,
            color_system=None,
            highlight=False,
            emoji=False,
            soft_wrap=not terminal,
            stderr=stderr,
        )
        monkeypatch.setattr(output, name, console)
    return buffer


def test_say_styles_the_message_but_not_its_values(monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = _capture(monkeypatch, terminal=False)
    output.say("Removed [bold]{}[/] from {}.", MARKUP, "a:b:c")
    output.print_error(ValueError(f"Unknown model '{MARKUP}'"))
    assert buffer.getvalue() == (f"Removed {MARKUP} from a:b:c.\nError: Unknown model '{MARKUP}'\n")


def test_escape_survives_a_trailing_backslash() -> None:
    console = Console(file=io.StringIO(), emoji=False)
    console.print(f"[bold]{output.escape('C:' + chr(92))}[/] {output.escape('[x]')}")
    assert console.file.getvalue() == "C:\\ [x]\n"  # type: ignore[attr-defined]


def _models_table(name: str) -> Table:
    table = Table("NAME", "ARCHITECTURE", "SIZE", "SOURCE", box=None)
    table.add_row(name, "llama", "145.0 MB", "finetune:/home/user/a/long/path/to/the/run")
    table.add_row("b", "llama", "1 MB", "x")
    return table


@pytest.mark.parametrize("terminal", [False, True], ids=["piped", "terminal"])
def test_a_table_never_cuts_the_first_column(
    monkeypatch: pytest.MonkeyPatch, terminal: bool
) -> None:
    buffer = _capture(monkeypatch, terminal=terminal, width=40)
    name = "quill-test-finetuned-with-a-rather-long-name-hf"  # longer than the 40 columns
    output.print_table(_models_table(name))
    lines = buffer.getvalue().splitlines()
    assert any(line.split()[0] == name for line in lines if line.strip())
    if not terminal:  # piped: the natural width, nothing cut or wrapped anywhere
        assert "…" not in buffer.getvalue() and len(lines) == 3
        assert lines[1].split() == [
            name,
            "llama",
            "145.0",
            "MB",
            "finetune:/home/user/a/long/path/to/the/run",
        ]


def test_template_show_piped_is_byte_exact(tmp_path: Path) -> None:
    long_line = "{{ bos_token }}" + "{% for m in messages %}{{ m['content'] }}{% endfor %}" * 8
    template = tmp_path / "long.jinja"
    template.write_text(long_line + "\n[red]x[/red]:smile:\n")
    result = run_cli("template", "show", str(template), env={"COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == template.read_text()


def test_a_piped_plan_is_not_wrapped() -> None:
    # Piped at 80 columns, rich would fold the formula column; each row must stay one line.
    result = run_cli("plan", "llama-3.2-1b", "--task", "lora", "--explain", env={"COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.lstrip().startswith("activations")]
    assert len(rows) == 1 and rows[0].rstrip().endswith("saved per token and layer")
    assert "…" not in result.stdout
