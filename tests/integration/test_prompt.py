"""What the built-in model sees: the prompt view, BOS handling, the fallback template, and the CLI."""

from __future__ import annotations

import dataclasses
import json

import pytest
from rich.console import Console
from tests.helpers.cli import run_cli

import llmkit.model
from llmkit.chat.checker import check_template, load_subject
from llmkit.chat.inspect import build_prompt_view
from llmkit.cli.prompt import print_prompt_view

POETRY = [{"role": "user", "content": "Write me some poetry please."}]
SMOLLM_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


@pytest.fixture(scope="module")
def model():
    loaded = llmkit.model.load("smollm2")
    yield loaded
    loaded.close()


def test_view_matches_what_generation_feeds(model) -> None:
    view = build_prompt_view(model, POETRY)
    assert view.text == (
        f"<|im_start|>system\n{SMOLLM_SYSTEM}<|im_end|>\n"
        "<|im_start|>user\nWrite me some poetry please.<|im_end|>\n<|im_start|>assistant\n"
    )
    assert [token.id for token in view.tokens] == model.prompt_ids(POETRY)
    special = {token.piece for token in view.tokens if token.special}
    assert special == {"<|im_start|>", "<|im_end|>"}
    assert view.end_of_turn == "<|im_end|>" and view.stop_tokens == [("<|im_end|>", 2)]
    assert [piece for piece, is_special in view.segments() if is_special][:2] == [
        "<|im_start|>",
        "<|im_end|>",
    ]


def test_bos_handling_is_explicit(model) -> None:
    bos = build_prompt_view(model, POETRY).bos
    # SmolLM2's BOS is <|im_start|>: the template writes it as the first turn's opening token.
    assert (bos.token, bos.id, bos.written_by_template, bos.tokenizer_adds) == (
        "<|im_start|>",
        1,
        True,
        False,
    )
    assert bos.added_by == "template" and bos.in_prompt == 1


def test_printed_view(model) -> None:
    console = Console(record=True, width=120, color_system=None)
    print_prompt_view(
        console, model, POETRY, tokens=True, tools=[{"type": "function", "function": {"name": "f"}}]
    )
    shown = console.export_text()
    assert "the model's own chat template" in shown
    assert "Write me some poetry please.<|im_end|>↵" in shown
    assert '"<|im_start|>"  special' in shown
    assert "BOS: The template writes <|im_start|>" in shown
    assert "does not render them" in shown  # SmolLM2's template has no tool support


def test_fallback_template_is_announced(model) -> None:
    info = dataclasses.replace(model.manifest.info, chat_template=None)
    bare = llmkit.model.Model(
        dataclasses.replace(model.manifest, name="bare", info=info), model.engine
    )
    view = build_prompt_view(bare, POETRY)
    assert bare.template.source == "builtin:chatml"
    assert (
        "no chat template, so one was chosen from its special tokens" in view.template_description
    )
    assert (
        view.text
        == "<|im_start|>user\nWrite me some poetry please.<|im_end|>\n<|im_start|>assistant\n"
    )
    assert view.end_of_turn == "<|im_end|>"


def test_a_template_that_does_not_fit_is_flagged(model) -> None:
    info = dataclasses.replace(model.manifest.info, chat_template=None)
    manifest = dataclasses.replace(model.manifest, name="misfit", info=info)
    misfit = llmkit.model.Model(manifest, model.engine, template="llama3")
    view = build_prompt_view(misfit, POETRY)
    assert view.end_of_turn is None
    assert any("may not fit this model" in warning for warning in view.warnings)
    # Llama 3's header tokens are not special tokens of SmolLM2: they are split into plain text.
    assert not any(token.special and "header" in token.piece for token in view.tokens)


def test_builtin_model_passes_the_checker() -> None:
    report = check_template(load_subject("smollm2"))
    assert report.ok and [f.check for f in report.findings] == ["tools"]


def test_cli_prompt_json() -> None:
    result = run_cli("prompt", "smollm2", "-m", "user:Write me some poetry please.", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["text"].endswith("<|im_start|>assistant\n")
    assert data["token_count"] == len(data["tokens"]) and data["tokens"][0] == {
        "id": 1,
        "piece": "<|im_start|>",
        "special": True,
    }
    assert data["bos"]["added_by"] == "template"


def test_cli_prompt_takes_a_user_message_as_run_does() -> None:
    """`llmkit prompt MODEL "text"` is the user message `llmkit run MODEL "text"` sends, after
    any -m messages."""
    positional = run_cli("prompt", "smollm2", "Hi there", "--plain")
    flagged = run_cli("prompt", "smollm2", "-m", "user:Hi there", "--plain")
    assert positional.returncode == 0, positional.stderr
    assert positional.stdout == flagged.stdout and "user\nHi there<|im_end|>" in flagged.stdout
    both = run_cli("prompt", "smollm2", "-m", "user:One", "-m", "assistant:Two", "Three", "--plain")
    assert both.returncode == 0, both.stderr
    text = both.stdout
    assert text.index("One") < text.index("Two") < text.index("Three")


def test_cli_template_show_and_check() -> None:
    shown = run_cli("template", "smollm2")
    assert shown.returncode == 0 and shown.stdout.startswith("{% for message in messages %}")
    assert "the model's own chat template" in shown.stderr
    checked = run_cli("template", "check", "smollm2")
    assert checked.returncode == 0 and "0 error(s)" in checked.stdout
