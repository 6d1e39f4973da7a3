"""`llmkit create` / `cp` with the built-in model: a recipe runs with its settings everywhere."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.cli import run_cli

RECIPE = """FROM smollm2
PARAMETER temperature 0
PARAMETER num_predict 24
SYSTEM You are an astronomer's assistant.
MESSAGE user What is a parsec?
MESSAGE assistant About 3.26 light-years.
"""


def test_a_recipe_carries_its_system_prompt_messages_and_defaults(
    builtin_model_path, tmp_path: Path
) -> None:
    env = {"LLMKIT_HOME": str(tmp_path / "home")}
    recipe = tmp_path / "Modelfile"
    recipe.write_text(RECIPE)
    made = run_cli("create", "astro", "-f", str(recipe), env=env)
    assert made.returncode == 0, made.stderr
    assert "Created astro from smollm2" in made.stdout
    shown = run_cli("prompt", "astro", "-m", "user:How far is Sirius?", "--plain", env=env)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    order = [text.index(part) for part in (
        "You are an astronomer's assistant.", "What is a parsec?", "About 3.26 light-years.",
        "How far is Sirius?",
    )]  # fmt: skip
    assert order == sorted(order)
    answer = run_cli("run", "astro", "How far is Sirius?", "--json", env=env)
    assert answer.returncode == 0, answer.stderr
    assert '"completion_tokens": 24' in answer.stdout or '"finish_reason": "stop"' in answer.stdout
    written = run_cli("show", "astro", "--modelfile", env=env).stdout
    assert written.startswith("FROM smollm2\n") and "MESSAGE assistant About 3.26" in written
    copied = run_cli("cp", "astro", "astro-2", env=env)
    assert copied.returncode == 0 and "Copied astro to astro-2" in copied.stdout
    listed = run_cli("list", env=env).stdout
    assert "astro-2" in listed and "astro" in listed


def test_bad_recipes_are_one_sentence(builtin_model_path, tmp_path: Path) -> None:
    env = {"LLMKIT_HOME": str(tmp_path / "home")}
    missing = run_cli("create", "x", "-f", str(tmp_path / "nowhere"), env=env)
    assert missing.returncode != 0 and "cannot be read" in missing.stderr
    bad = tmp_path / "Bad"
    bad.write_text("FROM smollm2\nTEMPLATE {{ .Prompt }}\n")
    refused = run_cli("create", "x", "-f", str(bad), env=env)
    assert refused.returncode != 0 and "Ollama Go template" in refused.stderr
    assert "Traceback" not in refused.stderr
    unknown = tmp_path / "Unknown"
    unknown.write_text("FROM no-such-model\n")
    nobase = run_cli("create", "x", "-f", str(unknown), env=env)
    assert nobase.returncode != 0 and "no-such-model" in nobase.stderr
