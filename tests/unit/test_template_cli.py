"""`llmkit template` and `llmkit prompt` argument handling, without loading a model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from llmkit.chat.builtin_templates import BUILTINS
from llmkit.cli.prompt import register
from llmkit.errors import InvalidParameterError, ModelNotFoundError

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "data" / "templates"
BROKEN_DIR = TEMPLATES_DIR / "broken"


@pytest.fixture(scope="module")
def invoke():
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """llmkit (just the prompt and template commands)."""

    register(app)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args), env={"COLUMNS": "200"})


def test_names(invoke) -> None:
    for args in (("template", "--names"), ("template", "names")):
        result = invoke(*args)
        assert result.exit_code == 0
        for name, builtin in BUILTINS.items():
            assert name in result.stdout and builtin.markers[0] in result.stdout
    listed = json.loads(invoke("template", "names", "--json").stdout)
    assert [entry["name"] for entry in listed] == list(BUILTINS)


def test_show_prints_the_raw_template(invoke, tmp_path: Path) -> None:
    result = invoke("template", "chatml")
    assert result.exit_code == 0
    assert result.stdout == BUILTINS["chatml"].text  # piped: exactly the template, no newline added
    template = tmp_path / "mine.jinja"
    template.write_text("{{ messages[0]['content'] }}\n")
    assert invoke("template", "show", str(template)).stdout == "{{ messages[0]['content'] }}\n"
    shown = json.loads(invoke("template", "--json", "gemma").stdout)
    assert shown["source"] == "builtin:gemma" and shown["template"] == BUILTINS["gemma"].text


def test_check_exits_non_zero_on_errors(invoke) -> None:
    broken = invoke(
        "template", "check", str(BROKEN_DIR / "no-generation-prompt.jinja"), "--eos", "<|im_end|>"
    )
    assert broken.exit_code == 1
    assert "No generation prompt" in broken.stdout and "Fix:" in broken.stdout
    real = invoke("template", "check", str(TEMPLATES_DIR / "phi-3.5-mini-instruct.json"), "--json")
    assert real.exit_code == 0
    report = json.loads(real.stdout)
    assert report["ok"] and {f["check"] for f in report["findings"]} >= {
        "prefix-stable",
        "stop-token",
    }


def test_check_with_tools_requested(invoke) -> None:
    assert (
        invoke(
            "template", "check", str(TEMPLATES_DIR / "qwen2.5-0.5b-instruct.json"), "--tools"
        ).exit_code
        == 0
    )
    assert (
        invoke("template", "check", str(TEMPLATES_DIR / "gemma-3-1b-it.json"), "--tools").exit_code
        == 1
    )


def test_check_a_file_against_other_tokens(invoke) -> None:
    args = (
        "template",
        "check",
        str(BROKEN_DIR / "doubled-bos.jinja"),
        "--bos",
        "<s>",
        "--eos",
        "<|im_end|>",
    )
    assert "BOS is doubled" in invoke(*args, "--add-bos").stdout
    assert "BOS is doubled" not in invoke(*args, "--no-add-bos").stdout


def test_unknown_target_is_one_clear_error(invoke) -> None:
    result = invoke("template", "check", "no-such-model")
    assert isinstance(result.exception, ModelNotFoundError)
    assert "not a template file (.jinja, .json) or a built-in template name" in str(
        result.exception
    )


def test_prompt_needs_messages_in_role_text_form(invoke) -> None:
    result = invoke("prompt", "smollm2")
    assert isinstance(result.exception, InvalidParameterError)
    assert 'llmkit prompt MODEL "Hello"' in str(result.exception)
    result = invoke("prompt", "smollm2", "-m", "narrator:hello")
    assert isinstance(result.exception, InvalidParameterError)
    assert "ROLE:TEXT" in str(result.exception)
